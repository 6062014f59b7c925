"""The tiny model's shape (`TinySpec`) and `key=value` changes to it; no torch, so the run
config can check `model.tiny_spec` when it loads."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Sequence

from vrt_ray.errors import VrtError


@dataclass(frozen=True)
class TinySpec:
    """Shape of the tiny model: a few million parameters, head_dim 64 in text and vision."""

    bpe_vocab: int = 2048
    hidden_size: int = 128
    intermediate_size: int = 512
    num_layers: int = 4
    num_heads: int = 2
    num_kv_heads: int = 1
    vision_depth: int = 2
    vision_hidden: int = 64
    vision_heads: int = 1
    vision_intermediate: int = 128
    min_pixels: int = 56 * 56
    max_pixels: int = 112 * 112
    max_position_embeddings: int = 32768
    rope_layout: str = "uniform"  # ROPE_LAYOUTS; docs/tiny_model.md measures both
    rope_theta: float = 10.0  # the uniform layout's base; not Qwen's 1e6, which hides position


ROPE_LAYOUTS = ("split", "uniform")


def tiny_spec(overrides: Sequence[str] = (), base: TinySpec = TinySpec()) -> TinySpec:
    """`base` with `key=value` overrides of its fields (`hidden_size=256`, `num_heads=4`);
    a clear error for an unknown field, a value of the wrong type, a size that is not positive
    or a width that does not split into the heads."""
    kinds = {f.name: f.type for f in fields(TinySpec)}
    changes = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in kinds:
            raise VrtError(f"tiny model spec {item!r}: expected KEY=VALUE, KEY one of "
                           f"{', '.join(kinds)}")
        kind = {"int": int, "float": float}.get(kinds[key], str)
        try:
            changes[key] = kind(value)
        except ValueError:
            raise VrtError(f"tiny model spec {item!r}: {key} must be {kind.__name__}") from None
    spec = replace(base, **changes)
    if spec.rope_layout not in ROPE_LAYOUTS:
        raise VrtError(f"tiny model spec: rope_layout {spec.rope_layout!r} is not one of "
                       f"{', '.join(ROPE_LAYOUTS)}")
    small = [f.name for f in fields(spec)
             if f.type in ("int", "float") and getattr(spec, f.name) <= 0]
    if small:
        raise VrtError(f"tiny model spec: {', '.join(small)} must be > 0")
    if spec.hidden_size % spec.num_heads or spec.num_heads % spec.num_kv_heads:
        raise VrtError(f"tiny model spec: hidden_size {spec.hidden_size} must split into "
                       f"num_heads {spec.num_heads}, and those into num_kv_heads "
                       f"{spec.num_kv_heads}")
    return spec
