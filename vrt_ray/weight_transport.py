"""Weight transfer from learner rank 0 to the rollout engines over a gloo group of their own
(DESIGN.md §3 step 8, CPU path): a TCP store hosted by the sender, a header naming every tensor
(name, shape, dtype), then the tensors broadcast in flat same-dtype buckets. Receivers need no
copy of the weights' layout (a vLLM engine holds its own), only the header. The learner's
DeepSpeed process group is not involved.
"""
from __future__ import annotations

import json
from datetime import timedelta
from typing import Dict, Iterator, List, Mapping, Tuple

import torch
import torch.distributed as dist

BUCKET_BYTES = 256 << 20


def open_group(host: str, port: int, rank: int, world_size: int,
               timeout_s: float = 300.0) -> dist.ProcessGroupGloo:
    """Join the transfer group; rank 0 hosts the store at `host:port`."""
    timeout = timedelta(seconds=timeout_s)
    store = dist.TCPStore(host, port, world_size, is_master=rank == 0, timeout=timeout,
                          wait_for_workers=False)
    return dist.ProcessGroupGloo(store, rank, world_size, timeout)


def buckets(state: Mapping[str, torch.Tensor], max_bytes: int = BUCKET_BYTES
            ) -> Iterator[List[Tuple[str, torch.Tensor]]]:
    """Consecutive same-dtype tensors of `state` grouped up to `max_bytes` each."""
    bucket: List[Tuple[str, torch.Tensor]] = []
    used = 0
    for name, tensor in state.items():
        size = tensor.numel() * tensor.element_size()
        if bucket and (used + size > max_bytes or tensor.dtype != bucket[0][1].dtype):
            yield bucket
            bucket, used = [], 0
        bucket.append((name, tensor))
        used += size
    if bucket:
        yield bucket


def send_state(group: dist.ProcessGroupGloo, state: Mapping[str, torch.Tensor],
               max_bytes: int = BUCKET_BYTES) -> int:
    """Broadcast `state` from rank 0; returns the tensor bytes sent."""
    header = [[name, list(t.shape), str(t.dtype).removeprefix("torch.")] for name, t in state.items()]
    payload = torch.frombuffer(bytearray(json.dumps(header).encode()), dtype=torch.uint8)
    _broadcast(group, torch.tensor([payload.numel()], dtype=torch.int64))
    _broadcast(group, payload)
    sent = 0
    for bucket in buckets(state, max_bytes):
        flat = torch.cat([t.detach().reshape(-1).cpu() for _, t in bucket])
        _broadcast(group, flat)
        sent += flat.numel() * flat.element_size()
    return sent


def receive_state(group: dist.ProcessGroupGloo, max_bytes: int = BUCKET_BYTES
                  ) -> Dict[str, torch.Tensor]:
    """The state dict rank 0 broadcasts, in its order."""
    length = torch.zeros(1, dtype=torch.int64)
    _broadcast(group, length)
    payload = torch.empty(int(length), dtype=torch.uint8)
    _broadcast(group, payload)
    layout = {name: torch.empty(shape, dtype=getattr(torch, dtype), device="meta")
              for name, shape, dtype in json.loads(bytes(payload.tolist()).decode())}
    out: Dict[str, torch.Tensor] = {}
    for bucket in buckets(layout, max_bytes):
        flat = torch.empty(sum(t.numel() for _, t in bucket), dtype=bucket[0][1].dtype)
        _broadcast(group, flat)
        offset = 0
        for name, tensor in bucket:
            out[name] = flat[offset:offset + tensor.numel()].view(tensor.shape)
            offset += tensor.numel()
    return out


def _broadcast(group: dist.ProcessGroupGloo, tensor: torch.Tensor) -> None:
    options = dist.BroadcastOptions()
    options.rootRank = 0
    group.broadcast([tensor], options).wait()
