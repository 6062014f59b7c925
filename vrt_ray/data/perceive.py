"""Simple image analysis of one synthetic frame: what the teacher "sees" in it.

The object is found by its chroma (backgrounds are grey, objects saturated colours); its colour
is the palette colour nearest in hue, its shape follows from the mask's geometry, its position is
the mask's centroid. Quality: high-frequency energy of the background (noise), edge sharpness
of the object's outline (blur), and how flat the frame is inside 8x8 blocks compared with the
steps between blocks (blocking).
Thresholds are for frames of any size (lengths are relative to a 112-pixel frame).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

from vrt_ray.data.scene import BLOCK, COLOURS, REF_SIZE, hue_degrees

CHROMA_MIN = 80  # max(R,G,B) - min(R,G,B) above this is object...
OBJECT_SHARE = 0.6  # ...and above this share of the object's median chroma
NOISE_MAX = 5.0  # mean |grey - its 3x3 mean| over the background above this: noisy
EDGE_WIDTH_MAX = 3.0  # pixels of outline transition per outline pixel above this: blurred
BLOCKINESS_MAX = 0.7  # above this the frame is flat inside its 8x8 blocks: blocky


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


def _blockiness(channels: Sequence[np.ndarray]) -> float:
    """1 - (strongest step between neighbouring pixels inside an 8x8 block) / (strongest step
    anywhere): near 1 when every block is flat and all change sits on the block grid."""
    inside, anywhere = 0.0, 0.0
    for axis in (0, 1):
        d = sum(np.abs(np.diff(c, axis=axis)) for c in channels)
        on_grid = (np.arange(d.shape[axis]) % BLOCK) == BLOCK - 1
        d_inside = d[:, ~on_grid] if axis == 1 else d[~on_grid, :]
        inside, anywhere = max(inside, float(d_inside.max())), max(anywhere, float(d.max()))
    return 0.0 if anywhere < 30 else 1.0 - inside / anywhere


def _edge_width(chroma: np.ndarray, mask: np.ndarray, core: np.ndarray) -> float:
    """Mean width in pixels of the object's outline: pixels in transition per outline pixel."""
    level = float(np.median(chroma[mask]))
    transition = (chroma > 0.2 * level) & (chroma < 0.8 * level)
    return float(transition.sum() / max(int((mask & ~core).sum()), 1))


def _shape(mask: np.ndarray, cx: float, cy: float) -> str:
    """Ring: hollow at the centroid; square: fills the corners of its bounding box; circle: fills
    most of the box; triangle: centroid well below the box's middle; else diamond."""
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    if not mask[int(cy), int(cx)]:
        return "ring"
    box = mask[y0:y1, x0:x1]
    ch, cw = max(1, round(0.2 * (y1 - y0))), max(1, round(0.2 * (x1 - x0)))
    corners = np.concatenate([box[:ch, :cw].ravel(), box[:ch, -cw:].ravel(),
                              box[-ch:, :cw].ravel(), box[-ch:, -cw:].ravel()])
    if corners.mean() > 0.6:
        return "square"
    if box.mean() > 0.68:
        return "circle"
    if (cy - (y0 + y1) / 2.0) / (y1 - y0) > 0.07:
        return "triangle"
    return "diamond"


def perceive(frame: np.ndarray) -> FrameView:
    """Analyse an HxWx3 uint8 RGB frame."""
    f = frame.astype(np.float32)
    r, g, b = f[:, :, 0], f[:, :, 1], f[:, :, 2]
    grey = (r + g + b) / 3.0
    chroma = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
    mask = chroma > CHROMA_MIN
    if mask.any():  # drop the half-coloured fringe that 4:2:0 chroma leaves along edges
        mask &= chroma > OBJECT_SHARE * float(np.median(chroma[mask]))
    scale = frame.shape[1] / REF_SIZE
    bg = ~ndimage.binary_dilation(mask, iterations=max(2, round(3 * scale)))
    detail = np.abs(grey - ndimage.uniform_filter(grey, 3, mode="nearest"))
    noise = float(detail[bg].mean()) if bg.any() else 0.0
    blockiness = _blockiness((r, g, b))
    if mask.sum() < 12 * scale * scale:
        return FrameView(None, None, None, None, noise, 0.0, blockiness)
    # chroma is proportional to the object's coverage of a pixel (backgrounds are grey), so
    # weighting by it around the mask places the centroid to a fraction of a pixel
    ys, xs = np.nonzero(ndimage.binary_dilation(mask, iterations=2))
    weights = chroma[ys, xs]
    cx = float((xs * weights).sum() / weights.sum()) + 0.5
    cy = float((ys * weights).sum() / weights.sum()) + 0.5
    core = ndimage.binary_erosion(mask)
    hue = hue_degrees(f[core if core.any() else mask].mean(axis=0))  # hue of the mean colour
    colour = _PALETTE[int(np.argmin(np.abs((_PALETTE_HUES - hue + 180.0) % 360.0 - 180.0)))]
    return FrameView(colour, _shape(mask, cx, cy), cx, cy, noise,
                     _edge_width(chroma, mask, core), blockiness)
