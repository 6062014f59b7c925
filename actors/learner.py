"""The learner group: `world_size` Ray actors in one placement group, each a DeepSpeed engine
over the policy (ZeRO stage from config; gloo + fp32 on CPU, NCCL + bf16 on GPU).

The group shards each batch (vrt_ray.learner_core.make_shards) so every rank runs the same
number of forward/backward passes; DeepSpeed averages the gradients, clips, and steps AdamW on
every rank, so all ranks end a step with the same weights. Each rank's process group is set
up from MASTER_ADDR / MASTER_PORT / RANK / WORLD_SIZE (docs/learner.md says why).
"""
from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from vrt_ray.config import GRPOConfig, LearnerConfig
from vrt_ray.learner_core import (Shard, TrainSequence, grpo_loss_for, make_shards,
                                  preload_frames, sequence_logprobs, sft_loss_for)
from vrt_ray.model_inputs import PixelBudget

if TYPE_CHECKING:
    import torch


def resolved_backend(cfg: LearnerConfig) -> str:
    if cfg.backend != "auto":
        return cfg.backend
    return "nccl" if cfg.num_gpus_per_worker > 0 else "gloo"


def resolved_precision(cfg: LearnerConfig) -> str:
    if cfg.precision != "auto":
        return cfg.precision
    return "bf16" if cfg.num_gpus_per_worker > 0 else "fp32"


def deepspeed_config(cfg: LearnerConfig, world_size: int) -> dict:
    """Micro-batches are ours (token budget, varying count), so DeepSpeed's batch bookkeeping is
    set to 1 and accumulation is unmanaged: backward() accumulates, step() reduces and steps."""
    return {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "train_batch_size": world_size,
        "managed_gradient_accumulation": False,
        "gradient_clipping": cfg.max_grad_norm,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": resolved_precision(cfg) == "bf16"},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
    }


def _scheduler(cfg: LearnerConfig, total_steps: Optional[int]):
    from transformers import get_scheduler

    if cfg.lr_schedule != "constant" and not total_steps:
        raise ValueError(f"learner.lr_schedule = {cfg.lr_schedule}: needs the run's total steps")
    name = "constant_with_warmup" if cfg.lr_schedule == "constant" else cfg.lr_schedule
    return lambda optimizer: get_scheduler(name, optimizer, num_warmup_steps=cfg.warmup_steps,
                                           num_training_steps=total_steps)


def _weighted_mean(rows: Sequence[Dict[str, float]], weights: Sequence[float]) -> Dict[str, float]:
    total = sum(weights)
    if not rows:
        return {}
    return {k: sum(r[k] * w for r, w in zip(rows, weights)) / total if total else 0.0
            for k in rows[0]}


class LearnerWorker:
    """One rank: a DeepSpeed engine over the policy. Every method that runs the model is a
    collective: the group calls it on all ranks at once."""

    def __init__(self, cfg: LearnerConfig, model_path: str, rank: int, world_size: int,
                 total_steps: Optional[int] = None, pixels: Optional[PixelBudget] = None,
                 grpo: Optional[GRPOConfig] = None, lr: Optional[float] = None):
        from vrt_ray.frame_cache import FrameCache
        from vrt_ray.models import load_processor

        self.cfg, self.model_path, self.rank, self.world_size = cfg, model_path, rank, world_size
        self.total_steps, self.grpo = total_steps, grpo or GRPOConfig()
        self.lr = cfg.lr if lr is None else lr
        self.processor = load_processor(model_path, *((pixels.min_pixels, pixels.max_pixels)
                                                      if pixels else ()))
        self.cache = FrameCache(256 << 20)
        self.engine = None
        self.version = 0
        self.transfer = None  # (host, port, group) of the weight-transfer group hosted here

    def address(self) -> tuple:
        """This node's IP and a free port, for rank 0 to host the rendezvous."""
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def init(self, master_addr: str, master_port: int) -> float:
        """Join the process group and build the DeepSpeed engine; returns the seconds taken."""
        started = time.perf_counter()
        import deepspeed
        import torch

        from vrt_ray.models import load_policy

        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port),
                          RANK=str(self.rank), WORLD_SIZE=str(self.world_size),
                          LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
        if self.cfg.num_gpus_per_worker > 0:
            torch.cuda.set_device(0)  # Ray shows each worker its own GPU only
        deepspeed.init_distributed(dist_backend=resolved_backend(self.cfg),
                                   auto_mpi_discovery=False, verbose=False)
        model = load_policy(self.model_path)
        if self.cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
        optimizer = torch.optim.AdamW(model.parameters(), lr=self.lr,
                                      betas=tuple(self.cfg.adam_betas),
                                      weight_decay=self.cfg.weight_decay)
        self.engine, *_ = deepspeed.initialize(
            model=model, optimizer=optimizer, config=deepspeed_config(self.cfg, self.world_size),
            lr_scheduler=_scheduler(self.cfg, self.total_steps))
        return time.perf_counter() - started

    @property
    def model(self):
        return self.engine.module

    def get_version(self) -> int:
        return self.version

    def train_grpo(self, shard: Shard, temperature: float = 1.0) -> Dict[str, float]:
        """One optimizer step of the GRPO loss over the shard's micro-batches, log-probs taken
        at the sampling `temperature` (as the engine reported them)."""
        g = self.grpo
        started = time.perf_counter()
        self.engine.train()
        rows, counts = [], []
        for group in shard.micro_batches:
            items = [shard.items[i] for i, _ in group]
            refs = None if shard.ref_logprobs is None else [shard.ref_logprobs[i] for i, _ in group]
            terms = grpo_loss_for(
                self.model, self.processor, items, [shard.advantages[i] for i, _ in group], refs,
                clip_low=g.clip_low, clip_high=g.clip_high, beta=g.beta,
                kl_estimator=g.kl_estimator, loss_agg=g.loss_agg, temperature=temperature,
                weights=[w for _, w in group], cache=self.cache)
            if g.loss_agg == "token-mean":
                share = terms.action_tokens / max(shard.total_action_tokens, 1)
            else:
                share = terms.sequences / max(shard.total_sequences, 1)
            self.engine.backward(terms.result.loss * share * shard.world_size)
            r = terms.result
            rows.append({"loss": float(r.loss), "pg_loss": r.pg_loss, "kl": r.kl,
                         "clip_fraction": r.clip_fraction, "ratio_mean": r.ratio_mean,
                         "entropy": terms.entropy})
            counts.append(terms.action_tokens)
        return self._step(rows, counts, started)

    def train_sft(self, shard: Shard) -> Dict[str, float]:
        """One optimizer step of cross-entropy on the shard's action tokens."""
        started = time.perf_counter()
        self.engine.train()
        rows, counts = [], []
        for group in shard.micro_batches:
            loss, count = sft_loss_for(self.model, self.processor,
                                       [shard.items[i] for i, _ in group],
                                       weights=[w for _, w in group], cache=self.cache)
            self.engine.backward(loss * count / max(shard.total_action_tokens, 1) * shard.world_size)
            rows.append({"loss": float(loss)})
            counts.append(count)
        return self._step(rows, counts, started)

    def _step(self, rows, counts, started) -> Dict[str, float]:
        self.engine.step()
        self.version += 1
        metrics = _weighted_mean(rows, counts)
        norm = self.engine.get_global_grad_norm()
        metrics.update(grad_norm=float(norm) if norm is not None else 0.0,
                       lr=float(self.engine.get_lr()[0]), action_tokens=float(sum(counts)),
                       step_s=time.perf_counter() - started)
        return metrics

    def preload(self, items: Sequence[TrainSequence]) -> int:
        """Decode the items' frames into this rank's frame cache (`preload_frames`)."""
        return preload_frames(items, self.cache)

    def logprobs(self, shard: Shard) -> List[Optional[List[float]]]:
        """Per-token log-probs of each shard item with a nonzero weight, on its action tokens
        (position p: log p(ids[p] | ids[:p]); 0 elsewhere); one forward per plan entry, so ranks
        run as many as their peers."""
        import torch

        self.engine.eval()
        out: List[Optional[List[float]]] = [None] * len(shard.items)
        with torch.no_grad():
            for i, w in (entry for group in shard.micro_batches for entry in group):
                values = sequence_logprobs(self.model, self.processor, shard.items[i],
                                           cache=self.cache, action_only=True).tolist()
                if w:
                    out[i] = values
        return out

    def weights(self, rank0_only: bool = True) -> Optional[Dict[str, "torch.Tensor"]]:
        """The full state dict as CPU tensors (ZeRO-3: gathered on every rank first); None on
        ranks other than 0 when `rank0_only`."""
        import deepspeed

        params = list(self.model.parameters())
        with deepspeed.zero.GatheredParameters(params, enabled=self.cfg.zero_stage == 3):
            state = self.model.state_dict()  # on every rank: under ZeRO-3 it may communicate
            if rank0_only and self.rank != 0:
                return None
            return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}

    def send_weights(self, host: str, port: int, world_size: int, timeout_s: float) -> float:
        """Broadcast the weights to the rollout engines over the transfer group hosted by rank 0
        at `host:port` (every rank takes part in the ZeRO-3 gather); returns rank 0's seconds."""
        from vrt_ray.weight_transport import open_group, send_state

        state = self.weights(rank0_only=True)
        if state is None:
            return 0.0
        started = time.perf_counter()
        if self.transfer is None or self.transfer[:2] != (host, port):
            self.transfer = (host, port, open_group(host, port, 0, world_size, timeout_s))
        send_state(self.transfer[2], state)
        return time.perf_counter() - started

    def save_state(self, out: str) -> None:
        """Every rank writes its part of the DeepSpeed state (weights, optimizer, scheduler)
        under `out`."""
        self.engine.save_checkpoint(out, tag="state", client_state={"version": self.version},
                                    save_latest=False)

    def load_state(self, path: str) -> int:
        """Restore what `save_state` wrote; returns the policy version it had."""
        loaded, client = self.engine.load_checkpoint(path, tag="state")
        if loaded is None:
            raise FileNotFoundError(f"{path}: no learner state to resume from")
        self.version = int(client["version"])
        return self.version

    def save(self, out: str) -> Optional[str]:
        """Rank 0 writes a Hugging Face directory (policy + processor) to a temporary path beside
        `out`, then renames it into place."""
        state = self.weights(rank0_only=True)
        if state is None:
            return None
        from vrt_ray.models import save_checkpoint

        return str(save_checkpoint(out, self.model, self.processor, state_dict=state))


class LearnerGroup:
    """`cfg.world_size` LearnerWorkers in one placement group, driven in lockstep."""

    def __init__(self, cfg: LearnerConfig, model_path: str, total_steps: Optional[int] = None,
                 pixels: Optional[PixelBudget] = None, grpo: Optional[GRPOConfig] = None,
                 lr: Optional[float] = None, env: Optional[Dict[str, str]] = None):
        started = time.perf_counter()
        self.cfg = cfg
        bundle = {"CPU": cfg.num_cpus_per_worker}
        if cfg.num_gpus_per_worker > 0:
            bundle["GPU"] = cfg.num_gpus_per_worker
        self.pg = placement_group([dict(bundle)] * cfg.world_size, strategy="PACK")
        ray.get(self.pg.ready())
        env_vars = dict(env or {})
        if cfg.num_gpus_per_worker == 0:
            env_vars["DS_ACCELERATOR"] = "cpu"
        actor = ray.remote(LearnerWorker)
        self.workers = [
            actor.options(
                num_cpus=cfg.num_cpus_per_worker, num_gpus=cfg.num_gpus_per_worker,
                runtime_env={"env_vars": env_vars},
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=self.pg, placement_group_bundle_index=rank),
            ).remote(cfg, model_path, rank, cfg.world_size, total_steps, pixels, grpo, lr)
            for rank in range(cfg.world_size)]
        addr, port = ray.get(self.workers[0].address.remote())
        self.init_s = _gather([w.init.remote(addr, port) for w in self.workers])
        self.start_s = time.perf_counter() - started

    def _all(self, method: str, shards: Sequence, *args) -> list:
        return _gather([getattr(w, method).remote(s, *args) for w, s in zip(self.workers, shards)])

    def _shards(self, items, advantages=None, ref_logprobs=None):
        return make_shards(items, self.cfg.world_size, self.cfg.micro_batch_tokens,
                           advantages, ref_logprobs, same_shape=self.cfg.zero_stage == 3)

    def train_grpo(self, items: Sequence[TrainSequence], advantages: Sequence[float],
                   ref_logprobs: Optional[Sequence[Optional[Sequence[float]]]] = None,
                   temperature: float = 1.0) -> Dict[str, float]:
        """One GRPO step over the batch; `advantages` per sequence (its episode's), reference
        log-probs per sequence aligned with its ids, both scored at the sampling
        `temperature`. Returns the ranks' mean metrics."""
        return _mean(self._all("train_grpo", self._shards(items, advantages, ref_logprobs),
                               temperature))

    def train_sft(self, items: Sequence[TrainSequence]) -> Dict[str, float]:
        return _mean(self._all("train_sft", self._shards(items)))

    def preload(self, items: Sequence[TrainSequence]) -> int:
        """Decode every frame the items show into each rank's frame cache, before steps that
        draw them at random; returns the frames a rank decoded."""
        ref = ray.put(list(items))
        return _gather([w.preload.remote(ref) for w in self.workers])[0]

    def logprobs(self, items: Sequence[TrainSequence]) -> List[List[float]]:
        """Per-token log-probs of every sequence, computed across the ranks."""
        shards = make_shards(items, self.cfg.world_size, max_tokens=1)
        out: List[Optional[List[float]]] = [None] * len(items)
        for shard, values in zip(shards, self._all("logprobs", shards)):
            for i, v in zip(shard.indices, values):
                if v is not None:
                    out[i] = v
        return out

    def weights(self) -> Dict[str, "torch.Tensor"]:
        return ray.get(self.weights_ref())

    def weights_ref(self) -> "ray.ObjectRef":
        """The full state dict in the object store (rank 0's; every rank joined the gather)."""
        refs = [w.weights.remote() for w in self.workers]
        _gather(refs)
        return refs[0]

    def transfer_address(self) -> tuple:
        """Where rank 0 can host a weight-transfer group: its node IP and a free port."""
        return ray.get(self.workers[0].address.remote())

    def send_weights(self, host: str, port: int, world_size: int, timeout_s: float) -> list:
        """Start the broadcast on every rank; the receivers must join it (refs returned)."""
        return [w.send_weights.remote(host, port, world_size, timeout_s) for w in self.workers]

    def save(self, out: str) -> str:
        return _gather([w.save.remote(out) for w in self.workers])[0]

    def save_state(self, out: str) -> None:
        _gather([w.save_state.remote(out) for w in self.workers])

    def load_state(self, path: str) -> int:
        return _gather([w.load_state.remote(path) for w in self.workers])[0]

    def version(self) -> int:
        return ray.get(self.workers[0].get_version.remote())

    def shutdown(self) -> None:
        for w in self.workers:
            ray.kill(w)
        remove_placement_group(self.pg)


def _gather(refs: list) -> list:
    """Results of a collective call on every rank; the first rank to fail raises at once (its
    peers would otherwise wait for it in the collective forever)."""
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        ray.get(ready)
    return ray.get(refs)


def _mean(rows: Sequence[Dict[str, float]]) -> Dict[str, float]:
    """The ranks' mean metrics, but the step's total action tokens and its slowest rank's time."""
    out = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
    out.update(action_tokens=sum(r["action_tokens"] for r in rows),
               step_s=max(r["step_s"] for r in rows))
    return out
