"""Text the tiny model's tokenizer is trained on: the words and syntax of the judging protocol.

The tiny model only ever reads and writes protocol text (task instructions, frame labels,
tool calls, reasoning about what frames show, JSON verdicts), so its byte-level BPE is trained on
a deterministic sample of exactly that. Any byte still encodes, through the byte alphabet.
"""
from __future__ import annotations

import json
import random
from typing import Iterator

from vrt_ray.data.scene import BACKGROUNDS, COLOURS, DIRECTIONS, SHAPES

COLOURS, DIRECTIONS = list(COLOURS), list(DIRECTIONS)
QUALITIES = ["clean", "noisy", "blurred", "blocky"]
FINDINGS = [
    "looks clean", "is noisy", "is blurred", "shows blocking artifacts", "jitters",
    "is frozen", "jumps to a new position", "has the wrong colour", "has the wrong shape",
    "moves the wrong way", "is sharp", "moves smoothly", "matches the prompt",
    "is identical to the previous frame", "breaks the motion",
]
VERDICTS = ["A", "B", "tie"]
DIMENSIONS = ["TA", "VQ", "MQ", "overall"]

INSTRUCTIONS = [
    "You are a video reward model. Compare video A and video B for the prompt on each dimension.",
    "TA (text alignment): does the video show what the prompt asks for?",
    "VQ (visual quality): is every frame clean, sharp and free of noise, blur or blocking?",
    "MQ (motion quality): does the object move smoothly, without jitter, freezes or jumps?",
    "overall: which video is better as a whole.",
    "You see a few frames of each video. Call the select_frames tool to look at more frames.",
    "Only the images of your latest tool results stay in view; older ones are replaced by a note.",
    "Think step by step inside <think> </think>, then give the verdicts inside <answer> </answer>.",
    "Each verdict is A, B or tie.",
    "The tool budget is used up. Give your final answer now.",
    "Error: the tool call is not valid JSON.",
    "Error: unknown tool. The only tool is select_frames.",
    "Error: frame numbers must be between 1 and the number of frames of the video.",
    "Error: at most 8 frames per call.",
    "Error: this exact call was already made.",
    "After selecting frames:",
]


def protocol_corpus(num_samples: int = 3000, seed: int = 0) -> Iterator[str]:
    """Yield `num_samples` protocol-like texts, the same ones for the same seed."""
    rng = random.Random(seed)
    tool_schema = {
        "name": "select_frames",
        "description": "Add frames of one video to the visual memory.",
        "parameters": {"type": "object", "properties": {
            "video": {"type": "string", "enum": ["A", "B"]},
            "target_frames": {"type": "array", "items": {"type": "integer"}}},
            "required": ["video", "target_frames"]},
    }
    yield json.dumps(tool_schema)
    yield from INSTRUCTIONS
    for _ in range(num_samples):
        colour, shape = rng.choice(COLOURS), rng.choice(SHAPES)
        direction, background = rng.choice(DIRECTIONS), rng.choice(BACKGROUNDS)
        video, total = rng.choice("AB"), rng.randint(16, 256)
        frame = rng.randint(1, total)
        frames = sorted(rng.sample(range(1, total + 1), rng.randint(1, 8)))
        call = {"name": "select_frames", "arguments": {"video": video, "target_frames": frames}}
        answer = {d: rng.choice(VERDICTS) for d in DIMENSIONS}
        x, y = rng.randint(0, 111), rng.randint(0, 111)
        step = f"{rng.randint(0, 40)}.{rng.randint(0, 9)}"
        yield rng.choice([
            f"{video} {frame}: {colour} {shape} ({x},{y}) {rng.choice(QUALITIES)}, "
            f"{step} {rng.choice(DIRECTIONS)} since {max(1, frame - 13)}.",
            f"{video}: frame {frame} is {rng.choice(QUALITIES)}; zoom in to confirm. "
            f"Next: scan {video} between the frames seen.",
            f"{video}: from frame {frame} to {frame + 3} it moves {step} px {rng.choice(DIRECTIONS)}; "
            f"frames {frame}-{frame + 2} stay in place where it should move.",
            f"TA: only {video} faulty -> {'B' if video == 'A' else 'A'}. VQ: neither faulty -> tie. "
            f"Overall: A wins {rng.randint(0, 3)}, B wins {rng.randint(0, 3)}, {rng.choice(VERDICTS)}.",
            f"A {colour} {shape} at ({x},{y}) over a {background} background, sharp and clean.",
            f"Prompt: a {colour} {shape} moving {direction} over a {background} background.",
            f"Video {video}, frame {frame} of {total}",
            f"<tool_call>{json.dumps(call)}</tool_call>",
            f"<answer>{json.dumps(answer)}</answer>",
            f"<think>Video {video} frame {frame}: a {colour} {shape} at ({x}, {y}); "
            f"it {rng.choice(FINDINGS)}.</think>",
            f"Frame {frame} of video {video} {rng.choice(FINDINGS)}. "
            f"The {shape} is {colour} and moved {direction}.",
            f"[frames {', '.join(map(str, frames))} of video {video} were shown here]",
            f"A {colour} {shape} on a {background} background, at x={x} y={y}, "
            f"noise level {rng.randint(0, 9)}, blur level {rng.randint(0, 9)}.",
        ])
