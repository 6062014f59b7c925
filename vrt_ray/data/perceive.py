"""Simple image analysis of one synthetic frame: what the teacher "sees" in it.

The object is found by its chroma (backgrounds are grey, objects saturated colours); its colour
is the palette colour nearest in hue, its shape follows from the mask's geometry, its position is
the mask's centroid. Quality: high-frequency energy of the background (noise), edge sharpness
of the object's outline (blur), and how flat the frame is inside 8x8 blocks compared with between them (blocking).
Thresholds are for frames of any size (lengths are relative to a 112-pixel frame).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import ndimage

from vrt_ray.data.scene import BLOCK, COLOURS, REF_SIZE, hue_degrees

CHROMA_MIN = 80  # max(R,G,B) - min(R,G,B) above this is object
NOISE_MAX = 5.0  # mean |grey - its 3x3 mean| over the background above this: noisy
EDGE_WIDTH_MAX = 3.0  # pixels of outline transition per outline pixel above this: blurred
BLOCKINESS_MAX = 0.7  # above this the frame is flat inside 8x8 blocks and steps between them: blocky


_PALETTE = list(COLOURS)
_PALETTE_HUES = hue_degrees(np.asarray([COLOURS[c] for c in _PALETTE], dtype=np.float64))


@dataclass(frozen=True)
class FrameView:
    """What a frame shows. `colour`/`shape`/`x`/`y` are None when no object is visible."""

    colour: Optional[str]
    shape: Optional[str]
    x: Optional[float]
    y: Optional[float]
    noise: float
    edge_width: float
    blockiness: float

    @property
    def quality(self) -> str:
        """'noisy', 'blurred', 'blocky' or 'clean' (the first that applies)."""
        if self.noise > NOISE_MAX:
            return "noisy"
        if self.blockiness > BLOCKINESS_MAX:
            return "blocky"
        if self.edge_width > EDGE_WIDTH_MAX:
            return "blurred"
        return "clean"


def _blockiness(f: np.ndarray) -> float:
    """1 - (strongest step between neighbouring pixels inside an 8x8 block) / (strongest step
    anywhere): near 1 when every block is flat and all change sits on the block grid."""
    inside, anywhere = 0.0, 0.0
    for axis in (0, 1):
        d = np.abs(np.diff(f, axis=axis)).sum(axis=2)
        on_grid = (np.arange(d.shape[axis]) % BLOCK) == BLOCK - 1
        d_inside = d[:, ~on_grid] if axis == 1 else d[~on_grid, :]
        inside, anywhere = max(inside, float(d_inside.max())), max(anywhere, float(d.max()))
    return 0.0 if anywhere < 30 else 1.0 - inside / anywhere


def _edge_width(chroma: np.ndarray, mask: np.ndarray) -> float:
    """Mean width in pixels of the object's outline: pixels in transition per outline pixel."""
    level = float(np.median(chroma[mask]))
    transition = (chroma > 0.2 * level) & (chroma < 0.8 * level)
    outline = mask & ~ndimage.binary_erosion(mask)
    return float(transition.sum() / max(outline.sum(), 1))


def _shape(mask: np.ndarray, cx: float, cy: float) -> str:
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    fill = mask.sum() / float((x1 - x0) * (y1 - y0))
    hole = not mask[int(cy), int(cx)]
    if hole:
        return "ring"
    if fill > 0.9:
        return "square"
    if fill > 0.66:
        return "circle"
    if (cy - (y0 + y1) / 2.0) / (y1 - y0) > 0.08:
        return "triangle"
    return "diamond"


def perceive(frame: np.ndarray) -> FrameView:
    """Analyse an HxWx3 uint8 RGB frame."""
    f = frame.astype(np.float64)
    grey = f.mean(axis=2)
    chroma = f.max(axis=2) - f.min(axis=2)
    mask = chroma > CHROMA_MIN
    scale = frame.shape[1] / REF_SIZE
    near = ndimage.binary_dilation(mask, iterations=max(2, round(3 * scale)))
    bg = ~near
    noise = float(np.abs(grey - ndimage.uniform_filter(grey, 3, mode="nearest"))[bg].mean()) if bg.any() else 0.0

    blockiness = _blockiness(f)

    if mask.sum() < 12 * scale * scale:
        return FrameView(None, None, None, None, noise, 0.0, blockiness)
    ys, xs = np.nonzero(mask)
    weights = chroma[mask]
    cx, cy = float((xs * weights).sum() / weights.sum()) + 0.5, float((ys * weights).sum() / weights.sum()) + 0.5
    core = ndimage.binary_erosion(mask)
    angles = np.radians(hue_degrees(f[core if core.any() else mask]))
    hue = np.degrees(np.arctan2(np.sin(angles).mean(), np.cos(angles).mean())) % 360.0
    dist = np.abs((_PALETTE_HUES - hue + 180.0) % 360.0 - 180.0)
    colour = _PALETTE[int(np.argmin(dist))]

    return FrameView(colour, _shape(mask, cx, cy), cx, cy, noise, _edge_width(chroma, mask),
                     blockiness)
