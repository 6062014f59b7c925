"""The transformers engine (CPU default, also GPU): batched `generate` with per-token log-probs.

Each prompt is prefilled alone (all but its last token, with its images), the key/value caches
are merged left-padded, and `generate` decodes the batch together from there. A left-padded
batch prefill would attend over the longest context with a mask, off the causal fast path: for
20 turns of 2.3-2.9k tokens it cost 2.6x the prompts alone (docs/engines.md).

Log-probs are those of the temperature-scaled, unfiltered distribution (log_softmax(logits / T),
T = 1 when greedy): what the learner recomputes, so the importance ratio starts at 1. Vision
placeholder tokens are never sampled.
"""
from __future__ import annotations

import inspect
from typing import Hashable, List, Sequence, Tuple

import numpy as np
import torch
from transformers import DynamicCache, GenerationConfig, LogitsProcessorList

from vrt_ray.engines.base import Generation, Prompt, SamplingParams


VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>",
                 "<|video_pad|>")


def vision_token_ids(tokenizer) -> List[int]:
    """Ids of the vision placeholder tokens: the policy must never write them (a generated
    <|image_pad|> would be read as an image slot when the turn is scored again)."""
    vocab = tokenizer.get_vocab()
    return sorted(vocab[t] for t in VISION_TOKENS if t in vocab)


def _left_padded(states: torch.Tensor, length: int) -> torch.Tensor:
    """[1, heads, n, dim] cache states as [1, heads, length, dim], zeros in front (masked)."""
    return torch.nn.functional.pad(states, (0, 0, length - states.shape[2], 0))


class HFEngine:
    def __init__(self, model, processor, seed: int = 0, policy_version: int = 0,
                 logits_processors: Sequence = ()):
        """`logits_processors` (transformers LogitsProcessor objects) steer decoding, e.g. to
        constrain it; reported log-probs stay those of the model's own distribution."""
        self.model = model.eval()
        self.logits_processors = list(logits_processors)
        self.processor = processor
        self.processor.tokenizer.padding_side = "left"
        tok = processor.tokenizer
        self.stop_ids = sorted({tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")
                                if t in tok.get_vocab()})
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.stop_ids[-1]
        self.suppress_ids = vision_token_ids(tok)
        # transformers 5 renamed `past_key_values` to `cache` (in arguments and outputs)
        self._cache_arg = ("cache" if "cache" in inspect.signature(model.forward).parameters
                           else "past_key_values")
        self.generator_seed = seed
        self.policy_version = policy_version
        self._pending: List[Tuple[Hashable, Prompt, SamplingParams]] = []

    def update_weights(self, named_tensors, version: int) -> None:
        """Load (name, tensor) pairs of the policy's state dict in place; new policy version."""
        missing, unexpected = self.model.load_state_dict(dict(named_tensors), strict=False)
        if unexpected:
            raise ValueError(f"unexpected weights: {sorted(unexpected)[:5]}")
        self.policy_version = version

    def submit(self, key: Hashable, prompt: Prompt, sampling: SamplingParams) -> None:
        self._pending.append((key, prompt, sampling))

    def collect(self, max_batch: int) -> List[Tuple[Hashable, Generation]]:
        """One batched generate over the oldest pending requests that share their sampling."""
        if not self._pending:
            return []
        sampling = self._pending[0][2]
        batch, rest = [], []
        for request in self._pending:
            (batch if request[2] == sampling and len(batch) < max_batch else rest).append(request)
        self._pending = rest
        generations = self.generate([prompt for _, prompt, _ in batch], sampling)
        return [(key, gen) for (key, _, _), gen in zip(batch, generations)]

    @torch.no_grad()
    def generate(self, prompts: Sequence[Prompt], sampling: SamplingParams) -> List[Generation]:
        inputs = self._prefilled(prompts)
        greedy = sampling.temperature <= 0
        # Every sampling knob set explicitly: transformers fills unset (None) ones from the
        # checkpoint's generation_config (Qwen2.5-VL-Instruct ships a repetition penalty, top-k
        # and top-p), which would change what is sampled behind the reported log-probs.
        config = GenerationConfig(
            max_new_tokens=sampling.max_new_tokens, do_sample=not greedy,
            temperature=1.0 if greedy else sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p, top_k=0 if greedy else sampling.top_k,
            min_p=0.0, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0,
            repetition_penalty=1.0, no_repeat_ngram_size=0, eos_token_id=self.stop_ids,
            pad_token_id=self.pad_id, suppress_tokens=self.suppress_ids,
            output_logits=True, return_dict_in_generate=True)
        kwargs = {"generation_config": config}
        if self.logits_processors:
            kwargs["logits_processor"] = LogitsProcessorList(self.logits_processors)
        if not greedy:
            torch.manual_seed(self.generator_seed)
            self.generator_seed += 1
        out = self.model.generate(**inputs, **kwargs)
        temperature = 1.0 if greedy else sampling.temperature
        logits = torch.stack(out.logits, dim=1).float() / temperature  # [batch, steps, vocab]
        logprobs = torch.log_softmax(logits, dim=-1)
        prompt_len = inputs["input_ids"].shape[1]
        results = []
        for row in range(len(prompts)):
            mask = inputs["attention_mask"][row].bool()
            new = out.sequences[row, prompt_len:].tolist()
            stop = next((i for i, t in enumerate(new) if t in self.stop_ids), None)
            n = len(new) if stop is None else stop + 1
            token_logprobs = logprobs[row, torch.arange(n), torch.tensor(new[:n])].tolist()
            results.append(Generation(
                prompt_ids=inputs["input_ids"][row][mask.cpu()].tolist(), token_ids=new[:n],
                logprobs=token_logprobs, finish_reason="length" if stop is None else "stop"))
        return results

    def _encode(self, prompt: Prompt):
        kwargs = {}
        if prompt.images:
            kwargs["images"] = list(prompt.images)
        if prompt.videos:
            kwargs["videos"] = [np.stack(v) for v in prompt.videos]
            kwargs["do_sample_frames"] = False
        return self.processor(text=[prompt.text], return_tensors="pt", **kwargs).to(self.model.device)

    def _prefilled(self, prompts: Sequence[Prompt]) -> dict:
        """`generate`'s inputs: the prompts' ids left-padded, their attention mask, and a cache
        holding every prompt but its last token, each prefilled alone. The model's M-RoPE offsets
        (`rope_deltas`, position minus index after the last image, what Qwen2-VL models keep to
        go on decoding from a cache) are set per row."""
        ids, layers, deltas = [], [], []
        mrope = hasattr(getattr(self.model, "model", None), "rope_deltas")
        for prompt in prompts:
            enc = self._encode(prompt)
            row = enc["input_ids"][0]
            head = {k: (v[:, :-1] if k in ("input_ids", "attention_mask", "mm_token_type_ids")
                        else v) for k, v in enc.items()}
            if mrope:
                self.model.model.rope_deltas = None
            cache = getattr(self.model(**head, use_cache=True, logits_to_keep=1), self._cache_arg)
            layers.append([(layer.keys, layer.values) for layer in cache.layers])
            delta = self.model.model.rope_deltas if mrope else None
            deltas.append(torch.zeros(1, 1, dtype=torch.long, device=row.device) if delta is None
                          else delta.reshape(1, 1))  # a text-only prompt: positions are indices
            ids.append(row)
        length = max(len(r) for r in ids)
        input_ids = torch.full((len(ids), length), self.pad_id, dtype=torch.long,
                               device=self.model.device)
        attention_mask = torch.zeros_like(input_ids)
        for i, row in enumerate(ids):
            input_ids[i, length - len(row):] = row
            attention_mask[i, length - len(row):] = 1
        merged = DynamicCache()
        for layer_idx, rows in enumerate(zip(*layers)):  # rows: (keys, values) of each prompt
            keys, values = (torch.cat([_left_padded(kv[j], length - 1) for kv in rows])
                            for j in (0, 1))
            merged.update(keys, values, layer_idx)
        if mrope:
            self.model.model.rope_deltas = torch.cat(deltas)
        return {"input_ids": input_ids, "attention_mask": attention_mask, self._cache_arg: merged}
