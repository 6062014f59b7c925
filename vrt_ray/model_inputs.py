"""Model inputs from a message list: the one place where frames become pixels and text becomes
token ids, used alike by the engines, the learner, the reference policy and serving.

Frames are fetched through the process's frame cache at the run's pixel budget, so the same
references always give the same pixels; the processor's own resize rule then leaves them as
they are.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Mapping, Optional, Sequence, Tuple

import numpy as np

from vrt_ray.frame_cache import FrameCache, default_cache
from vrt_ray.protocol import FrameRef, Visual


@dataclass(frozen=True)
class PixelBudget:
    """The resize settings a trajectory records with its frame references."""

    min_pixels: int
    max_pixels: int
    backend: str = "pyav"


@dataclass
class FrameSource:
    """Decodes frame references of one episode's videos through a (shared) frame cache."""

    videos: Mapping[str, str]  # A / B -> path
    budget: PixelBudget
    cache: Optional[FrameCache] = None

    def __post_init__(self):
        if self.cache is None:
            self.cache = default_cache()

    def frames(self, refs: Sequence[FrameRef]) -> List[np.ndarray]:
        """Pixels of `refs` in order; each video's frames come from one decoding pass."""
        out: List[Optional[np.ndarray]] = [None] * len(refs)
        for video in dict.fromkeys(r.video for r in refs):
            slots = [i for i, r in enumerate(refs) if r.video == video]
            pixels = self.cache.get(self.videos[video], [refs[i].index for i in slots],
                                    self.budget.min_pixels, self.budget.max_pixels,
                                    backend=self.budget.backend)
            for slot, frame in zip(slots, pixels):
                out[slot] = frame
        return out

    def fetch(self, refs: Sequence[FrameRef]) -> None:
        """Decode (and cache) `refs`; raises VideoError when they cannot be read."""
        self.frames(refs)

    def visuals(self, visuals: Sequence[Visual]) -> Tuple[List[np.ndarray], List[List[np.ndarray]]]:
        """Images and videos (lists of frames) for the processor, in text order."""
        images, videos = [], []
        for kind, refs in visuals:
            frames = [np.array(f) for f in self.frames(refs)]  # writable copies for torch
            if kind == "image":
                images.append(frames[0])
            else:
                videos.append(frames)
        return images, videos


def processor_inputs(processor, text: str, images: Sequence[np.ndarray],
                     videos: Sequence[Sequence[np.ndarray]]):
    """Tokenised text with image / video tensors for one sequence (batch of 1)."""
    kwargs = {}
    if images:
        kwargs["images"] = list(images)
    if videos:
        kwargs["videos"] = [np.stack(v) for v in videos]
        kwargs["do_sample_frames"] = False
    return processor(text=[text], return_tensors="pt", **kwargs)


def rebuild_inputs(processor, input_ids: Sequence[int], images: Sequence[np.ndarray],
                   videos: Sequence[Sequence[np.ndarray]]):
    """Model inputs for stored token ids (a turn's context plus generation, or a packed
    sequence) and their visuals: the pixels and grids come from the processor itself, run on
    bare placeholders, so they equal what the engine was given; positions (M-RoPE) follow from
    the ids and grids."""
    import torch

    placeholder = "<|vision_start|><|image_pad|><|vision_end|>" * len(images) + \
        "<|vision_start|><|video_pad|><|vision_end|>" * len(videos)
    visual = processor_inputs(processor, placeholder, images, videos) if placeholder else {}
    inputs = {k: v for k, v in dict(visual).items()
              if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
    ids = torch.tensor([list(input_ids)], dtype=torch.long)
    inputs["input_ids"] = ids
    inputs["attention_mask"] = torch.ones_like(ids)
    inputs["mm_token_type_ids"] = torch.tensor(processor.create_mm_token_type_ids([list(input_ids)]))
    return inputs
