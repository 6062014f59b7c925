"""The decord backend, for H.264 only: the one codec where decord 0.6.0's seek was measured
exact and its pixels equal PyAV's. Other codecs are refused (docs/video.md): decord returns a
neighbouring frame without error when seeking in HEVC, decodes HEVC MPEG-TS corrupt, and cannot
open AV1 or GIF."""
from __future__ import annotations

from dataclasses import replace
from typing import List, Sequence

import numpy as np

from vrt_ray.video import VideoError, check_indices
from vrt_ray.video_pyav import PyAVReader

SUPPORTED_CODECS = ("h264",)
WHY_REFUSED = {
    "hevc": "decord 0.6.0 returns a neighbouring frame without error when seeking in HEVC "
            "with B-frames and decodes HEVC MPEG-TS into corrupt pictures",
    "av1": "decord 0.6.0 cannot decode AV1 (its bundled FFmpeg has no AV1 decoder)",
    "gif": "decord 0.6.0 cannot open animated GIF",
}


class DecordReader:
    def __init__(self, probe: PyAVReader):
        """`probe`: the file opened with PyAV, for its description; closed here."""
        probe.close()
        info = probe.info
        if info.codec not in SUPPORTED_CODECS:
            why = WHY_REFUSED.get(info.codec, "decord's seek is verified exact on H.264 only")
            raise VideoError(f"{info.path}: backend decord refuses the {info.codec} stream: "
                             f"{why}; use backend pyav")
        if not probe.has_timestamps:
            raise VideoError(f"{info.path}: backend decord refuses a stream without "
                             "timestamps (it cannot seek in it exactly); use backend pyav")
        import decord

        try:
            self._reader = decord.VideoReader(info.path, ctx=decord.cpu(0))
        except decord.DECORDError as exc:
            raise VideoError(f"{info.path}: decord cannot open the {info.codec} stream "
                             f"({str(exc).splitlines()[0]}); use backend pyav") from None
        if len(self._reader) != info.num_frames:
            raise VideoError(f"{info.path}: decord counts {len(self._reader)} frames where the "
                             f"stream has {info.num_frames}; use backend pyav")
        self.info = replace(info, backend="decord")

    def read(self, indices: Sequence[int]) -> List[np.ndarray]:
        import decord

        wanted = check_indices(self.info, indices)
        targets = sorted(set(wanted))
        try:
            batch = self._reader.get_batch([i - 1 for i in targets]).asnumpy()
        except decord.DECORDError as exc:
            raise VideoError(f"{self.info.path}: decord failed on the {self.info.codec} "
                             f"stream ({str(exc).splitlines()[0]}); use backend pyav") from None
        expected = (len(targets), self.info.height, self.info.width, 3)
        if batch.shape != expected:
            raise VideoError(f"{self.info.path}: decord returned frames of shape "
                             f"{batch.shape[1:]} instead of {expected[1:]}; use backend pyav")
        by_target = {t: frame.copy() for t, frame in zip(targets, batch)}  # own memory each
        return [by_target[i] for i in wanted]

    def close(self) -> None:
        self._reader = None

    def __enter__(self) -> "DecordReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
