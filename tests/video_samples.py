"""Small video files of every kind the video layer must read, encoded here with PyAV.

Every frame carries its own index as an 8-bit code: the frame is a 4x2 grid of cells, cell b
is red when bit b of the index is set and black otherwise. Neighbouring frames differ in whole
cells (hundreds of grey levels), so lossy coding cannot turn one frame into another and a wrong
frame cannot pass for the right one.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Dict, Optional, Sequence

import av
import numpy as np

WIDTH, HEIGHT = 64, 48
ON = (230, 30, 30)  # a set bit; red, so a swap of colour channels shows

# name -> how it is encoded: codec, frame count, container format and extras
KINDS: Dict[str, dict] = {
    "h264_bframes.mp4": dict(codec="libx264", frames=40, options={"g": "10", "bf": "3"}),
    "hevc_bframes.mp4": dict(codec="libx265", frames=40, options={
        "x265-params": "keyint=10:min-keyint=10:bframes=4:log-level=error"}),
    "vp9.webm": dict(codec="libvpx-vp9", frames=40, options={"g": "10"}),
    "av1.mkv": dict(codec="libsvtav1", frames=40, options={"g": "10"}),
    "anim.gif": dict(codec="gif", frames=30, pix_fmt="rgb8"),
    # 96x64: decord 0.6.0 returns malformed arrays for rotated frames 48 pixels wide
    "rotated90.mp4": dict(codec="libx264", frames=30, size=(96, 64), rotation=90,
                          options={"g": "10"}),
    "vfr.mp4": dict(codec="libx264", frames=40, options={"g": "10"},
                    pts_ms=np.cumsum([0] + [33, 66, 17, 100, 40] * 8)[:40].tolist()),
    "hevc.ts": dict(codec="libx265", frames=40, format="mpegts", options={
        "x265-params": "keyint=10:min-keyint=10:bframes=4:log-level=error"}),
}


def code_frame(index: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """The HxWx3 RGB picture of `index` (0..255)."""
    frame = np.zeros((height, width, 3), np.uint8)
    cell_w, cell_h = width // 4, height // 2
    for bit in range(8):
        if index >> bit & 1:
            row, col = divmod(bit, 4)
            frame[row * cell_h:(row + 1) * cell_h, col * cell_w:(col + 1) * cell_w] = ON
    return frame


def read_code(frame: np.ndarray) -> int:
    """The index a (decoded, coded-orientation) frame shows: each cell's centre, red or not."""
    height, width = frame.shape[:2]
    cell_w, cell_h = width // 4, height // 2
    index = 0
    for bit in range(8):
        row, col = divmod(bit, 4)
        centre = frame[row * cell_h + cell_h // 4:(row + 1) * cell_h - cell_h // 4,
                       col * cell_w + cell_w // 4:(col + 1) * cell_w - cell_w // 4]
        if centre[..., 0].mean() > 115:
            index |= 1 << bit
    return index


def encode(path: Path, codec: str, frames: int, format: Optional[str] = None,
           size=(WIDTH, HEIGHT), rotation: Optional[int] = None, pix_fmt: str = "yuv420p",
           options: Optional[dict] = None, pts_ms: Optional[Sequence[int]] = None) -> Path:
    """Encode frames 0..frames-1 (each showing its index) at 24 fps, or at the given
    millisecond timestamps."""
    width, height = size
    with av.open(str(path), "w", format=format) as container:
        stream = container.add_stream(codec, rate=None if pts_ms else 24, options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if pts_ms:
            stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(code_frame(i, width, height), format="rgb24")
            if pts_ms:
                frame.pts, frame.time_base = int(pts_ms[i]), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def remux_without_timestamps(source: Path, path: Path) -> Path:
    """`source`'s H.264 stream as a raw elementary stream: packets carry no timestamps."""
    with av.open(str(source)) as src, av.open(str(path), "w", format="h264") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(video=0):
            if packet.size:
                packet.stream = out
                dst.mux(packet)
    return path


def sequential_frames(path: Path) -> list:
    """Every frame of `path` by plain sequential decoding, in coded orientation."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def make_all(folder: Path) -> Dict[str, Path]:
    """Every kind of KINDS (plus a raw H.264 stream) written into `folder`."""
    files = {name: encode(folder / name, **spec) for name, spec in KINDS.items()}
    files["raw.h264"] = remux_without_timestamps(files["h264_bframes.mp4"], folder / "raw.h264")
    return files
