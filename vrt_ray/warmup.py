"""The perception warm-up of DESIGN.md §12, as training sequences: one frame and its label in a
user turn, the frame's caption (colour, shape, position, blur/noise) as the assistant's answer.
It stands in for the pretraining a real Qwen2.5-VL has, so the tiny base can see before it
learns to judge; a real checkpoint skips it (`warmup.enabled: false`).

Restating sequences teach the other thing a pretrained model brings: copying text. An episode's
first context on a training pair's videos, under a prompt drawn at random (so only its text,
not the frames, says what it asks for), labelled with the opening of the teacher's first turn,
which restates that prompt."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from vrt_ray.data import PreferencePair
from vrt_ray.data.scene import BACKGROUNDS, COLOURS, DIRECTIONS, SHAPES, prompt_text
from vrt_ray.data.synth import caption_spans
from vrt_ray.data.teacher import restatement
from vrt_ray.episodes import prepare_prompt
from vrt_ray.frame_cache import FrameCache
from vrt_ray.judge import frame_counts
from vrt_ray.learner_core import TrainSequence
from vrt_ray.model_inputs import FrameSource, PixelBudget, processor_inputs
from vrt_ray.preset import Preset
from vrt_ray.protocol import Budgets, Episode, EpisodeInput, FrameRef
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


def restate_sequences(processor, pairs: Sequence[PreferencePair], preset: Preset,
                      budgets: Budgets, pixels: PixelBudget, cache: FrameCache,
                      rng: np.random.Generator, per_pair: int
                      ) -> Tuple[List[TrainSequence], List[Dict[int, str]]]:
    """`per_pair` sequences a pair: its episode's first context under a random prompt (`pairs`'
    own prompts are not used), labelled with "<think>" and the prompt restated, no turn end;
    and per sequence, position -> `restate_colour`, `restate_shape` or `restate_direction` for
    the first token of each restated word."""
    items, fields = [], []
    for pair in pairs:
        videos = {"A": pair.video_a, "B": pair.video_b}
        counts = frame_counts(videos, pixels.backend)
        for _ in range(per_pair):
            words = [str(rng.choice(list(options)))
                     for options in (COLOURS, SHAPES, DIRECTIONS, BACKGROUNDS)]
            episode = Episode(EpisodeInput(pair.id, prompt_text(*words), videos, counts),
                              preset, budgets)
            prompt, visuals = prepare_prompt(processor, episode, FrameSource(videos, pixels, cache))
            prompt_ids = processor_inputs(processor, prompt.text, prompt.images,
                                          prompt.videos)["input_ids"][0].tolist()
            text = f"<think>{restatement(*words[:3])}"
            enc = processor.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            (seq,) = to_sequences([Turn(prompt_ids, visuals, enc["input_ids"], [], "length")])
            start = len(seq.input_ids) - len(enc["input_ids"])
            where = {}
            for fact, word in zip(("colour", "shape", "direction"), words):
                at = text.index(f" {word}", text.index("Prompt:")) + 1
                k = next(k for k, (a, b) in enumerate(enc["offset_mapping"]) if a <= at < b)
                where[start + k] = f"restate_{fact}"
            items.append(TrainSequence(seq, videos, pixels))
            fields.append(where)
    return items, fields


def warmup_batch(captions: Sequence[TrainSequence], restating: Sequence[TrainSequence],
                 size: int, restate_share: float, rng: random.Random) -> List[TrainSequence]:
    """One step's sequences, none twice: `round(restate_share * size)` restating sequences and
    captions for the rest; at share 0, `size` drawn from both alike."""
    if not restate_share:
        pool = [*captions, *restating]
        return rng.sample(pool, min(size, len(pool)))
    k = min(round(restate_share * size), len(restating))
    return rng.sample(restating, k) + rng.sample(captions, min(size - k, len(captions)))


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
