"""Reading video frames by 1-based index: the one interface the rest of vrt-ray uses.

`open_video(path, backend)` gives a reader whose `.info` describes the file and whose
`.read(indices)` returns the frames asked for (RGB uint8, display orientation applied) from one
sorted decoding pass. PyAV with an exact seek is the default backend; decord is accepted for
H.264 only (docs/video.md says why). Frames are resized to a model's pixel budget with the
processor's own rule (`resize_to_budget`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Protocol, Sequence

import numpy as np

from vrt_ray.errors import VrtError

BACKENDS = ("pyav", "decord")


class VideoError(VrtError):
    """A video that cannot be read as asked; the message names the file (and codec)."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    num_frames: int
    fps: float  # mean rate: num_frames / duration (variable-rate files included)
    duration: float  # seconds, first frame's start to last frame's end
    width: int  # display size: after rotation
    height: int
    codec: str
    rotation: int  # degrees counter-clockwise applied to coded frames (0, 90, 180, 270)
    backend: str


class VideoReader(Protocol):
    info: VideoInfo

    def read(self, indices: Sequence[int]) -> List[np.ndarray]:
        """Frames at 1-based `indices`, in the order asked (duplicates allowed): HxWx3 uint8
        RGB in display orientation."""

    def close(self) -> None: ...

    def __enter__(self) -> "VideoReader": ...

    def __exit__(self, *exc) -> None: ...


def open_video(path: str | Path, backend: str = "pyav") -> VideoReader:
    """Open `path` for reading frames with `backend` ("pyav" or "decord")."""
    path = Path(path)
    if backend not in BACKENDS:
        raise VideoError(f"{path}: unknown video backend {backend!r}: choose one of "
                         f"{', '.join(BACKENDS)}")
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    from vrt_ray.video_pyav import PyAVReader

    reader = PyAVReader(path)
    if backend == "pyav":
        return reader
    from vrt_ray.video_decord import DecordReader

    return DecordReader(reader)


def as_indices(path: str | Path, indices: Iterable[int]) -> List[int]:
    """`indices` as Python ints; anything else (a bool, a float, a string) is an error."""
    checked = []
    for index in indices:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise VideoError(f"{path}: frame index {index!r} is not an integer")
        checked.append(int(index))
    return checked


def check_indices(info: VideoInfo, indices: Iterable[int]) -> List[int]:
    """`indices` as ints, each checked to lie in 1..num_frames."""
    checked = as_indices(info.path, indices)
    for index in checked:
        if not 1 <= index <= info.num_frames:
            raise VideoError(f"{info.path}: frame {index} is out of range: valid frames are "
                             f"1..{info.num_frames}")
    return checked


def uniform_indices(num_frames: int, k: int) -> List[int]:
    """`k` 1-based indices spread evenly over `num_frames`, first and last frame included
    (linspace rounded half up); all frames when k >= num_frames."""
    if num_frames < 1 or k < 1:
        raise ValueError(f"uniform_indices needs num_frames >= 1 and k >= 1, got "
                         f"{num_frames} and {k}")
    if k >= num_frames:
        return list(range(1, num_frames + 1))
    if k == 1:
        return [1]
    return [1 + (2 * i * (num_frames - 1) + (k - 1)) // (2 * (k - 1)) for i in range(k)]


def resize_to_budget(frame: np.ndarray, min_pixels: int, max_pixels: int,
                     factor: int = 28) -> np.ndarray:
    """`frame` resized (PIL bicubic) to the size Qwen2-VL's processor gives it under the pixel
    budget: transformers' own `smart_resize` (sides multiples of `factor` = patch x merge)."""
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    height, width = frame.shape[:2]
    try:
        new_height, new_width = smart_resize(height, width, factor=factor,
                                             min_pixels=min_pixels, max_pixels=max_pixels)
    except ValueError as exc:  # aspect ratio beyond 200
        raise VideoError(f"a {width}x{height} frame cannot be resized: {exc}") from None
    if (new_height, new_width) == (height, width):
        return frame
    image = Image.fromarray(frame).resize((new_width, new_height), Image.Resampling.BICUBIC)
    return np.asarray(image)
