"""Text-only copying sequences in the traces' formats: a stand-in for the pretraining a real
checkpoint has and a random tiny base lacks (docs/training.md, "A copying phase").

Each sequence is a conversation fragment whose labelled part can only be predicted by copying
from earlier in it:
- `frames`: a tool result's frame labels (each followed by random tokens where the image
  would be), then notes headed by those frames in order (`A 19: ...`);
- `prompt`: the user turn with a synthetic prompt, random tokens, then the teacher's
  restatement of it (`Prompt: a red circle moving right.`);
- `repeat`: a run of random tokens, then the same run again.
The wording is the preset's (frame labels, tool-result intro, user turn) and the teacher's.
A `CopySequence` holds the text, where its labelled tail starts (`start`, a character index)
and, within the tail, the spans only a copying model gets right (`copied`: the measure).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from vrt_ray.data import scene
from vrt_ray.data.scene import prompt_text
from vrt_ray.data.teacher import restatement
from vrt_ray.errors import VrtError
from vrt_ray.preset import Preset

COLOURS, SHAPES = tuple(scene.COLOURS), scene.SHAPES
DIRECTIONS, BACKGROUNDS = tuple(scene.DIRECTIONS), scene.BACKGROUNDS

NOTE_WORDS = ("clean", "blurred", "noisy", "blocky", "up", "down", "left", "right", "since",
              "still", "jumps")

Span = Tuple[int, int]


@dataclass(frozen=True)
class CopySequence:
    """A sequence's text, where its labels start, and the copied spans after that."""

    kind: str
    text: str
    start: int
    copied: List[Span]


def _random_tokens(rng: np.random.Generator, pieces: Sequence[str], n: int) -> str:
    return "".join(pieces[i] for i in rng.integers(len(pieces), size=n))


def _note(rng: np.random.Generator) -> str:
    colour, shape = COLOURS[rng.integers(len(COLOURS))], SHAPES[rng.integers(len(SHAPES))]
    x, y = rng.integers(0, 112, size=2)
    extra = " ".join(NOTE_WORDS[i] for i in rng.integers(len(NOTE_WORDS), size=2))
    return f"{colour} {shape} ({x},{y}) {extra}."


def frame_notes(rng: np.random.Generator, frames: Sequence[Tuple[str, int]]
                ) -> Tuple[str, List[Span]]:
    """A think turn of random notes headed by each (video, frame) in order (`A 19: ...`), and
    the spans of the frame numbers in it."""
    text, heads = "<think>", []
    for video, f in frames:
        at = len(text) + len(video) + 1
        heads.append((at, at + len(str(f))))
        text += f"{video} {f}: {_note(rng)} "
    return text.rstrip() + "</think>", heads


def frames_sequence(rng: np.random.Generator, pieces: Sequence[str],
                    preset: Preset) -> CopySequence:
    """A tool result of 2-8 frames of one video, then a think turn noting each in order."""
    if "{index}" not in preset.frame_label:
        raise VrtError(f"copy kind 'frames': preset {preset.name!r} labels no frame number "
                       "(its frame_label has no {index})")
    video = "AB"[rng.integers(2)]
    total = int(rng.integers(16, 300))
    count = int(rng.integers(2, 9))
    frames = sorted(int(f) + 1 for f in rng.choice(total, size=count, replace=False))
    text = f"<|im_start|>tool\n{preset.tool_result_intro.format(video=video, count=count)}"
    for f in frames:
        image = _random_tokens(rng, pieces, int(rng.integers(1, 17)))
        label = preset.frame_label.format(video=video, index=f, total=total)
        text += f"\n{label}<|vision_start|>{image}<|vision_end|>"
    text += "<|im_end|>\n<|im_start|>assistant\n"
    think, heads = frame_notes(rng, [(video, f) for f in frames])
    copied = [(len(text) + a, len(text) + b) for a, b in heads]
    return CopySequence("frames", text + think, len(text), copied)


def prompt_sequence(rng: np.random.Generator, pieces: Sequence[str],
                    preset: Preset) -> CopySequence:
    """A user turn (the preset's, with a synthetic prompt), random tokens, then the teacher's
    restatement of the prompt."""
    words = [str(rng.choice(options)) for options in (COLOURS, SHAPES, DIRECTIONS, BACKGROUNDS)]
    frames_a, frames_b = rng.integers(16, 300, size=2)
    try:
        user = preset.user.format(prompt=prompt_text(*words), frames_a=frames_a,
                                  frames_b=frames_b)
    except KeyError as exc:
        raise VrtError(f"copy kind 'prompt': preset {preset.name!r}'s user turn needs {exc}, "
                       "which a copying sequence does not have") from None
    filler = _random_tokens(rng, pieces, int(rng.integers(0, 200)))
    text = f"<|im_start|>user\n{user}\n{filler}<|im_end|>\n<|im_start|>assistant\n"
    start = len(text)
    text += "<think>"
    restated = restatement(*words[:3])
    copied, at = [], 0
    for word in words[:3]:
        at = restated.index(f" {word}", at) + 1
        copied.append((len(text) + at, len(text) + at + len(word)))
    return CopySequence("prompt", text + restated, start, copied)


def repeat_sequence(rng: np.random.Generator, pieces: Sequence[str],
                    preset: Preset) -> CopySequence:
    """A run of 8-48 random tokens, a newline, and the run again (all of it copied)."""
    run = _random_tokens(rng, pieces, int(rng.integers(8, 49)))
    text = f"{run}\n"
    return CopySequence("repeat", text + run, len(text), [(len(text), len(text) + len(run))])


GENERATORS: Dict[str, Callable[[np.random.Generator, Sequence[str], Preset], CopySequence]] = {
    "frames": frames_sequence, "prompt": prompt_sequence, "repeat": repeat_sequence}
KINDS = tuple(GENERATORS)
FRAME_IMAGES = "frame_images"  # the kind over real frames: vrt_ray/copy_images.py


def random_pieces(tokenizer) -> List[str]:
    """Every ordinary token of the vocabulary as text, for random runs: no special tokens and
    none that merge with their neighbours into something else when re-tokenized alone."""
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    pieces = []
    for i in range(len(tokenizer)):
        if i in special:
            continue
        piece = tokenizer.decode([i])
        if piece.strip() and tokenizer.encode(piece, add_special_tokens=False) == [i]:
            pieces.append(piece)
    return pieces
