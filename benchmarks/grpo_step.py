"""GRPO steps of jobs/grpo.py on the tiny model with local Ray (2 CPUs); prints one JSON object.

On synthetic data and the tiny model taught the answer format (vrt_ray/primer.py), with local Ray
(2 rollout workers, 1 reference, 1 verifier, a learner group of 2 on gloo). A first GRPORun, on
the primed model, where every step learns:
- `--timed-steps` steps without and then with `grpo.overlap`: trajectories/s by the wall clock
  (first submit to last step's end) and the stages' time shares;
- weight sync: the same weights to every rollout worker over the object store and over a gloo
  group, `--sync-reps` times each (median; the gloo group's first, set-up sync apart);
- packing: teacher traces of the synthetic data replayed through the protocol (multi-turn, with
  tool calls), the learner's forward tokens packed vs one sample per turn, and the seconds of one
  learner forward pass over each (the faster of two).
A second GRPORun, again from the primed model: the learning check, `--steps` steps through
`GRPORun.train()`, with the mean-reward curve (also in the run's MLflow store, with the reward
plot train() draws) and the format, accuracy and entropy curves that explain it. Its defaults
(temperature 0.7, 4 pairs x 8 episodes, lr 2e-4) are those under which the reward rises;
docs/benchmarks.md says why.
Progress goes to stderr. Usage: python benchmarks/grpo_step.py [--quick] [--workdir DIR]
"""
import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from vrt_ray.cli.stdout import claim_stdout, emit

FULL = {"steps": 30, "timed_steps": 4, "sync_reps": 5, "traces": 8}
QUICK = {"steps": 8, "timed_steps": 2, "sync_reps": 3, "traces": 4}
STAGES = ("rollout", "verify", "reference", "learn", "sync")


def log(message: str) -> None:
    print(f"[grpo_step {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def overrides(root: Path, args) -> list:
    return [f"model.path={root}/primed", f"data.dir={root}/data",
            f"checkpointing.dir={root}/ckpt", "checkpointing.every_steps=1000",
            f"tracking.uri=sqlite:///{root}/mlflow.db", "tracking.experiment=bench-grpo-step",
            "protocol.max_new_tokens=48", "protocol.max_turns=2", "protocol.initial_frames=2",
            f"grpo.pairs_per_step={args.pairs_per_step}", f"grpo.group_size={args.group_size}",
            f"grpo.steps={args.steps}", f"grpo.lr={args.lr}", f"grpo.beta={args.beta}",
            f"grpo.loss_agg={args.loss_agg}",
            f"rollout.sampling.temperature={args.temperature}", "rollout.timeout_s=300"]


def prepare(root: Path, args):
    """Synthetic data and the primed tiny model under `root`; returns the run config."""
    from vrt_ray import config
    from vrt_ray.data.loaders import load_pairs
    from vrt_ray.data.synth import SynthSettings, generate
    from vrt_ray.models import make_tiny
    from vrt_ray.primer import prime

    started = time.perf_counter()
    generate(root / "data", SynthSettings(pairs=args.pairs, min_frames=16, max_frames=40, seed=3))
    cfg = config.load("tiny_cpu", overrides(root, args))
    make_tiny(root / "tiny", seed=0)
    pairs = load_pairs(root / "data" / "train.jsonl", "jsonl").pairs
    losses = prime(root / "tiny", root / "primed", pairs, cfg, steps=args.primer_steps, seed=0,
                   progress=True)
    log(f"data + primer: {time.perf_counter() - started:.0f} s (primer loss "
        f"{losses[0]:.2f} -> {statistics.fmean(losses[-10:]):.2f})")
    return cfg


def learning(run, steps: int) -> dict:
    """`steps` steps through train(): the reward curve and where the time went."""
    log(f"learning check: {steps} steps")
    started = time.perf_counter()
    run.train()
    wall = time.perf_counter() - started
    history = {key: [v for _, v in run.tracker.history(key)]
               for key in ("reward_mean", "format_rate", "accuracy_overall", "kept_group_fraction",
                           "trajectories_per_s", "trajectories", "learner/entropy",
                           "learner/pg_loss")}
    seconds = {s: sum(v for _, v in run.tracker.history(f"time/{s}_s")) for s in STAGES}
    total = sum(seconds.values())
    worker = {k: sum(v for _, v in run.tracker.history(f"time/worker_{k}"))
              for k in ("prepare_s", "generate_s", "tool_s")}
    curve = history["reward_mean"]
    k = max(1, min(5, len(curve) // 3))
    return {
        "steps": len(curve),
        "reward_mean_curve": [round(r, 4) for r in curve],
        "reward_first_steps_mean": round(statistics.fmean(curve[:k]), 4),
        "reward_last_steps_mean": round(statistics.fmean(curve[-k:]), 4),
        "reward_slope_per_step": round(_slope(curve), 5),
        "format_rate_curve": [round(r, 3) for r in history["format_rate"]],
        "accuracy_overall_curve": [round(r, 3) for r in history["accuracy_overall"]],
        "learner_entropy_curve": [round(r, 3) for r in history["learner/entropy"]],
        "learner_pg_loss_curve": [round(r, 3) for r in history["learner/pg_loss"]],
        "kept_group_fraction_mean": round(statistics.fmean(history["kept_group_fraction"]), 3),
        "trajectories_per_s_driver_median": round(statistics.median(history["trajectories_per_s"]), 3),
        "trajectories_per_s_wall": round(sum(history["trajectories"]) / wall, 3),
        "stage_seconds_per_step": {s: round(v / len(curve), 3) for s, v in seconds.items()},
        "stage_shares": {s: round(v / total, 3) for s, v in seconds.items()},
        "rollout_worker_seconds_per_step": {k: round(v / len(curve), 3) for k, v in worker.items()},
    }


def _slope(values) -> float:
    n = len(values)
    if n < 2:
        return 0.0
    mx, my = (n - 1) / 2, statistics.fmean(values)
    return (sum((i - mx) * (v - my) for i, v in enumerate(values))
            / sum((i - mx) ** 2 for i in range(n)))


def timed_steps(run, steps: int, overlap: bool) -> dict:
    """`steps` more steps with `grpo.overlap` as given; trajectories/s by the wall clock."""
    log(f"{steps} steps, overlap={overlap}")
    run.cfg.grpo.overlap = overlap
    run.cfg.grpo.steps = run.state.step + steps
    started = time.perf_counter()
    pending, trajectories, stages, kept = run.submit(run.state.data_position), 0, {}, []
    while run.state.step < run.cfg.grpo.steps:
        metrics, pending = run.step(pending)
        trajectories += metrics["trajectories"]
        for stage in STAGES:
            stages[stage] = stages.get(stage, 0.0) + metrics.get(f"time/{stage}_s", 0.0)
        kept.append(metrics["kept_group_fraction"])
    wall = time.perf_counter() - started
    total = sum(stages.values())
    return {"steps": steps, "trajectories_per_s": round(trajectories / wall, 3),
            "step_s": round(wall / steps, 2),
            "kept_group_fraction_mean": round(statistics.fmean(kept), 3),
            "stage_seconds_per_step": {k: round(v / steps, 3) for k, v in stages.items()},
            "stage_shares": {k: round(v / total, 3) for k, v in stages.items()}}


def weight_sync(run, reps: int) -> dict:
    """The learner's current weights to every rollout worker, `reps` times per method."""
    log(f"weight sync: {reps} x object store, 1 + {reps} x gloo")
    version = run.state.policy_version
    store = [run.rollouts.sync(run.learners, version, "object_store") for _ in range(reps)]
    run.rollouts.transfer = None  # the first gloo sync builds the transfer group
    gloo = [run.rollouts.sync(run.learners, version, "gloo") for _ in range(reps + 1)]
    assert run.rollouts.ready() == [version] * len(run.rollouts.workers)
    weights = run.learners.weights()
    return {"parameters": sum(v.numel() for v in weights.values()),
            "megabytes": round(sum(v.numel() * v.element_size() for v in weights.values()) / 2**20, 2),
            "object_store_s_median": round(statistics.median(store), 4),
            "gloo_s_median": round(statistics.median(gloo[1:]), 4),
            "gloo_first_with_group_setup_s": round(gloo[0], 4),
            "object_store_s": [round(s, 4) for s in store], "gloo_s": [round(s, 4) for s in gloo]}


def packing(run, root: Path, cfg, count: int) -> dict:
    """Teacher traces replayed under the tiny_cpu protocol budgets (up to 6 turns): the learner's
    forward tokens and one forward pass's seconds, packed vs one sample per turn."""
    from vrt_ray import config
    from vrt_ray.data.loaders import load_pairs
    from vrt_ray.frame_cache import FrameCache
    from vrt_ray.grpo_batch import build_batch
    from vrt_ray.judge import frame_counts
    from vrt_ray.model_inputs import PixelBudget
    from vrt_ray.models import load_processor
    from vrt_ray.preset import load_preset
    from vrt_ray.protocol import Budgets
    from vrt_ray.sft import trace_trajectory

    protocol = config.load("tiny_cpu").protocol
    log(f"packing: {count} teacher traces, max_turns={protocol.max_turns}")
    pairs = {p.id: p for p in load_pairs(root / "data" / "pairs.jsonl", "jsonl").pairs}
    traces = [json.loads(line) for line in (root / "data" / "traces.jsonl").read_text().splitlines()]
    processor = load_processor(cfg.model.path, cfg.video.min_pixels, cfg.video.max_pixels)
    pixels = PixelBudget(cfg.video.min_pixels, cfg.video.max_pixels, cfg.video.backend)
    preset, budgets, cache = load_preset(protocol.preset), Budgets.from_config(protocol), FrameCache(1 << 28)
    trajectories = []
    for trace in traces[:count]:
        pair = pairs[trace["pair_id"]]
        videos = {"A": pair.video_a, "B": pair.video_b}
        trajectories.append(trace_trajectory(processor, pair, videos, frame_counts(videos),
                                             trace, preset, budgets, pixels, cache))
    rewards = [float(i % 2) for i in range(len(trajectories))]
    out = {"episodes": len(trajectories), "max_turns": protocol.max_turns,
           "turns": sum(len(t.turns) for t in trajectories),
           "tool_calls": sum(t.valid_calls for t in trajectories)}
    batches = {name: build_batch(trajectories, rewards, True, 1e-6, False, pack=pack).items
               for name, pack in (("packed", True), ("one_sample_per_turn", False))}
    run.learners.logprobs(batches["one_sample_per_turn"])  # the learners' frame caches warm up
    seconds = {name: [] for name in batches}
    for _ in range(2):  # alternated, the faster of two
        for name, items in batches.items():
            started = time.perf_counter()
            run.learners.logprobs(items)
            seconds[name].append(time.perf_counter() - started)
    for name, items in batches.items():
        out[name] = {"sequences": len(items), "forward_tokens": sum(len(it) for it in items),
                     "action_tokens": sum(sum(it.seq.action_mask) for it in items),
                     "learner_forward_s": round(min(seconds[name]), 3)}
    out["forward_tokens_saved_fraction"] = round(
        1 - out["packed"]["forward_tokens"] / out["one_sample_per_turn"]["forward_tokens"], 3)
    return out


def load_average() -> list:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repetitions (2-3 min)")
    parser.add_argument("--workdir", default="outputs/bench/grpo_step",
                        help="each run writes data, models and its MLflow store to a new "
                             "timestamped folder here")
    parser.add_argument("--steps", type=int, help="learning-check steps (30; quick: 8)")
    parser.add_argument("--timed-steps", type=int, help="steps without and with overlap each")
    parser.add_argument("--sync-reps", type=int)
    parser.add_argument("--traces", type=int, help="teacher traces for the packing count")
    parser.add_argument("--pairs", type=int, default=8, help="synthetic pairs (80%% train)")
    parser.add_argument("--primer-steps", type=int, default=400,
                        help="120 leaves the format at ~35%% of answers at temperature 1")
    parser.add_argument("--pairs-per-step", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--beta", type=float, default=0.01)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--loss-agg", default="token-mean",
                        choices=["token-mean", "seq-mean-token-mean"])
    args = parser.parse_args()
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    real_stdout = claim_stdout()

    import ray

    from jobs.grpo import GRPORun
    from vrt_ray import config

    root = Path(args.workdir) / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    root.mkdir(parents=True)
    started, load_before = time.perf_counter(), load_average()
    cfg = prepare(root, args)
    report = {"settings": {k: getattr(args, k) for k in (
        "quick", "steps", "timed_steps", "sync_reps", "pairs", "primer_steps", "pairs_per_step",
        "group_size", "lr", "beta", "temperature", "loss_agg")}}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        # timings on the primed model, where every step learns; then the learning check afresh
        run = GRPORun(config.load("tiny_cpu", overrides(root, args) + [
            "name=grpo-step-timing", f"checkpointing.dir={root}/ckpt_timing"]))
        log(f"actors up: {time.perf_counter() - started:.0f} s since start")
        try:
            off = timed_steps(run, args.timed_steps, False)
            on = timed_steps(run, args.timed_steps, True)
            report.update(trajectories_per_s=off["trajectories_per_s"],
                          stage_shares=off["stage_shares"],
                          overlap={"off": off, "on": on, "speedup": round(
                              on["trajectories_per_s"] / off["trajectories_per_s"], 3)},
                          weight_sync=weight_sync(run, args.sync_reps),
                          packing=packing(run, root, cfg, args.traces))
        finally:
            run.shutdown()
        run = GRPORun(cfg)
        try:
            report["learning"] = learning(run, args.steps)
            report["mlflow"] = {"uri": cfg.tracking.uri, "experiment": cfg.tracking.experiment,
                                "run_id": run.tracker.run_id,
                                "reward_plot": "plots/reward_mean.png"}
        finally:
            run.shutdown()
    finally:
        ray.shutdown()
    report["load_average_1_5_15"] = {"start": load_before, "end": load_average()}
    report["total_s"] = round(time.perf_counter() - started, 1)
    emit(real_stdout, report)


if __name__ == "__main__":
    main()
