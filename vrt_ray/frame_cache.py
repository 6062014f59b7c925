"""A bounded LRU cache of decoded (and resized) frames, shared by all episodes of a process.

An entry is keyed by the file's identity (resolved path, size, mtime in ns), the backend, the
pixel budget and the 1-based frame index, so an edited file is never served stale. A request's
misses are decoded together in one sorted pass. Cached arrays are read-only: a hit returns the
very array stored.
"""
from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from vrt_ray.video import VideoError, as_indices, open_video, resize_to_budget

DEFAULT_MAX_BYTES = 512 * 2**20  # the run config's video.cache_mb default

_default: Optional["FrameCache"] = None
_default_lock = threading.Lock()


class FrameCache:
    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.hits = 0  # requested frames served from the cache
        self.misses = 0  # requested frames not in the cache
        self.decoded_frames = 0  # frames decoded from files to serve misses
        self.decoded_by_file: Counter = Counter()  # resolved path -> frames decoded from it
        self._entries: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, path: str | Path, indices: Sequence[int], min_pixels: Optional[int] = None,
            max_pixels: Optional[int] = None, backend: str = "pyav") -> List[np.ndarray]:
        """Frames at 1-based `indices` of `path` (order kept, duplicates allowed), resized to
        the pixel budget when one is given; misses are decoded in one sorted pass."""
        if (min_pixels is None) != (max_pixels is None):
            raise ValueError("give both min_pixels and max_pixels, or neither")
        path = Path(path)
        try:
            stat = path.stat()
        except OSError:
            raise VideoError(f"{path}: no such file") from None
        indices = as_indices(path, indices)
        budget = None if min_pixels is None else (min_pixels, max_pixels)
        file_key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, backend, budget)
        found = {}
        with self._lock:
            for index in dict.fromkeys(indices):
                frame = self._entries.get(file_key + (index,))
                if frame is None:
                    continue
                self._entries.move_to_end(file_key + (index,))
                found[index] = frame
            self.hits += len(found)
            missing = [i for i in dict.fromkeys(indices) if i not in found]
            self.misses += len(missing)
        if missing:
            missing.sort()
            with open_video(path, backend) as reader:
                frames = reader.read(missing)
            if budget is not None:
                frames = [resize_to_budget(frame, *budget) for frame in frames]
            with self._lock:
                self.decoded_frames += len(frames)
                self.decoded_by_file[file_key[0]] += len(frames)
                for index, frame in zip(missing, frames):
                    frame.flags.writeable = False
                    found[index] = frame
                    self._put(file_key + (index,), frame)
        return [found[i] for i in indices]

    def resize(self, max_bytes: int) -> None:
        """Change the bound, evicting the least recently used frames beyond it."""
        with self._lock:
            self.max_bytes = max_bytes
            self._evict()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.nbytes = 0

    def _put(self, key: tuple, frame: np.ndarray) -> None:
        if frame.nbytes > self.max_bytes or key in self._entries:
            return
        self._entries[key] = frame
        self.nbytes += frame.nbytes
        self._evict()

    def _evict(self) -> None:
        while self.nbytes > self.max_bytes:
            _, frame = self._entries.popitem(last=False)
            self.nbytes -= frame.nbytes


def default_cache(max_bytes: Optional[int] = None) -> FrameCache:
    """The process-wide cache: made on first use with `max_bytes` (default 512 MiB); a later
    `max_bytes` resizes it."""
    global _default
    with _default_lock:
        if _default is None:
            _default = FrameCache(DEFAULT_MAX_BYTES if max_bytes is None else max_bytes)
        elif max_bytes is not None and max_bytes != _default.max_bytes:
            _default.resize(max_bytes)
        return _default
