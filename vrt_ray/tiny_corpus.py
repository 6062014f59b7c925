"""Text the tiny model's tokenizer is trained on: the words and syntax of the judging protocol.

The tiny model only ever reads and writes protocol text (task instructions, frame labels,
tool calls, reasoning about what frames show, JSON verdicts), so its byte-level BPE is trained on
a deterministic sample of exactly that. Any byte still encodes, through the byte alphabet.
"""
from __future__ import annotations

import json
import random
from typing import Iterator

import yaml

from vrt_ray.data.scene import BACKGROUNDS, COLOURS, DIRECTIONS, SHAPES
from vrt_ray.preset import PRESET_DIR

QUALITIES = ["clean", "noisy", "blurred", "blocky"]
FINDINGS = [
    "looks clean", "is noisy", "is blurred", "shows blocking artifacts", "jitters",
    "is frozen", "jumps to a new position", "has the wrong colour", "has the wrong shape",
    "moves the wrong way", "is sharp", "moves smoothly", "matches the prompt",
    "is identical to the previous frame", "breaks the motion",
]
VERDICTS = ["A", "B", "tie"]
DIMENSIONS = ["TA", "VQ", "MQ", "overall"]


def preset_texts() -> Iterator[str]:
    """Every text of every protocol preset (instructions, labels, stubs, error messages)."""
    def strings(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for value in node.values():
                yield from strings(value)
        elif isinstance(node, list):
            for value in node:
                yield from strings(value)

    for path in sorted(PRESET_DIR.glob("*.yaml")):
        yield from strings(yaml.safe_load(path.read_text()))


def protocol_corpus(num_samples: int = 3000, seed: int = 0) -> Iterator[str]:
    """Yield the presets' texts, then `num_samples` protocol-like texts (same seed, same texts)."""
    rng = random.Random(seed)
    colours, directions = list(COLOURS), list(DIRECTIONS)
    yield from preset_texts()
    for _ in range(num_samples):
        colour, shape = rng.choice(colours), rng.choice(SHAPES)
        direction, background = rng.choice(directions), rng.choice(BACKGROUNDS)
        video, total = rng.choice("AB"), rng.randint(16, 256)
        frame = rng.randint(1, total)
        frames = sorted(rng.sample(range(1, total + 1), rng.randint(1, 8)))
        call = {"name": "select_frames", "arguments": {"video": video, "target_frames": frames}}
        answer = {d: rng.choice(VERDICTS) for d in DIMENSIONS}
        x, y = rng.randint(0, 111), rng.randint(0, 111)
        step = f"{rng.randint(0, 40)}.{rng.randint(0, 9)}"
        yield rng.choice([
            f"{video} {frame}: {colour} {shape} ({x},{y}) {rng.choice(QUALITIES)}, "
            f"{step} {rng.choice(directions)} since {max(1, frame - 13)}.",
            f"{video}: frame {frame} is {rng.choice(QUALITIES)}; zoom in to confirm. "
            f"Next: scan {video} between the frames seen.",
            f"{video}: from frame {frame} to {frame + 3} it moves {step} px {rng.choice(directions)}; "
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
