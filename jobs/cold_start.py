"""`vrt-ray cold-start CONFIG [key=value ...]`: multi-turn SFT on the teacher traces
(`cold_start.traces` under `data.dir`) through the learner group.

Every trace is replayed through the protocol (`vrt_ray/sft.py`), so each assistant turn is
trained under the context the model sees at inference: the visual memory window applied, tool
results with their frames, turns packed where nothing was dropped (DESIGN.md §3), labels on
assistant tokens only. Traces of the `train` split train; `val` traces (or, without any,
`cold_start.eval_fraction` of the train traces) give the held-out loss after each epoch.
A seeded `cold_start.slip_rate` share of the train traces get one call written wrong first (cut
short, or asking for frames past the video's end: `cold_start.slip_kinds`), then again after
the tool's error, the slip itself untrained (`vrt_ray.sft.add_slip`).
First turns (the episode's first context -> the teacher's first turn, with its call), cycling
through the train traces in a seeded order, give the turn every episode opens with more of the
updates: `cold_start.first_turn_steps` steps of them alone before the epochs, and
`cold_start.first_turns_per_step` more in every step of the epochs; with
`cold_start.opening_turns: N` each of them is the trace's first N turns instead (its packed
sequences, drawn one by one). Answer turns (each train trace's last sequence, the one that ends
with its verdicts) come the same way: `cold_start.answer_turn_steps` steps of them alone after
the first turns', `cold_start.answer_turns_per_step` in every step of the epochs. Copy turns
(train sequences with labels on the digits of their notes' frame labels alone, the `19` of
`A 19:` after the first turn, copied from the tool result just above:
`vrt_ray.sft.frame_label_sequence`) come the same way after the answer turns':
`cold_start.copy_turn_steps` and `cold_start.copy_turns_per_step`. Text-only copying
sequences (`vrt_ray/copy_corpus.py`, of `warmup.copy_kinds`, labelled on the copied tokens) join
every step, `cold_start.copying_per_step` of them carrying `cold_start.copying_share` of its loss
(0: as many tokens as they label), so what the warm-up's copying phase taught is kept. The
held-out loss is reported per token class, per turn (`turn_1`, ..., `answer`), on the frame
labels' digits (`frame_labels`), and on the copied tokens of 64 held-out copying sequences
(`copy_frames`, ...).
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import replace
from itertools import islice
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from actors.learner import LearnerGroup
from jobs.grpo import start_ray
from vrt_ray.copy_batches import CopySource, copying_mixer, held_out_copying
from vrt_ray.copy_corpus import FRAME_IMAGES, random_pieces
from vrt_ray.copy_images import FrameImageCopies
from vrt_ray.data import PreferencePair
from vrt_ray.data.loaders import load_pairs
from vrt_ray.errors import VrtError
from vrt_ray.frame_cache import FrameCache
from vrt_ray.judge import frame_counts
from vrt_ray.learner_core import TrainSequence, train_sequences
from vrt_ray.model_inputs import PixelBudget
from vrt_ray.models import load_processor
from vrt_ray.preset import Preset, load_preset
from vrt_ray.protocol import Budgets
from vrt_ray.sft import (add_slip, check_initial_view, frame_label_digits, frame_label_sequence,
                         trace_trajectory)
from vrt_ray.token_loss import TokenClasses, loss_by_class, loss_by_label, turn_labels
from vrt_ray.tracking import Tracker
from vrt_ray.trajectory import Trajectory


HELD_OUT_COPIES = 64  # copying sequences scored with the held-out loss


def read_traces(cfg: DictConfig) -> List[dict]:
    path = Path(cfg.data.dir) / cfg.cold_start.traces
    if not path.is_file():
        raise VrtError(f"{path}: no such traces file (make one with `vrt-ray data synth`)")
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def split_traces(traces: List[dict], eval_fraction: float, seed: int) -> Tuple[list, list]:
    """(train, held-out): the `val` split when there is one, else a seeded share of `train`."""
    train = [t for t in traces if t.get("split", "train") == "train"]
    held_out = [t for t in traces if t.get("split") == "val"]
    if not held_out and eval_fraction > 0 and len(train) > 1:
        train = random.Random(seed).sample(train, len(train))
        cut = max(1, int(len(train) * eval_fraction))
        held_out, train = train[:cut], train[cut:]
    if not train:
        raise VrtError("no train-split traces to fine-tune on")
    return train, held_out


def with_slips(traces: List[dict], rate: float, kinds: Sequence[str], max_turns: int, seed: int,
               num_frames: Mapping[str, Mapping[str, int]]) -> List[dict]:
    """The traces, a seeded `rate` share of them with a slip (`add_slip`) of one of `kinds`,
    drawn evenly; the rest as given. `num_frames`: pair id -> video -> frame count (for
    `range` slips)."""
    rng = np.random.default_rng([seed, 7])
    out = []
    for t in traces:
        if rng.random() < rate:
            # one kind draws nothing, so a run with `[cut]` slips the traces it always did
            kind = kinds[int(rng.integers(len(kinds)))] if len(kinds) > 1 else kinds[0]
            t = add_slip(t, rng, max_turns, kind, num_frames.get(t["pair_id"]))
        out.append(t)
    return out


def slip_frame_counts(cfg: DictConfig, traces: List[dict]) -> Dict[str, Dict[str, int]]:
    """Pair id -> video -> frame count for the traces' pairs, when `range` slips need them."""
    c = cfg.cold_start
    if not c.slip_rate or "range" not in c.slip_kinds:
        return {}
    if load_preset(cfg.protocol.preset).frame_space != "per_video":
        raise VrtError(f"cold_start.slip_kinds: `range` slips need calls that name their video; "
                       f"preset {cfg.protocol.preset} numbers one pool of frames")
    pairs = pairs_by_id(cfg)
    return {t["pair_id"]: frame_counts({"A": pairs[t["pair_id"]].video_a,
                                        "B": pairs[t["pair_id"]].video_b}, cfg.video.backend)
            for t in traces if t["pair_id"] in pairs}


def pairs_by_id(cfg: DictConfig) -> Dict[str, PreferencePair]:
    """The pairs of the train and val splits under `data.dir` (those that exist), by id."""
    pairs = {}
    for split in (cfg.data.train, cfg.data.val):
        path = Path(cfg.data.dir) / split
        if path.is_file():
            pairs.update((p.id, p) for p in load_pairs(path, cfg.data.format,
                                                       cfg.data.video_root or None).pairs)
    return pairs


def trace_trajectories(cfg: DictConfig, model_dir: str, traces: List[dict]) -> List[Trajectory]:
    """Each trace replayed under the run's protocol settings: the contexts an engine would see."""
    pairs = pairs_by_id(cfg)
    processor = load_processor(model_dir, cfg.video.min_pixels, cfg.video.max_pixels)
    preset, budgets = load_preset(cfg.protocol.preset), Budgets.from_config(cfg.protocol)
    pixels = PixelBudget(cfg.video.min_pixels, cfg.video.max_pixels, cfg.video.backend)
    cache = FrameCache(cfg.video.cache_mb << 20)
    samples = []
    for trace in tqdm(traces, desc="replaying traces", unit="trace"):
        pair = pairs.get(trace["pair_id"])
        if pair is None:
            raise VrtError(f"trace {trace['pair_id']}: no such pair in {cfg.data.dir}")
        videos = {"A": pair.video_a, "B": pair.video_b}
        trajectory = trace_trajectory(processor, pair, videos,
                                      frame_counts(videos, cfg.video.backend), trace, preset,
                                      budgets, pixels, cache)
        check_initial_view(trajectory, trace)
        samples.append(trajectory)
    return samples


def opening(trace: dict, turns: int = 1) -> dict:
    """The trace cut after its first `turns` turns (1: the first context -> the first call)."""
    return {**trace, "turns": trace["turns"][:turns]}


def answer_turns(traces: List[dict], samples: List[List[TrainSequence]]) -> List[TrainSequence]:
    """Each trace's last training sequence, the one holding its answer, for traces that answer."""
    items = [sample[-1] for trace, sample in zip(traces, samples)
             if "answer" in trace["turns"][-1]]
    if not items:
        raise VrtError("cold_start.answer_turn_steps / answer_turns_per_step: no train trace "
                       "ends with an answer")
    return items


def copy_turns(samples: List[List[TrainSequence]], tokenizer) -> List[TrainSequence]:
    """The train sequences that hold frame labels after the first turn, with labels on those
    labels' digits alone (`frame_label_sequence`)."""
    items = [replace(item, seq=seq) for sample in samples for item in sample
             if (seq := frame_label_sequence(item.seq, tokenizer)) is not None]
    if not items:
        raise VrtError("cold_start.copy_turn_steps / copy_turns_per_step: no train trace has a "
                       "note with a frame label (`A 19:`) after its first turn")
    return items


def frame_labels(items: List[TrainSequence], tokenizer) -> List[Dict[int, str]]:
    """Per item, the positions of its frame labels' digits after the first turn, each labelled
    `frame_labels` (for `loss_by_label`)."""
    return [{p: "frame_labels" for p in frame_label_digits(item.seq, tokenizer)} for item in items]


def seeded_cycle(items: List[TrainSequence], seed: int) -> Iterator[TrainSequence]:
    """`items` without end, each pass in a new seeded order."""
    rng = random.Random(seed)
    while True:
        yield from rng.sample(items, len(items))


def trace_samples(cfg: DictConfig, model_dir: str, traces: List[dict]) -> List[List[TrainSequence]]:
    """Each trace's training sequences (packed where DESIGN.md §3 allows)."""
    return [train_sequences(t) for t in trace_trajectories(cfg, model_dir, traces)]


def held_out_loss(learners: LearnerGroup, items: List[TrainSequence], classes: TokenClasses,
                  *labellings: Sequence[Mapping[int, str]]) -> Dict[str, float]:
    """Mean negative log-likelihood per assistant token: `all`, per token class
    (vrt_ray/token_loss.py), then per label of each labelling (per item, position -> label:
    `turn_labels`, `frame_labels`)."""
    values = learners.logprobs(items)
    losses = loss_by_class(items, values, classes)
    for labels in labellings:
        losses.update(loss_by_label(items, values, labels))
    return losses


def held_out_items(cfg: DictConfig, model_dir: str,
                   traces: List[dict]) -> Tuple[List[TrainSequence], List[Dict[int, str]]]:
    """The held-out traces' training sequences, and each one's `turn_labels` (a trace's last
    turn, when it answers, as `answer`)."""
    items, turns = [], []
    for trace, trajectory in zip(traces, trace_trajectories(cfg, model_dir, traces)):
        answer = len(trajectory.turns) - 1 if "answer" in trace["turns"][-1] else None
        for item in train_sequences(trajectory):
            items.append(item)
            turns.append(turn_labels(item.seq, answer))
    return items, turns


def copy_source(cfg: DictConfig, processor, preset: Preset, pixels: PixelBudget,
                pairs: Sequence[PreferencePair]) -> CopySource:
    """The run's copying sequences: random runs from the vocabulary and, when
    `warmup.copy_kinds` has `frame_images`, the frames of `pairs`' videos."""
    images = FrameImageCopies(processor, preset, pixels,
                              [v for p in pairs for v in (p.video_a, p.video_b)],
                              FrameCache(cfg.video.cache_mb << 20)) \
        if FRAME_IMAGES in cfg.warmup.copy_kinds else None
    return CopySource(processor.tokenizer, random_pieces(processor.tokenizer), preset, pixels,
                      images)


def copy_held_out(cfg: DictConfig, source: CopySource
                  ) -> Tuple[List[TrainSequence], List[Dict[int, str]]]:
    """The run's held-out copying sequences (`warmup.copy_kinds`), the same in every stage, and
    their copied positions labelled `copy_<kind>`."""
    return held_out_copying(source, cfg.warmup.copy_kinds, HELD_OUT_COPIES,
                            np.random.default_rng([cfg.seed, 6]))


def copy_loss(learners: LearnerGroup, items: List[TrainSequence],
              labels: List[Dict[int, str]]) -> Dict[str, float]:
    """Mean loss on the copied tokens of `copy_held_out`'s sequences, per kind."""
    return loss_by_label(items, learners.logprobs(items), labels)


def eval_metrics(losses: Dict[str, float]) -> Dict[str, float]:
    """MLflow names of `held_out_loss`'s values: eval/loss, eval/loss_number, ..."""
    return {("eval/loss" if k == "all" else f"eval/loss_{k}"): v for k, v in losses.items()}


def main(cfg: DictConfig, model_dir: Optional[str] = None, out: Optional[str] = None) -> Dict:
    """Fine-tune `model_dir` (default `model.path`) on the traces; writes the policy to `out`
    (default `<output_dir>/cold_start`) and returns a summary."""
    c = cfg.cold_start
    model_dir = model_dir or cfg.model.path
    out = out or str(Path(cfg.output_dir) / "cold_start")
    train, held_out = split_traces(read_traces(cfg), c.eval_fraction, cfg.seed)
    openings = [opening(t, c.opening_turns) for t in train]
    first_turns = seeded_cycle(
        [s for sample in trace_samples(cfg, model_dir, openings) for s in sample],
        cfg.seed) if c.first_turn_steps or c.first_turns_per_step else iter(())
    train = with_slips(train, c.slip_rate, list(c.slip_kinds), cfg.protocol.max_turns, cfg.seed,
                       slip_frame_counts(cfg, train))
    focus_answers = c.answer_turn_steps or c.answer_turns_per_step
    focus_copies = c.copy_turn_steps or c.copy_turns_per_step
    train_samples = trace_samples(cfg, model_dir, train) \
        if c.epochs or focus_answers or focus_copies else []
    answers = seeded_cycle(answer_turns(train, train_samples), cfg.seed + 1) \
        if focus_answers else iter(())
    processor = load_processor(model_dir, cfg.video.min_pixels, cfg.video.max_pixels)
    tokenizer = processor.tokenizer
    copies = seeded_cycle(copy_turns(train_samples, tokenizer), cfg.seed + 2) \
        if focus_copies else iter(())
    eval_items, eval_turns = held_out_items(cfg, model_dir, held_out)
    eval_frame_labels = frame_labels(eval_items, tokenizer)
    steps_per_epoch = math.ceil(len(train) / c.batch_size)
    alone = c.first_turn_steps + c.answer_turn_steps + c.copy_turn_steps
    total = alone + c.epochs * steps_per_epoch
    start_ray(cfg)
    tracker = Tracker(cfg, run_name=f"{cfg.name}-cold-start")
    pixels = PixelBudget(cfg.video.min_pixels, cfg.video.max_pixels, cfg.video.backend)
    learners = LearnerGroup(cfg.learner, model_dir, total_steps=total, pixels=pixels, lr=c.lr)
    classes, preset = TokenClasses(tokenizer), load_preset(cfg.protocol.preset)
    pairs = pairs_by_id(cfg)
    source = copy_source(cfg, processor, preset, pixels,
                         [pairs[t["pair_id"]] for t in train if t["pair_id"] in pairs])
    copying = copy_held_out(cfg, source)
    mix = copying_mixer(source, cfg.warmup.copy_kinds, c.copying_per_step, c.copying_share,
                        np.random.default_rng([cfg.seed, 9]))
    status, step, losses = "FAILED", 0, []
    bar = tqdm(total=total, desc="cold start", unit="step")

    def train_step(items: List[TrainSequence], stage: str) -> None:
        nonlocal step
        metrics, step = learners.train_sft(mix(items)), step + 1
        tracker.log_metrics({f"train/{k}": v for k, v in metrics.items()}, step)
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['loss']:.3f}", stage=stage)

    def evaluate(epoch: int) -> None:
        if eval_items:
            losses.append({**held_out_loss(learners, eval_items, classes, eval_turns,
                                           eval_frame_labels), **copy_loss(learners, *copying)})
            tracker.log_metrics({**eval_metrics(losses[-1]), "epoch": epoch}, step)

    try:
        evaluate(0)
        for _ in range(c.first_turn_steps):  # the turn every episode opens with, alone
            train_step(list(islice(first_turns, c.batch_size)), "first turns")
        for _ in range(c.answer_turn_steps):  # the turn every verdict is written in, alone
            train_step(list(islice(answers, c.batch_size)), "answer turns")
        for _ in range(c.copy_turn_steps):  # the frame labels copied from the tool results, alone
            train_step(list(islice(copies, c.batch_size)), "copy turns")
        if alone:
            evaluate(0)
            learners.save(out)
        for epoch in range(c.epochs):
            order = random.Random(cfg.seed + epoch).sample(range(len(train_samples)),
                                                           len(train_samples))
            for i in range(0, len(order), c.batch_size):
                items = [s for j in order[i:i + c.batch_size] for s in train_samples[j]]
                train_step(items + list(islice(first_turns, c.first_turns_per_step))
                           + list(islice(answers, c.answer_turns_per_step))
                           + list(islice(copies, c.copy_turns_per_step)), f"epoch {epoch + 1}")
            evaluate(epoch + 1)
            learners.save(out)  # every epoch: a run stopped later keeps its last whole one
        tracker.register_model(out)
        status = "FINISHED"
    finally:
        bar.close()
        tracker.finish(status)
        learners.shutdown()
    return {"model": out, "steps": total, "train_traces": len(train),
            "extra_first_turns": c.first_turn_steps * c.batch_size
            + c.epochs * steps_per_epoch * c.first_turns_per_step,
            "extra_answer_turns": c.answer_turn_steps * c.batch_size
            + c.epochs * steps_per_epoch * c.answer_turns_per_step,
            "extra_copy_turns": c.copy_turn_steps * c.batch_size
            + c.epochs * steps_per_epoch * c.copy_turns_per_step,
            "copying_sequences": total * c.copying_per_step,
            "slipped_traces": sum(any("slip" in t for t in trace["turns"]) for trace in train),
            "held_out_traces": len(held_out),
            # before, after the first-, answer- and copy-turn steps (when any), after each epoch
            "eval_loss": [l["all"] for l in losses],
            # token classes, turns (turn_1, ..., answer), frame_labels, copy_<kind>
            "eval_loss_by_class": losses,
            "tracking_run_id": tracker.run_id,
            "model_version": tracker.model_version}
