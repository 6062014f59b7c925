"""What the tiny model learns to see: caption SFT on freshly rendered synthetic frames in one
process; prints JSON.

Each step trains on 16 clean frames (random colour, shape, background and position) captioned as
the warm-up's captions are; every --eval-every steps it reports the held-out loss (nats) of each
fact a caption states, over 96 frames it never trains on, next to that fact's chance level:
colour, shape, background, and the digits of the object's centre (`position`; `position_tens`
is the first digit of each coordinate, the part a model that knows the object's place to ~10 px
can predict; `x_tens` and `y_tens` split it by axis). Variants change what docs/training.md
found to matter: the language model's M-RoPE layout (--rope-layout, and --rope-theta for the
uniform one), the object's size (--object-scale), the learning rate; --distance puts filler
text between the frame and the question, to see how far back the model still reads it.
Usage: OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/perception_probe.py [--steps 1500]
           [--rope-layout split | --rope-theta 3] [--object-scale 2] [--lr 3e-4] [--distance 400]
           [--model DIR] [--save DIR]   (--steps 0 --model DIR only scores DIR, e.g. at another --distance)
"""
import argparse
import math
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from vrt_ray.cli.stdout import claim_stdout, emit
from vrt_ray.data.scene import (BACKGROUNDS, COLOURS, MARGIN, RADIUS, REF_SIZE, SHAPES,
                                FrameState, background, render)
from vrt_ray.data.synth import caption_text
from vrt_ray.models import ROPE_LAYOUTS, TinySpec, load_processor, make_tiny
from vrt_ray.warmup import caption_facts

BATCH, HELD_OUT = 16, 96
COLOURS_LIST = list(COLOURS)
PROMPT = "Describe this frame: the shape, its colour and position, the background, sharpness."


def sample(rng, radius):
    lo, hi = radius + MARGIN, REF_SIZE - radius - MARGIN
    state = FrameState(COLOURS_LIST[rng.integers(len(COLOURS_LIST))], SHAPES[rng.integers(len(SHAPES))],
                       float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)))
    kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    return render(state, background(kind, REF_SIZE), rng, radius=radius), caption_text(state, kind)


def token_facts(tokenizer, caption):
    """The caption's token ids and, per token, the facts it counts under: caption_facts, with
    the first token of each coordinate (digits are single tokens) also `position_tens` and
    `x_tens` or `y_tens`."""
    facts = caption_facts(tokenizer, caption)
    per_token, coordinates = [], 0
    for k, f in enumerate(facts):
        names = [f] if f else []
        if f == "position" and (k == 0 or facts[k - 1] != f):
            names += ["position_tens", "xy"[min(coordinates, 1)] + "_tens"]
            coordinates += 1
        per_token.append(names)
    return tokenizer.encode(caption, add_special_tokens=False), per_token


def filler(tokenizer, tokens):
    """Neutral text of about `tokens` tokens, to put between the frame and the question."""
    sentence = "The frame above is one of many in the video. "
    return sentence * math.ceil(tokens / len(tokenizer.encode(sentence))) if tokens else ""


def batch(processor, items, distance=0):
    """Model inputs for (frame, caption) items, labels on the caption and <|im_end|> only, and
    per item (start, facts of each caption token)."""
    tok = processor.tokenizer
    text = filler(tok, distance) + PROMPT
    message = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    prompt = processor.apply_chat_template(message, add_generation_prompt=True, tokenize=False)
    enc = processor(text=[prompt + cap + "<|im_end|>" for _, cap in items],
                    images=[img for img, _ in items], return_tensors="pt", padding=True)
    labels = torch.full_like(enc["input_ids"], -100)
    facts = []
    for r, (_, cap) in enumerate(items):
        ids, per_token = token_facts(tok, cap)
        ids = ids + [tok.convert_tokens_to_ids("<|im_end|>")]
        end = int(enc["attention_mask"][r].nonzero().max()) + 1
        start = end - len(ids)
        assert enc["input_ids"][r, start:end].tolist() == ids
        labels[r, start:end] = torch.tensor(ids)
        facts.append((start, per_token))
    return enc, labels, facts


def held_out_loss(model, processor, held_out, distance):
    total = {}
    model.eval()
    with torch.no_grad():
        for i in range(0, len(held_out), BATCH):
            enc, labels, facts = batch(processor, held_out[i:i + BATCH], distance)
            logp = torch.log_softmax(model(**enc).logits[:, :-1].float(), -1)
            for r, (start, per_token) in enumerate(facts):
                for k, names in enumerate(per_token):
                    p = start + k
                    nll = -logp[r, p - 1, labels[r, p]].item()
                    for name in names:
                        row = total.setdefault(name, [0.0, 0])
                        row[0] += nll
                        row[1] += 1
    model.train()
    return {k: round(v[0] / v[1], 3) for k, v in sorted(total.items())}


def tens_digit_chance(radius, rng):
    """Entropy (nats) of a coordinate's first digit, drawn as `sample` draws it."""
    x = np.round(rng.uniform(radius + MARGIN, REF_SIZE - radius - MARGIN, 100_000)).astype(int)
    p = np.bincount(x // 10) / len(x)
    return round(float(-(p[p > 0] * np.log(p[p > 0])).sum()), 3)


def main():
    out = claim_stdout()
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--eval-every", type=int, default=300)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--rope-layout", choices=ROPE_LAYOUTS, default=None,
                        help="the fresh model's M-RoPE layout (default: TinySpec's)")
    parser.add_argument("--rope-theta", type=float, default=None,
                        help="the fresh model's M-RoPE base (default: TinySpec's)")
    parser.add_argument("--object-scale", type=float, default=1.0)
    parser.add_argument("--distance", type=int, default=0,
                        help="tokens of filler text between the frame and the question")
    parser.add_argument("--model", default=None, help="start here (default: a fresh tiny model)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", default=None, help="write the trained model here")
    args = parser.parse_args()
    from transformers import Qwen2_5_VLForConditionalGeneration

    spec = {k: v for k, v in (("rope_layout", args.rope_layout), ("rope_theta", args.rope_theta))
            if v is not None}
    if args.model and spec:
        parser.error("--rope-layout and --rope-theta build a fresh model; not with --model")
    torch.manual_seed(args.seed)
    model_dir = args.model or make_tiny(Path(tempfile.mkdtemp()) / "tiny", seed=args.seed,
                                        spec=replace(TinySpec(), **spec))
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    rope = model.config.text_config.rope_parameters
    processor = load_processor(model_dir, 56 * 56, REF_SIZE * REF_SIZE)
    radius = RADIUS * args.object_scale
    rng, held_rng = np.random.default_rng(args.seed), np.random.default_rng(12345)
    held_out = [sample(held_rng, radius) for _ in range(HELD_OUT)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    report = {"args": vars(args), "rope": {"type": rope["rope_type"], "theta": rope["rope_theta"]},
              "chance": {"colour": round(math.log(len(COLOURS)), 3),
                         "shape": round(math.log(len(SHAPES)), 3),
                         "background": round(math.log(len(BACKGROUNDS)), 3),
                         "position_tens": tens_digit_chance(radius, held_rng)},
              "held_out_loss": [{"step": 0, **held_out_loss(model, processor, held_out, args.distance)}]}
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        enc, labels, _ = batch(processor, [sample(rng, radius) for _ in range(BATCH)], args.distance)
        model(**enc, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % args.eval_every == 0 or step == args.steps:
            row = {"step": step, **held_out_loss(model, processor, held_out, args.distance)}
            report["held_out_loss"].append(row)
            print(row, file=sys.stderr, flush=True)
    report["train_seconds"] = round(time.perf_counter() - start, 1)
    if args.save:
        model.save_pretrained(args.save)
        processor.save_pretrained(args.save)
    emit(out, report)


if __name__ == "__main__":
    main()
