"""Copying sequences over real frames (kind `frame_images`): the copy a trace's later turns need.

A tool result of 2-8 frames of one video, as the protocol writes it (the preset's intro, each
frame's label, then its image tokens), then a think turn whose notes are headed by those frames
in order (`A 19: ...`). Only the note heads' frame numbers are labelled. The text-only `frames`
kind (vrt_ray/copy_corpus.py) puts random tokens where the images are; here the numbers to copy
sit between image tokens and their M-RoPE positions, as in a trace (docs/training.md, "Copying
sequences over real frames")."""
from __future__ import annotations

from dataclasses import replace
from typing import Dict, Sequence

import numpy as np

from vrt_ray.copy_corpus import FRAME_IMAGES as KIND, frame_notes
from vrt_ray.errors import VrtError
from vrt_ray.frame_cache import FrameCache
from vrt_ray.learner_core import TrainSequence
from vrt_ray.model_inputs import PixelBudget, processor_inputs
from vrt_ray.preset import Preset
from vrt_ray.protocol import Budgets, Episode, EpisodeInput, format_turn, render
from vrt_ray.trajectory import Turn, to_sequences
from vrt_ray.video import open_video


def tool_result(preset: Preset, path: str, total: int, video: str,
                frames: Sequence[int]) -> dict:
    """The protocol's tool-result message for a call that fetches `frames` (1-based) of `video`
    (the file `path`, `total` frames long): an episode's own, after that call."""
    episode = Episode(EpisodeInput("copy", "", {"A": path, "B": path}, {"A": total, "B": total}),
                      preset, Budgets(max_frames_per_call=len(frames)))
    episode.step(format_turn(preset, "", {"video": video, "target_frames": list(frames)}),
                 lambda refs: None)
    message = episode.messages[-1]
    if message.get("kind") != "tool_result":
        raise VrtError(f"copy kind {KIND!r}: preset {preset.name!r} refused the call for frames "
                       f"{list(frames)} of {video}: {message['content']}")
    return message


class FrameImageCopies:
    """Draws `frame_images` sequences over the frames of `videos` (paths) at `budget`."""

    def __init__(self, processor, preset: Preset, budget: PixelBudget, videos: Sequence[str],
                 cache: FrameCache):
        if "{index}" not in preset.frame_label:
            raise VrtError(f"copy kind {KIND!r}: preset {preset.name!r} labels no frame number "
                           "(its frame_label has no {index})")
        if not videos:
            raise VrtError(f"copy kind {KIND!r}: no videos to take frames from")
        self.processor, self.preset, self.budget, self.cache = processor, preset, budget, cache
        self.videos = sorted(set(map(str, videos)))
        self._totals: Dict[str, int] = {}

    def _total(self, path: str) -> int:
        if path not in self._totals:
            with open_video(path, backend=self.budget.backend) as reader:
                self._totals[path] = reader.info.num_frames
        return self._totals[path]

    def sequence(self, rng: np.random.Generator) -> TrainSequence:
        """One sequence; its action mask (so its labels) on the note heads' frame numbers."""
        path = self.videos[rng.integers(len(self.videos))]
        total, video = self._total(path), "AB"[rng.integers(2)]
        count = int(min(rng.integers(2, 9), total))
        frames = sorted(int(f) + 1 for f in rng.choice(total, size=count, replace=False))
        rendered, visuals = render([tool_result(self.preset, path, total, video, frames)])
        text = self.processor.apply_chat_template(rendered, add_generation_prompt=True,
                                                  tokenize=False)
        # a video's frames share one size, so its first frame stands in for each: same tokens
        first = self.cache.get(path, [1], self.budget.min_pixels, self.budget.max_pixels,
                               backend=self.budget.backend)[0]
        prompt_ids = processor_inputs(self.processor, text, [np.array(first)] * len(visuals),
                                      [])["input_ids"][0].tolist()
        think, copied = frame_notes(rng, [(r.video, r.index) for _, refs in visuals for r in refs])
        enc = self.processor.tokenizer(think, add_special_tokens=False,
                                       return_offsets_mapping=True)
        marks = [any(a < e and b > s for s, e in copied) for a, b in enc["offset_mapping"]]
        (seq,) = to_sequences([Turn(prompt_ids, visuals, enc["input_ids"], [], "length")])
        seq = replace(seq, action_mask=[False] * len(prompt_ids) + marks)
        return TrainSequence(seq, {"A": path, "B": path}, self.budget)
