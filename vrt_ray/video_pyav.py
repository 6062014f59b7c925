"""The PyAV backend: exact frame access by index in any codec FFmpeg decodes.

At open the stream's packets are demuxed (not decoded) into a frame index: the presentation
timestamp of every frame, in display order, and the timestamps of the keyframes. A read sorts
its targets, seeks to the keyframe at or before the first, decodes forward and keeps each frame
whose timestamp is exactly a target; it seeks again only when the next target's keyframe lies
ahead. Where a seek lands past its target (or a target never comes out) the frames still
missing are decoded from the start of the file instead of guessed. Streams without timestamps
(raw elementary streams) are indexed by decoding order from the start.
"""
from __future__ import annotations

import bisect
import statistics
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import av
import numpy as np

from vrt_ray.video import VideoError, VideoInfo, check_indices


class _SeekFailed(Exception):
    """A seek landed past its target or skipped it: decode from the start instead."""


class PyAVReader:
    def __init__(self, path: Path):
        self._path = path
        self._container = self._open()
        try:
            self._stream = self._container.streams.video[0]
            self.codec = self._stream.codec_context.codec.canonical_name
            self._index_stream()
            self.info = self._probe_first_frame()
        except BaseException:
            self._container.close()
            raise

    # -- opening -------------------------------------------------------------------------------
    def _open(self):
        try:
            container = av.open(str(self._path))
        except av.FFmpegError as exc:
            raise VideoError(f"{self._path}: not a readable video "
                             f"({getattr(exc, 'strerror', None) or exc})") from None
        if container.format.name == "tty":  # FFmpeg renders text files as ANSI-art frames
            container.close()
            raise VideoError(f"{self._path}: not a readable video (a text file)")
        if not container.streams.video:
            container.close()
            raise VideoError(f"{self._path}: has no video stream")
        return container

    def _reopen(self) -> None:
        self._container.close()
        self._container = self._open()
        self._stream = self._container.streams.video[0]

    def _index_stream(self) -> None:
        """Demux every packet: frame timestamps in display order, keyframe timestamps."""
        pts, keys, durations = [], [], {}
        try:
            for packet in self._container.demux(self._stream):
                if packet.size == 0 or packet.is_discard:
                    continue
                pts.append(packet.pts)
                if packet.pts is not None:
                    durations[packet.pts] = packet.duration or 0
                    if packet.is_keyframe:
                        keys.append(packet.pts)
        except av.FFmpegError as exc:
            raise VideoError(f"{self._path}: corrupt {self.codec} stream ({exc})") from None
        if not pts:
            raise VideoError(f"{self._path}: the video stream has no frames")
        self._pts: Optional[List[int]] = None  # None: no timestamps, frames go by decode order
        self._keys: List[int] = []
        self._num_frames = len(pts)
        if None not in pts and len(set(pts)) == len(pts):
            self._pts = sorted(pts)
            self._keys = sorted(keys) or self._pts[:1]
            self._last_duration = durations[self._pts[-1]] or (
                statistics.median(np.diff(self._pts)) if len(pts) > 1 else 0)
        self._reopen()

    def _probe_first_frame(self) -> VideoInfo:
        """Decode the first frame for the display size and rotation; count frames if the stream
        has no timestamps."""
        first, count = None, 0
        for frame in self._decoded(self._container):
            if first is None:
                first = frame
            count += 1
            if self._pts is not None:
                break
        if first is None:
            raise VideoError(f"{self._path}: cannot decode the {self.codec} stream: "
                             "no frame came out")
        if self._pts is None:
            self._num_frames = count
        rotation = first.rotation if first.rotation % 90 == 0 else 0  # as FFmpeg: only 90s
        self._quarter_turns = (rotation // 90) % 4
        width, height = first.width, first.height
        if self._quarter_turns % 2:
            width, height = height, width
        duration, fps = self._timing()
        self._reopen()
        return VideoInfo(path=str(self._path), num_frames=self._num_frames, fps=fps,
                         duration=duration, width=width, height=height, codec=self.codec,
                         rotation=90 * self._quarter_turns, backend="pyav")

    def _timing(self):
        stream = self._stream
        rate = float(stream.average_rate or stream.guessed_rate or 0)
        if self._pts is None:
            duration = float(stream.duration * stream.time_base) if stream.duration else (
                self._num_frames / rate if rate else 0.0)
        else:
            duration = float((self._pts[-1] - self._pts[0] + self._last_duration)
                             * stream.time_base)
        return duration, (self._num_frames / duration if duration > 0 else rate)

    @property
    def has_timestamps(self) -> bool:
        """Whether frames are indexed by timestamp (False: by decoding order)."""
        return self._pts is not None

    # -- reading -------------------------------------------------------------------------------
    def read(self, indices: Sequence[int]) -> List[np.ndarray]:
        wanted = check_indices(self.info, indices)
        targets = sorted(set(wanted))
        if self._pts is None:
            by_index = self._decode_from_start(targets, {}, by_position=True)
        else:
            by_pts: Dict[int, np.ndarray] = {}
            try:
                self._decode_with_seeks([self._pts[i - 1] for i in targets], by_pts)
            except _SeekFailed:
                self._decode_from_start([self._pts[i - 1] for i in targets], by_pts)
            by_index = {i: by_pts[self._pts[i - 1]] for i in targets}
        return [by_index[i] for i in wanted]

    def _decode_with_seeks(self, targets: List[int], got: Dict[int, np.ndarray]) -> None:
        frames: Optional[Iterator[av.VideoFrame]] = None
        position = None  # timestamp of the last frame decoded
        for target in targets:
            keyframe = self._keys[max(bisect.bisect_right(self._keys, target) - 1, 0)]
            fresh = frames is None or keyframe > position
            if fresh:
                try:
                    self._container.seek(keyframe, stream=self._stream, backward=True)
                except av.FFmpegError:
                    raise _SeekFailed from None
                frames = self._decoded(self._container)
            for frame in frames:
                if frame.pts is None or (fresh and frame.pts > target):
                    raise _SeekFailed
                fresh, position = False, frame.pts
                if frame.pts >= target:
                    break
            else:
                raise _SeekFailed
            if frame.pts != target:
                raise _SeekFailed
            got[target] = self._to_rgb(frame)

    def _decode_from_start(self, targets: List[int], got: Dict[int, np.ndarray],
                           by_position: bool = False) -> Dict[int, np.ndarray]:
        """Decode from the first frame for the `targets` not yet in `got`: timestamps, or
        1-based positions in decoding order (`by_position`)."""
        remaining = [t for t in targets if t not in got]
        self._reopen()
        for position, frame in enumerate(self._decoded(self._container), start=1):
            value = position if by_position else frame.pts
            if not remaining or value is None or value > remaining[0]:
                break
            if value == remaining[0]:
                got[remaining.pop(0)] = self._to_rgb(frame)
        if remaining:
            index = remaining[0] if by_position else self._pts.index(remaining[0]) + 1
            raise VideoError(f"{self._path}: cannot decode frame {index} of the {self.codec} "
                             "stream")
        return got

    def _decoded(self, container) -> Iterator[av.VideoFrame]:
        try:
            yield from container.decode(self._stream)
        except av.FFmpegError as exc:
            raise VideoError(f"{self._path}: cannot decode the {self.codec} stream "
                             f"({exc})") from None

    def _to_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        rgb = frame.to_ndarray(format="rgb24")
        if self._quarter_turns:
            rgb = np.ascontiguousarray(np.rot90(rgb, self._quarter_turns))
        return rgb

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> "PyAVReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
