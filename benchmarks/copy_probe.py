"""Does a copying phase teach the tiny model to copy? Text-only SFT in one process; prints JSON.

Trains a model (a fresh tiny one, or --model) on the text-only copying sequences of
vrt_ray/copy_corpus.py (--kinds, taken in turn through each batch) and every --eval-every steps
reports, per kind, the held-out loss and greedy agreement on the copied tokens of 96 sequences
it never trains on: the frame labels' digits, the restated prompt words, the repeated run.
--save DIR writes the trained model (the warm-up can start from it: model.path=DIR).
Usage: OMP_NUM_THREADS=2 PYTHONPATH=$PWD python benchmarks/copy_probe.py [--steps 3000]
           [--kinds frames prompt repeat] [--copied-only] [--lr 1e-3] [--batch 16]
           [--model DIR | --spec KEY=VALUE ...] [--save DIR]
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vrt_ray.cli.stdout import claim_stdout, emit
from vrt_ray.copy_batches import copy_measure, draw, encode
from vrt_ray.copy_corpus import GENERATORS, random_pieces
from vrt_ray.models import load_processor, make_tiny
from vrt_ray.preset import load_preset
from vrt_ray.tiny_spec import tiny_spec

HELD_OUT = 96


def main():
    out = claim_stdout()
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--kinds", nargs="+", choices=sorted(GENERATORS), default=list(GENERATORS))
    parser.add_argument("--copied-only", action="store_true",
                        help="labels on the copied tokens alone (default: the whole tail)")
    parser.add_argument("--model", help="start from this checkpoint (default: a fresh tiny model)")
    parser.add_argument("--spec", nargs="+", default=[], metavar="KEY=VALUE",
                        help="the fresh tiny model's shape (vrt_ray.tiny_spec.TinySpec), e.g. "
                             "rope_theta=1000000")
    parser.add_argument("--save", help="write the trained model here")
    parser.add_argument("--preset", default="vrt", help="the protocol preset's wording")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(args.seed)
    model_dir = args.model or make_tiny(Path(tempfile.mkdtemp()) / "tiny", seed=args.seed,
                                        spec=tiny_spec(args.spec))
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    processor = load_processor(model_dir)
    tok = processor.tokenizer
    pieces = random_pieces(tok)
    rng, held_rng = np.random.default_rng(args.seed), np.random.default_rng(12345)
    preset = load_preset(args.preset)
    held_out = draw(held_rng, pieces, sorted(GENERATORS), HELD_OUT, preset)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, args.warmup_steps)))
    report = {"args": vars(args), "measure": [{"step": 0, **copy_measure(model, tok, held_out)}]}
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        enc = encode(tok, draw(rng, pieces, args.kinds, args.batch, preset),
                     args.copied_only)
        model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
              labels=enc["labels"]).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if step % args.eval_every == 0 or step == args.steps:
            row = {"step": step, "seconds": round(time.perf_counter() - start, 1),
                   **copy_measure(model, tok, held_out)}
            report["measure"].append(row)
            print(row, file=sys.stderr, flush=True)
    report["train_seconds"] = round(time.perf_counter() - start, 1)
    if args.save:
        model.save_pretrained(args.save)
        processor.save_pretrained(args.save)
        report["saved"] = args.save
    emit(out, report)


if __name__ == "__main__":
    main()
