"""Frame reading speed of the video layer, per backend, printed as JSON.

256-frame synthetic videos (a textured background with a moving disc) in H.264 and HEVC mp4
with encoder defaults, as a text-to-video generator writes them (two keyframes), and in H.264
with a keyframe every 16 frames (where seeking pays). For each backend: frames/s
for uniform sampling (one call of 32 frames) and for random access (8 calls of 8 random
frames, as tool calls ask), cold (empty cache, file opened and indexed) and cached (the same
calls again from the frame cache). decord refuses HEVC: its refusal is reported.

    python benchmarks/video_io.py [--size 320x240] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from vrt_ray.frame_cache import FrameCache
from vrt_ray.video import VideoError, open_video, uniform_indices

FRAMES = 256


def make_video(path: Path, codec: str, width: int, height: int, gop: int = 0) -> Path:
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:height, :width]
    with av.open(str(path), "w") as container:
        options = {"x265-params": "log-level=error"} if codec == "libx265" else {}
        if gop:
            options["g"] = str(gop)
        stream = container.add_stream(codec, rate=24, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(FRAMES):
            cx = width * (0.2 + 0.6 * i / FRAMES)
            cy = height * (0.5 + 0.3 * np.sin(i / 20))
            disc = (xx - cx) ** 2 + (yy - cy) ** 2 < (height / 6) ** 2
            picture = texture + np.uint8(i % 128)
            picture[disc] = (220, 60, 40)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def keyframes(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(p.is_keyframe for p in container.demux(video=0) if p.size)


def timed(cache: FrameCache, path: Path, calls, backend: str) -> float:
    start = time.perf_counter()
    for call in calls:
        cache.get(path, call, backend=backend)
    return time.perf_counter() - start


def measure(path: Path, backend: str, repeats: int) -> dict:
    try:
        with open_video(path, backend) as reader:
            num_frames = reader.info.num_frames
    except VideoError as exc:
        return {"refused": str(exc)}
    rng = random.Random(0)
    workloads = {
        "uniform": [uniform_indices(num_frames, 32)],
        "random": [rng.sample(range(1, num_frames + 1), 8) for _ in range(8)],
    }
    result = {}
    for name, calls in workloads.items():
        frames = sum(len(c) for c in calls)
        cold, cached = [], []
        for _ in range(repeats):
            cache = FrameCache(2**30)
            cold.append(timed(cache, path, calls, backend))
            cached.append(timed(cache, path, calls, backend))
        result[name] = {"frames": frames, "calls": len(calls),
                        "cold_frames_per_s": round(frames / min(cold), 1),
                        "cached_frames_per_s": round(frames / min(cached), 1)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="320x240", help="WIDTHxHEIGHT")
    parser.add_argument("--repeats", type=int, default=3, help="best of N timings")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    report = {"frames": FRAMES, "size": args.size, "cpus": os.cpu_count(),
              "pyav": av.__version__, "python": sys.version.split()[0], "videos": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for label, codec, gop in (("h264", "libx264", 0), ("hevc", "libx265", 0),
                                  ("h264_gop16", "libx264", 16)):
            path = make_video(Path(tmp) / f"{label}.mp4", codec, width, height, gop)
            report["videos"][label] = {
                "keyframes": keyframes(path),
                "backends": {b: measure(path, b, args.repeats) for b in ("pyav", "decord")}}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
