"""Synthetic scenes: the prompt grammar, per-frame object states, and rendering to RGB frames.

A scene is an object of a colour and shape moving in a straight line in one of four directions
over a neutral background. Everything is drawn with numpy at the frame size; all lengths are
given for a 112-pixel frame and scaled with the size. Backgrounds are grey levels (no colour),
objects are saturated colours: that is what lets perception find the object by its chroma.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (230, 40, 40), "orange": (240, 140, 20), "yellow": (230, 210, 30),
    "green": (40, 190, 60), "cyan": (30, 200, 210), "blue": (40, 80, 230),
    "purple": (150, 50, 220), "pink": (235, 60, 170),
}
SHAPES = ("circle", "square", "triangle", "diamond", "ring")
DIRECTIONS: Dict[str, Tuple[int, int]] = {  # unit step in image coordinates (x right, y down)
    "right": (1, 0), "left": (-1, 0), "up": (0, -1), "down": (0, 1)}
BACKGROUNDS = ("dark", "grey", "light", "gradient")
VQ_KINDS = ("noise", "blur", "blocking")

REF_SIZE = 112  # lengths below are in pixels of a frame this size
RADIUS = 13.5  # object radius
MARGIN = 4.0  # free pixels between the object and the frame edge at the ends of the path
NOISE_SIGMA = 24.0  # grey levels, added equally to R, G, B (luminance noise)
BLUR_SIGMA = 3.0
BLOCK = 8  # blocking: each 8x8 block replaced by its mean
_SUPERSAMPLE = 4


def hue_degrees(rgb: np.ndarray) -> np.ndarray:
    """Hue in degrees [0, 360) of float RGB values (last axis)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.degrees(np.arctan2(np.sqrt(3.0) * (g - b), 2.0 * r - g - b)) % 360.0


def prompt_text(colour: str, shape: str, direction: str, background: str) -> str:
    """The prompt of a scene, e.g. 'a red circle moving right over a dark background'."""
    article = "an" if colour[0] in "aeiou" else "a"
    return f"{article} {colour} {shape} moving {direction} over a {background} background"


def parse_prompt(prompt: str) -> Tuple[str, str, str, str]:
    """(colour, shape, direction, background) of a prompt written by `prompt_text`."""
    words = prompt.split()
    if (len(words) != 9 or words[0] not in ("a", "an") or words[3] != "moving" or words[1] not in COLOURS
            or words[2] not in SHAPES or words[4] not in DIRECTIONS or words[7] not in BACKGROUNDS):
        raise ValueError(f"not a synthetic-scene prompt: {prompt!r}")
    return words[1], words[2], words[4], words[7]


@dataclass(frozen=True)
class FrameState:
    """What one frame shows: the rendered truth (centre in pixels, VQ degradation or None)."""

    colour: str
    shape: str
    x: float
    y: float
    vq: Optional[str] = None


def background(kind: str, size: int) -> np.ndarray:
    """The HxWx3 float background of a scene."""
    if kind == "gradient":
        column = np.linspace(40.0, 190.0, size)[:, None]
        grey = np.broadcast_to(column, (size, size))
    else:
        grey = np.full((size, size), {"dark": 30.0, "grey": 110.0, "light": 190.0}[kind])
    return np.repeat(grey[:, :, None], 3, axis=2).astype(np.float32)


def _inside(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Boolean: which offsets from the shape's centroid lie inside it."""
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (d2 >= (0.5 * r) ** 2)
    if shape == "square":
        return (np.abs(dx) <= 0.85 * r) & (np.abs(dy) <= 0.85 * r)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.2 * r
    if shape == "triangle":  # apex up, centroid at the origin: apex at -2h/3, base at +h/3
        h, half_base = 2.0 * r, 1.15 * r
        from_apex = dy + 2.0 * h / 3.0
        return (dy <= h / 3.0) & (np.abs(dx) <= half_base * from_apex / h)
    raise ValueError(f"unknown shape {shape!r}")


def coverage(shape: str, x: float, y: float, r: float, size: int) -> np.ndarray:
    """Fraction of each pixel covered by the shape centred at (x, y) (pixel centres at +0.5)."""
    cov = np.zeros((size, size), dtype=np.float32)
    reach = 1.25 * r + 2
    x0, x1 = max(0, int(x - reach)), min(size, int(x + reach) + 1)
    y0, y1 = max(0, int(y - reach)), min(size, int(y + reach) + 1)
    if x0 >= x1 or y0 >= y1:
        return cov
    s = _SUPERSAMPLE
    xs = x0 + (np.arange((x1 - x0) * s) + 0.5) / s - x
    ys = y0 + (np.arange((y1 - y0) * s) + 0.5) / s - y
    inside = _inside(shape, xs[None, :], ys[:, None], r)
    cov[y0:y1, x0:x1] = inside.reshape(y1 - y0, s, x1 - x0, s).mean(axis=(1, 3))
    return cov


def render(state: FrameState, bg: np.ndarray, rng: np.random.Generator,
           radius: float = RADIUS) -> np.ndarray:
    """The HxWx3 uint8 frame of a state over a background (rng draws the noise); `radius` in
    pixels of a 112-pixel frame."""
    from scipy.ndimage import gaussian_filter

    size = bg.shape[0]
    scale = size / REF_SIZE
    cov = coverage(state.shape, state.x, state.y, radius * scale, size)[:, :, None]
    frame = bg + (np.asarray(COLOURS[state.colour], dtype=np.float32) - bg) * cov
    if state.vq == "noise":
        frame = frame + rng.normal(0.0, NOISE_SIGMA, size=(size, size, 1)).astype(np.float32)
    elif state.vq == "blur":
        frame = gaussian_filter(frame, sigma=(BLUR_SIGMA * scale, BLUR_SIGMA * scale, 0))
    elif state.vq == "blocking":
        b = BLOCK
        h, w = size // b * b, size // b * b
        blocks = frame[:h, :w].reshape(h // b, b, w // b, b, 3).mean(axis=(1, 3), keepdims=True)
        frame[:h, :w] = np.broadcast_to(blocks, (h // b, b, w // b, b, 3)).reshape(h, w, 3)
    return np.clip(frame + 0.5, 0, 255).astype(np.uint8)
