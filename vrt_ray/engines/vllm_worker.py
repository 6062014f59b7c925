"""Worker side of the vLLM engine's weight update: mixed into each vLLM worker
(`worker_extension_cls`) and reached through `LLM.collective_rpc`.

vLLM's RPC path serialises arguments with msgpack and hands untyped tensors to the worker as
plain lists, so tensors travel as (name, dtype, shape, raw bytes), which msgpack carries as is.
"""
from __future__ import annotations

from typing import Iterable, List, Tuple

import torch

Packed = Tuple[str, str, Tuple[int, ...], bytes]


def pack_weights(named_tensors: Iterable[Tuple[str, torch.Tensor]]) -> List[Packed]:
    packed = []
    for name, tensor in named_tensors:
        tensor = tensor.detach().to("cpu").contiguous()
        packed.append((name, str(tensor.dtype).removeprefix("torch."), tuple(tensor.shape),
                       tensor.view(torch.uint8).numpy().tobytes()))
    return packed


def unpack_weights(packed: Iterable[Packed]) -> List[Tuple[str, torch.Tensor]]:
    return [(name, torch.frombuffer(bytearray(data), dtype=getattr(torch, dtype)).reshape(shape))
            for name, dtype, shape, data in packed]


class WeightLoader:
    def vrt_load_weights(self, packed: List[Packed]) -> int:
        """Load packed (HF name, tensor) pairs into this worker's model in place through the
        worker's own `reload_weights` (which re-runs the kernel repacking that plain
        `load_weights` cannot redo after start-up); returns their count."""
        weights = unpack_weights(packed)
        self.reload_weights(weights_iterator=iter(weights), is_checkpoint_format=True)
        return len(weights)
