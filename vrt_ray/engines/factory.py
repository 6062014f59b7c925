"""The engine a run config asks for (`rollout.engine`), built from a checkpoint directory."""
from __future__ import annotations

from omegaconf import DictConfig

from vrt_ray.engines.base import SamplingParams
from vrt_ray.models import load_policy, load_processor


def build_engine(model_dir: str, cfg: DictConfig, seed: int = 0, policy_version: int = 0):
    """`hf`: the policy in this process (transformers generate); `vllm`: a `vllm.LLM` over the
    same directory, with the `rollout.vllm.*` settings and the run's sampling."""
    processor = load_processor(model_dir, cfg.video.min_pixels, cfg.video.max_pixels)
    if cfg.rollout.engine == "hf":
        from vrt_ray.engines.hf import HFEngine

        model = load_policy(model_dir, cfg.model.dtype, cfg.model.attn_implementation)
        return HFEngine(model, processor, seed=seed, policy_version=policy_version)
    from vrt_ray.engines.vllm import VLLMEngine

    v, s = cfg.rollout.vllm, cfg.rollout.sampling
    return VLLMEngine(model_dir, processor,
                      SamplingParams(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k),
                      gpu_memory_utilization=v.gpu_memory_utilization,
                      tensor_parallel_size=v.tensor_parallel_size,
                      max_model_len=v.max_model_len, enforce_eager=v.enforce_eager,
                      enable_prefix_caching=v.enable_prefix_caching, dtype=cfg.model.dtype,
                      seed=seed, policy_version=policy_version)
