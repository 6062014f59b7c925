"""Can the tiny model restate its prompt? Text-copy SFT in one process; prints JSON.

The cold-start traces open by restating the prompt ("Prompt: a red circle moving right.") after
the user turn's labelled initial frames, and a policy that cannot copy it judges text alignment
blind. Each step trains on --batch user turns laid out as the protocol lays them out (the
prompt, then --frames labelled images of random objects, so the answer is in the text only,
then --filler tokens of neutral text, or a number drawn per conversation up to --filler-max,
so that the prompt is a varying distance back) with the assistant restating the prompt; every
--eval-every steps it reports the held-out loss (nats) of the restated colour, shape and
direction words over 64 prompts it never trains on, next to each word's chance level.
Variants: the M-RoPE layout (--rope-layout, and --rope-theta for the uniform one); the model's
shape (--spec hidden_size=256 num_heads=4 ...: vrt_ray.tiny_spec.TinySpec's fields); --system
opens each conversation with the episodes' system prompt (about 400 tokens), as the real
first context does; --system filler, with as many tokens of neutral text instead.
Usage: OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/prompt_copy_probe.py [--steps 1500]
           [--rope-layout uniform --rope-theta 10] [--frames 8] [--filler 0] [--filler-max 200]
           [--system [filler]]
           [--spec KEY=VALUE ...]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from perception_probe import filler, sample  # noqa: E402

from vrt_ray.cli.stdout import claim_stdout, emit  # noqa: E402
from vrt_ray.data.scene import COLOURS, DIRECTIONS, RADIUS, REF_SIZE, SHAPES  # noqa: E402
from vrt_ray.models import ROPE_LAYOUTS, load_processor, make_tiny  # noqa: E402
from vrt_ray.preset import load_preset  # noqa: E402
from vrt_ray.protocol import Budgets, Episode, EpisodeInput  # noqa: E402
from vrt_ray.tiny_spec import tiny_spec  # noqa: E402

HELD_OUT = 64
WORDS = {"colour": list(COLOURS), "shape": list(SHAPES), "direction": list(DIRECTIONS)}


def prompt_words(rng):
    return {fact: values[rng.integers(len(values))] for fact, values in WORDS.items()}


def restated(words):
    return f"Prompt: a {words['colour']} {words['shape']} moving {words['direction']}."


def item(rng, frames, filler_range):
    """Prompt words, frames and the number of filler tokens of one conversation."""
    words = prompt_words(rng)
    images = [sample(rng, RADIUS)[0] for _ in range(frames)]
    lo, hi = filler_range
    return words, images, int(rng.integers(lo, hi + 1)) if hi > lo else lo  # same draws as before


def system_prompt() -> str:
    """The system prompt episodes of the `vrt` preset open with, at the default budgets."""
    inp = EpisodeInput("probe", "", {"A": "", "B": ""}, {"A": 16, "B": 16})
    return Episode(inp, load_preset("vrt"), Budgets()).messages[0]["content"]


def batch(processor, items, system=""):
    """Model inputs, labels on the restatement and <|im_end|>, and per item the position of
    each prompt word's first token."""
    tok = processor.tokenizer
    texts, images, wanted = [], [], []
    for words, frames, filler_tokens in items:
        intro = f"{restated(words)}\nVideo A has {len(frames)} frames."
        content = [{"type": "text", "text": intro}]
        for i, _ in enumerate(frames):
            content += [{"type": "text", "text": f"\nVideo A, frame {i + 1} of {len(frames)}"},
                        {"type": "image"}]
        if filler_tokens:
            content.append({"type": "text", "text": "\n" + filler(tok, filler_tokens)})
        message = [{"role": "user", "content": content}]
        if system:
            message.insert(0, {"role": "system", "content": [{"type": "text", "text": system}]})
        prompt = processor.apply_chat_template(message, add_generation_prompt=True, tokenize=False)
        texts.append(prompt + restated(words) + "<|im_end|>")
        images += frames
        wanted.append(words)
    enc = processor(text=texts, images=images or None, return_tensors="pt", padding=True)
    labels = torch.full_like(enc["input_ids"], -100)
    spots = []
    for r, words in enumerate(wanted):
        answer = tok.encode(restated(words) + "<|im_end|>", add_special_tokens=False)
        end = int(enc["attention_mask"][r].nonzero().max()) + 1
        start = end - len(answer)
        labels[r, start:end] = torch.tensor(answer)
        spots.append({fact: start + _word_offset(tok, words, fact) for fact in WORDS})
    return enc, labels, spots


def _word_offset(tok, words, fact):
    """Index, within the restatement's tokens, of the first token of `fact`'s word."""
    text = restated(words)
    head = text[:text.index(" " + words[fact] + (" " if fact != "direction" else "."))]
    return len(tok.encode(head, add_special_tokens=False))


def held_out_loss(model, processor, held_out, size, system):
    total = {fact: [0.0, 0] for fact in WORDS}
    model.eval()
    with torch.no_grad():
        for i in range(0, len(held_out), size):
            enc, labels, spots = batch(processor, held_out[i:i + size], system)
            logp = torch.log_softmax(model(**enc).logits[:, :-1].float(), -1)
            for r, where in enumerate(spots):
                for fact, p in where.items():
                    total[fact][0] -= logp[r, p - 1, labels[r, p]].item()
                    total[fact][1] += 1
    model.train()
    return {fact: round(s / n, 3) for fact, (s, n) in total.items()}


def main():
    out = claim_stdout()
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--frames", type=int, default=8, help="labelled images after the prompt")
    parser.add_argument("--filler", type=int, default=0, help="tokens of filler after the images")
    parser.add_argument("--filler-max", type=int, default=None,
                        help="draw each conversation's filler from --filler to this many tokens "
                             "(rounded up to whole sentences)")
    parser.add_argument("--system", nargs="?", const="episodes", choices=("episodes", "filler"),
                        help="open each conversation with the episodes' system prompt, or "
                             "with as many tokens of neutral filler")
    parser.add_argument("--rope-layout", choices=ROPE_LAYOUTS, default=None)
    parser.add_argument("--rope-theta", type=float, default=None)
    parser.add_argument("--spec", nargs="+", default=[], metavar="KEY=VALUE",
                        help="tiny model shape (vrt_ray.tiny_spec.TinySpec), e.g. hidden_size=256")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from transformers import Qwen2_5_VLForConditionalGeneration

    rope_flags = {k: v for k, v in (("rope_layout", args.rope_layout),
                                    ("rope_theta", args.rope_theta)) if v is not None}
    spec = replace(tiny_spec(args.spec), **rope_flags)
    torch.manual_seed(args.seed)
    model_dir = make_tiny(Path(tempfile.mkdtemp()) / "tiny", seed=args.seed, spec=spec)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    rope = model.config.text_config.rope_parameters
    processor = load_processor(model_dir, 56 * 56, REF_SIZE * REF_SIZE)
    rng, held_rng = np.random.default_rng(args.seed), np.random.default_rng(12345)
    filler_range = (args.filler, max(args.filler, args.filler_max or 0))
    held_out = [item(held_rng, args.frames, filler_range) for _ in range(HELD_OUT)]
    system = system_prompt() if args.system else ""
    if args.system == "filler":
        system = filler(processor.tokenizer, len(processor.tokenizer.encode(system)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    report = {"args": vars(args), "parameters": sum(p.numel() for p in model.parameters()),
              "rope": {"type": rope["rope_type"], "theta": rope["rope_theta"]},
              "chance": {fact: round(math.log(len(v)), 3) for fact, v in WORDS.items()},
              "held_out_loss": [{"step": 0, **held_out_loss(model, processor, held_out,
                                                            args.batch, system)}]}
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        enc, labels, _ = batch(processor, [item(rng, args.frames, filler_range)
                                           for _ in range(args.batch)], system)
        model(**enc, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % args.eval_every == 0 or step == args.steps:
            loss = held_out_loss(model, processor, held_out, args.batch, system)
            row = {"step": step, **loss}
            report["held_out_loss"].append(row)
            print(row, file=sys.stderr, flush=True)
    report["train_seconds"] = round(time.perf_counter() - start, 1)
    emit(out, report)


if __name__ == "__main__":
    main()
