"""Load a Qwen2.5-VL policy and its processor; build the tiny random Qwen2.5-VL.

Any Qwen2.5-VL checkpoint directory loads through `AutoModelForImageTextToText` and
`AutoProcessor`, strictly from local files. The tiny model (DESIGN.md §10) is made of the real
transformers classes with random weights, head_dim 64 (what vLLM's kernels accept), a byte-level
BPE tokenizer trained on protocol text with every Qwen2.5-VL special token, and a chat template
that renders like Qwen2.5-VL-Instruct's, so the same code path serves it and a 7B checkpoint.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import torch
from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import (AutoModelForImageTextToText, AutoProcessor, GenerationConfig,
                          Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration,
                          Qwen2_5_VLProcessor, Qwen2Tokenizer, Qwen2VLImageProcessor,
                          Qwen2VLVideoProcessor)

from vrt_ray.errors import VrtError
from vrt_ray.tiny_corpus import protocol_corpus
from vrt_ray.tiny_spec import ROPE_LAYOUTS, TinySpec

CHAT_TEMPLATE = Path(__file__).parent / "templates" / "qwen2_5_vl_chat.jinja"

# Qwen2.5-VL's added tokens in their published order (ids follow the BPE vocabulary);
# <tool_call> and </tool_call> are ordinary (non-special) added tokens there too.
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]
QWEN_TEXT_TOKENS_1 = ["<tool_call>", "</tool_call>"]
QWEN_SPECIAL_TOKENS_2 = ["<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
                         "<|repo_name|>", "<|file_sep|>"]
PROTOCOL_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]
# Qwen2's pre-tokenizer split: contractions, letter runs, single digits, punctuation, spaces.
PRETOKENIZE_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                     r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


class ModelLoadError(VrtError):
    """A checkpoint directory that cannot serve as a Qwen2.5-VL policy."""


def train_tokenizer(spec: TinySpec = TinySpec()) -> Qwen2Tokenizer:
    """A Qwen2-style byte-level BPE trained on protocol text, with Qwen2.5-VL's added tokens."""
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=spec.bpe_vocab, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(protocol_corpus(), trainer=trainer)
    trained = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    vocab = dict(trained["vocab"])
    added = [(t, True) for t in QWEN_SPECIAL_TOKENS] + [(t, False) for t in QWEN_TEXT_TOKENS_1] \
        + [(t, True) for t in QWEN_SPECIAL_TOKENS_2] + [(t, False) for t in PROTOCOL_TOKENS]
    for token, _ in added:  # ids right after the BPE vocabulary, in Qwen's order
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, eos_token="<|im_end|>",
                               pad_token="<|endoftext|>", unk_token=None,
                               model_max_length=spec.max_position_embeddings,
                               errors="replace", split_special_tokens=False)
    for token, special in added:
        tokenizer.add_tokens([AddedToken(token, special=special, normalized=False)],
                             special_tokens=special)
    return tokenizer


def build_tiny_processor(spec: TinySpec = TinySpec()) -> Qwen2_5_VLProcessor:
    tokenizer = train_tokenizer(spec)
    image_processor = Qwen2VLImageProcessor(min_pixels=spec.min_pixels, max_pixels=spec.max_pixels)
    video_processor = Qwen2VLVideoProcessor(min_pixels=spec.min_pixels, max_pixels=spec.max_pixels)
    return Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               video_processor=video_processor,
                               chat_template=CHAT_TEMPLATE.read_text())


def build_tiny_config(tokenizer, spec: TinySpec = TinySpec()) -> Qwen2_5_VLConfig:
    ids = tokenizer.convert_tokens_to_ids
    vocab_size = -(-len(tokenizer) // 64) * 64  # padded, as Qwen pads its embedding matrix
    head_dim = spec.hidden_size // spec.num_heads
    text_config = dict(
        vocab_size=vocab_size, hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size, num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads, num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_position_embeddings, rms_norm_eps=1e-6,
        rope_parameters=rope_parameters(spec, head_dim),
        bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"),
        pad_token_id=ids("<|endoftext|>"), max_window_layers=spec.num_layers,
    )
    vision_config = dict(
        depth=spec.vision_depth, hidden_size=spec.vision_hidden, num_heads=spec.vision_heads,
        intermediate_size=spec.vision_intermediate, out_hidden_size=spec.hidden_size,
        patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
        fullatt_block_indexes=[spec.vision_depth - 1], tokens_per_second=2,
    )
    return Qwen2_5_VLConfig(
        text_config=text_config, vision_config=vision_config,
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=False,
    )


def rope_parameters(spec: TinySpec, head_dim: int) -> dict:
    """The language model's M-RoPE parameters for `spec.rope_layout`.

    "uniform" is Qwen2.5-VL's own: one geometric series of frequencies at base `rope_theta`,
    its fastest pairs for time (and text), the slower ones for rows, the slowest for columns.
    "split" gives each section its own series through transformers' per-pair `longrope`
    factors: rows and columns turn fast, 1 to 0.12 rad a step, so a 4x4 frame's tokens differ
    in phase; time/text pairs turn slowly, 0.1 to 1e-5 rad a position, so attention can match
    text far back by content. A text token turns all three sections by its position, so text
    sees the whole 1 to 1e-5 range.
    """
    section = _mrope_section(head_dim)
    if spec.rope_layout == "uniform":
        return {"rope_type": "default", "rope_theta": spec.rope_theta, "mrope_section": section}
    if spec.rope_layout != "split":
        raise ValueError(f"rope_layout {spec.rope_layout!r}: expected one of {ROPE_LAYOUTS}")
    factors = [1.0 / (freq * spec.rope_theta ** (2 * i / head_dim))  # longrope divides by these
               for i, freq in enumerate(split_frequencies(section))]
    return {"rope_type": "longrope", "rope_theta": spec.rope_theta, "mrope_section": section,
            "short_factor": factors, "long_factor": factors, "factor": 1.0,
            "attention_factor": 1.0,
            "original_max_position_embeddings": spec.max_position_embeddings}


def split_frequencies(section: list[int]) -> list[float]:
    """Rad per position of each rotary pair in the "split" layout, in M-RoPE's [t, h, w] order."""
    t, h, w = section
    return ([10.0 ** -(1 + 4 * k / (t - 1)) for k in range(t)]
            + [10.0 ** (-m / h) for m in range(h)] + [10.0 ** (-m / w) for m in range(w)])


def _mrope_section(head_dim: int) -> list[int]:
    """Temporal/height/width split of the rotary half-dimension, in Qwen2.5-VL's 2:3:3 ratio."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def make_tiny(out: str | os.PathLike, seed: int = 0, spec: TinySpec = TinySpec()) -> Path:
    """Write the tiny model (weights, config, processor) to `out`; same seed, same bytes."""
    out = Path(out)
    processor = build_tiny_processor(spec)
    config = build_tiny_config(processor.tokenizer, spec)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    ids = processor.tokenizer.convert_tokens_to_ids
    model.generation_config = GenerationConfig(
        bos_token_id=ids("<|endoftext|>"), pad_token_id=ids("<|endoftext|>"),
        eos_token_id=[ids("<|im_end|>"), ids("<|endoftext|>")], do_sample=False)
    return save_checkpoint(out, model, processor)


def save_checkpoint(out: str | os.PathLike, model, processor, state_dict=None) -> Path:
    """Write a Hugging Face directory (model + processor) to a temporary path beside `out`, then
    rename it into place: a crash mid-write never leaves half a checkpoint at `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(staging, state_dict=state_dict)
        processor.save_pretrained(staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def load_processor(path: str | os.PathLike, min_pixels: Optional[int] = None,
                   max_pixels: Optional[int] = None):
    """The checkpoint's processor (local files only), with the pixel budget from config."""
    _require_checkpoint(path)
    kwargs = {}
    if min_pixels is not None or max_pixels is not None:
        if min_pixels is None or max_pixels is None:
            raise ValueError("give both min_pixels and max_pixels, or neither")
        kwargs["size"] = {"shortest_edge": int(min_pixels), "longest_edge": int(max_pixels)}
    try:
        processor = AutoProcessor.from_pretrained(str(path), local_files_only=True, **kwargs)
    except Exception as exc:
        raise ModelLoadError(f"{path}: cannot load a processor ({exc})") from exc
    check_chat_template(processor, path)
    return processor


def check_chat_template(processor, path: str | os.PathLike = "") -> None:
    """Fail clearly on a template that cannot render images (old text-only Qwen2.5-VL copies)."""
    message = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}]
    try:
        rendered = processor.apply_chat_template(message, tokenize=False)
    except Exception as exc:
        raise ModelLoadError(f"{path}: its chat template fails on an image message ({exc}); "
                             "use a checkpoint copy with the multimodal chat_template") from exc
    if processor.image_token not in rendered:
        raise ModelLoadError(f"{path}: its chat template does not render images "
                             f"(no {processor.image_token} in its output); use a checkpoint "
                             "copy with the multimodal chat_template")


def load_policy(path: str | os.PathLike, dtype: str = "float32", attn_implementation: str = "sdpa",
                device: str | torch.device = "cpu"):
    """The policy model from a local checkpoint directory, in eval mode."""
    _require_checkpoint(path)
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            str(path), local_files_only=True, dtype=torch_dtype,
            attn_implementation=attn_implementation)
    except Exception as exc:
        raise ModelLoadError(f"{path}: cannot load a Qwen2.5-VL model ({exc})") from exc
    return model.to(device).eval()


def _require_checkpoint(path: str | os.PathLike) -> None:
    if not (Path(path) / "config.json").is_file():
        raise ModelLoadError(f"{path}: not a checkpoint directory (no config.json); "
                             "make the tiny one with `vrt-ray model make-tiny DIR`")
