"""The perception warm-up of DESIGN.md §12, as training sequences: one frame and its label in a
user turn, the frame's caption (colour, shape, position, blur/noise) as the assistant's answer.
It stands in for the pretraining a real Qwen2.5-VL has, so the tiny base can see before it
learns to judge; a real checkpoint skips it (`warmup.enabled: false`)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Optional

from vrt_ray.data.synth import caption_spans
from vrt_ray.frame_cache import FrameCache
from vrt_ray.learner_core import TrainSequence
from vrt_ray.model_inputs import FrameSource, PixelBudget, processor_inputs
from vrt_ray.preset import Preset
from vrt_ray.protocol import FrameRef
from vrt_ray.trajectory import Turn, to_sequences
from vrt_ray.video import open_video

INSTRUCTION = "Describe this frame: the shape, its colour and position, the background, sharpness."


def caption_sequences(processor, rows: Iterable[dict], data_dir: str | Path, preset: Preset,
                      pixels: PixelBudget, cache: FrameCache) -> List[TrainSequence]:
    """One sequence per caption row ({video, frame, caption}; video relative to `data_dir`)."""
    end_id = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    rows = list(rows)
    wanted: Dict[str, List[int]] = {}
    for row in rows:
        wanted.setdefault(str(Path(data_dir) / row["video"]), []).append(int(row["frame"]))
    totals: Dict[str, int] = {}
    for path, frames in wanted.items():  # one decoding pass a video, not a seek a caption
        with open_video(path, backend=pixels.backend) as reader:
            totals[path] = reader.info.num_frames
        cache.get(path, frames, pixels.min_pixels, pixels.max_pixels, pixels.backend)
    out = []
    for row in rows:
        path = str(Path(data_dir) / row["video"])
        ref = FrameRef("A", int(row["frame"]))
        label = preset.frame_label.format(video="A", index=ref.index, total=totals[path])
        messages = [{"role": "user", "content": [{"type": "image"},
                                                 {"type": "text", "text": f"{label}. {INSTRUCTION}"}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        visuals = [("image", (ref,))]
        images, _ = FrameSource({"A": path}, pixels, cache).visuals(visuals)
        prompt_ids = processor_inputs(processor, text, images, [])["input_ids"][0].tolist()
        tokens = processor.tokenizer.encode(row["caption"], add_special_tokens=False) + [end_id]
        (seq,) = to_sequences([Turn(prompt_ids, visuals, tokens, [], "stop")])
        out.append(TrainSequence(seq, {"A": path}, pixels))
    return out


def caption_facts(tokenizer, caption: str) -> List[Optional[str]]:
    """The fact (colour, shape, position, background, quality) each token of `caption` states,
    or None (template words); all None for a caption not written by the synthetic generator."""
    enc = tokenizer(caption, add_special_tokens=False, return_offsets_mapping=True)
    spans = caption_spans(caption)
    return [next((field for field, s, e in spans if a < e and b > s), None)
            for a, b in enc["offset_mapping"]]


def caption_field_labels(tokenizer, rows: Iterable[dict],
                         items: Iterable[TrainSequence]) -> List[Dict[int, str]]:
    """Per caption sequence, position -> the fact its caption token states: which facts of a
    frame the policy has learned to read."""
    out = []
    for row, item in zip(rows, items):
        facts = caption_facts(tokenizer, row["caption"])
        start = len(item) - len(facts) - 1  # the caption, then <|im_end|>, ends the sequence
        out.append({start + k: f for k, f in enumerate(facts) if f is not None})
    return out
