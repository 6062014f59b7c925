"""Can the tiny policy write an episode's first turn? First-turn SFT in one process; prints JSON.

A policy that never writes a valid `select_frames` call never sees more than its initial frames,
so every later stage starts from nothing. This probe trains only the teacher's first turn (the
episode's first context -> restated prompt, notes on the initial frames, the call) of the
traces under --data, with the trace replay of the cold start, and every --eval-every steps
decodes the held-out pairs' first turns greedily, as an evaluation would, and reports:
  valid_call    share whose first call parses and fits the budgets (vrt_ray/tool_calls.py),
                and `calls`, how many calls were valid, missing or of each error kind;
  teacher_call  share asking for exactly the teacher's video and frames;
  restated      share that restate the pair's prompt word for word (and per word);
  initial_frames_noted  share whose notes name the initial frames' numbers, in order;
  stopped       share that end their turn before the token limit;
and the held-out loss per token class (vrt_ray/token_loss.py), next to the steps and seconds.
With --restate-only N it trains instead on the warm-up's restating sequences (N a training
pair: the first context under a random prompt, only the restatement labelled), to see whether
copying the prompt is learned when its loss is not diluted by the rest of the turn.
Usage: OMP_NUM_THREADS=2 PYTHONPATH=$PWD python benchmarks/first_turn_probe.py --data DIR
           --model DIR [--config tiny_cpu] [--steps 600] [--batch 8] [--lr 1e-3]
           [--eval-every 100] [--held-out 24] [--restate-only N] [--save DIR] [key=value ...]
"""
import argparse
import random
import re
import sys
import time
from collections import Counter

import numpy as np
import torch

from jobs.cold_start import (opening, pairs_by_id, read_traces, split_traces,
                              trace_trajectories)
from vrt_ray import config
from vrt_ray.cli.stdout import claim_stdout, emit
from vrt_ray.engines.base import SamplingParams
from vrt_ray.engines.hf import HFEngine
from vrt_ray.episodes import prepare_prompt
from vrt_ray.frame_cache import FrameCache
from vrt_ray.judge import frame_counts
from vrt_ray.learner_core import sequence_logprobs, sft_loss_for, train_sequences
from vrt_ray.model_inputs import FrameSource, PixelBudget
from vrt_ray.models import load_policy, load_processor, save_checkpoint
from vrt_ray.preset import load_preset
from vrt_ray.protocol import Budgets, Episode, EpisodeInput
from vrt_ray.token_loss import TokenClasses, loss_by_class
from vrt_ray.tool_calls import FrameRequest, extract_call_text, parse_tool_call
from vrt_ray.warmup import restate_sequences


def restating(cfg, processor, traces, per_pair, seed):
    """The warm-up's restating sequences on the traces' pairs."""
    pairs = pairs_by_id(cfg)
    pixels = PixelBudget(cfg.video.min_pixels, cfg.video.max_pixels, cfg.video.backend)
    items, _ = restate_sequences(processor, [pairs[t["pair_id"]] for t in traces],
                                 load_preset(cfg.protocol.preset),
                                 Budgets.from_config(cfg.protocol), pixels,
                                 FrameCache(cfg.video.cache_mb << 20),
                                 np.random.default_rng(seed), per_pair)
    return items


def first_contexts(cfg, processor, traces, cache):
    """Per trace, its pair's frame counts and the engine prompt of the episode's first turn."""
    pairs = pairs_by_id(cfg)
    preset, budgets = load_preset(cfg.protocol.preset), Budgets.from_config(cfg.protocol)
    pixels = PixelBudget(cfg.video.min_pixels, cfg.video.max_pixels, cfg.video.backend)
    counts, prompts = [], []
    for trace in traces:
        pair = pairs[trace["pair_id"]]
        videos = {"A": pair.video_a, "B": pair.video_b}
        counts.append(frame_counts(videos, cfg.video.backend))
        episode = Episode(EpisodeInput(pair.id, pair.prompt, videos, counts[-1]), preset, budgets)
        prompts.append(prepare_prompt(processor, episode, FrameSource(videos, pixels, cache))[0])
    return counts, prompts


NOTE = re.compile(r"\b([AB]) (\d+):")
RESTATED = re.compile(r"^<think>Prompt: an? (\w+) (\w+) moving (\w+)\.")


def score(cfg, texts, finish, traces, counts) -> dict:
    """Shares of first turns: with a valid call, the teacher's call, the prompt restated (and
    each of its words), the initial frames' numbers noted as the teacher notes them, an end of
    turn; and the kinds of the invalid calls."""
    preset = load_preset(cfg.protocol.preset)
    tally, errors = Counter(), Counter()
    for text, trace, videos in zip(texts, traces, counts):
        body = extract_call_text(text, preset.tool_open, preset.tool_close)
        call = None if body is None else parse_tool_call(
            body, videos, cfg.protocol.max_frames_per_call,
            video_required=preset.frame_space == "per_video")
        teacher = trace["turns"][0]
        wanted = RESTATED.match("<think>" + teacher["think"]).groups()
        said = RESTATED.match(text)
        said = said.groups() if said else (None,) * 3
        tally["valid_call"] += isinstance(call, FrameRequest)
        errors[getattr(call, "kind", "valid" if call else "no_call")] += 1
        tally["teacher_call"] += call == FrameRequest(teacher["tool_call"].get("video", ""),
                                                      tuple(teacher["tool_call"]["target_frames"]))
        tally["restated"] += said == wanted
        for word, a, b in zip(("colour", "shape", "direction"), said, wanted):
            tally[f"restated_{word}"] += a == b
        tally["initial_frames_noted"] += (NOTE.findall(text.split("</think>")[0])
                                          == NOTE.findall(teacher["think"]))
    n = max(len(texts), 1)
    keys = ("valid_call", "teacher_call", "restated", "restated_colour", "restated_shape",
            "restated_direction", "initial_frames_noted")
    return {**{k: round(tally[k] / n, 3) for k in keys},
            "stopped": round(sum(f == "stop" for f in finish) / n, 3), "calls": dict(errors)}


def main():
    out = claim_stdout()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="a folder with traces.jsonl and its pairs")
    ap.add_argument("--model", required=True, help="the policy to start from (e.g. a warm-up)")
    ap.add_argument("--config", default="tiny_cpu")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--held-out", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--restate-only", type=int, default=0, metavar="N",
                    help="train instead on N warm-up restating sequences a training pair "
                         "(vrt_ray.warmup.restate_sequences: random prompts, labels on the "
                         "restatement only); the evaluation stays the same")
    ap.add_argument("--save", help="write the trained policy here (a checkpoint directory)")
    ap.add_argument("overrides", nargs="*", help="config key=value")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    cfg = config.load(args.config, [f"data.dir={args.data}", *args.overrides])
    train, held_out = split_traces(read_traces(cfg), cfg.cold_start.eval_fraction, cfg.seed)
    held_out = held_out[:args.held_out]
    started = time.time()
    processor = load_processor(args.model, cfg.video.min_pixels, cfg.video.max_pixels)
    if not args.steps:  # decoding the held-out first turns only: nothing to train on
        train_items = []
    elif args.restate_only:
        train_items = restating(cfg, processor, train, args.restate_only, args.seed)
    else:
        train_items = [train_sequences(t)[0] for t in
                       trace_trajectories(cfg, args.model, [opening(t) for t in train])]
    held_traj = trace_trajectories(cfg, args.model, [opening(t) for t in held_out])
    eval_items = [train_sequences(t)[0] for t in held_traj]
    cache = FrameCache(cfg.video.cache_mb << 20)
    counts, prompts = first_contexts(cfg, processor, held_out, cache)
    model = load_policy(args.model)
    engine = HFEngine(model, processor)
    classes = TokenClasses(processor.tokenizer)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=cfg.protocol.max_new_tokens)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    rng = random.Random(args.seed)
    report = {"data": args.data, "model": args.model, "restate_only": args.restate_only,
              "train_sequences": len(train_items),
              "held_out": len(eval_items), "batch": args.batch, "lr": args.lr,
              "prepare_s": round(time.time() - started, 1), "evals": []}
    started = time.time()
    for step in range(args.steps + 1):
        if step % args.eval_every == 0 or step == args.steps:
            model.eval()
            with torch.no_grad():
                logprobs = [sequence_logprobs(model, processor, it, cache=cache, action_only=True)
                            .tolist() for it in eval_items]
            gens = engine.generate(prompts, greedy)
            texts = [processor.tokenizer.decode(g.token_ids, skip_special_tokens=False)
                     for g in gens]
            row = {"step": step, "elapsed_s": round(time.time() - started, 1),
                   **score(cfg, texts, [g.finish_reason for g in gens], held_out, counts),
                   "loss": {k: round(v, 3) for k, v in
                            loss_by_class(eval_items, logprobs, classes).items()},
                   "sample": texts[0][:400]}
            report["evals"].append(row)
            print(row, file=sys.stderr, flush=True)
            model.train()
        if step == args.steps:
            break
        loss, _ = sft_loss_for(model, processor, rng.sample(train_items, args.batch), cache=cache)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    if args.save:
        save_checkpoint(args.save, model, processor)
    emit(out, report)


if __name__ == "__main__":
    main()
