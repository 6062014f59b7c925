"""Learner group timings on the tiny model with local Ray; prints JSON.

For each ZeRO stage: group start seconds, GRPO and SFT step seconds (median of --steps), and the
learner's forward tokens per step with packing vs one sample per turn.
Usage: python benchmarks/learner_step.py [--episodes 8] [--steps 3] [--world-size 2]
"""
import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import ray  # noqa: E402
from vrt_ray.cli.stdout import claim_stdout, emit  # noqa: E402
from video_samples import encode  # noqa: E402

from actors.learner import LearnerGroup  # noqa: E402
from vrt_ray.config import GRPOConfig, LearnerConfig  # noqa: E402
from vrt_ray.episodes import EpisodeJob, replay  # noqa: E402
from vrt_ray.frame_cache import FrameCache  # noqa: E402
from vrt_ray.learner_core import train_sequences  # noqa: E402
from vrt_ray.model_inputs import PixelBudget  # noqa: E402
from vrt_ray.models import load_processor, make_tiny  # noqa: E402
from vrt_ray.preset import load_preset  # noqa: E402
from vrt_ray.protocol import Budgets, EpisodeInput  # noqa: E402

PIXELS = PixelBudget(min_pixels=28 * 28, max_pixels=56 * 56)


def scripted_episodes(model_dir, folder, n):
    """Teacher-like episodes: two frame requests, then an answer."""
    videos = {"A": str(encode(folder / "a.mp4", "libx264", 24)),
              "B": str(encode(folder / "b.mp4", "libx264", 16))}
    processor = load_processor(model_dir)
    call = lambda v, f: '<think>look</think><tool_call>' + json.dumps(
        {"name": "select_frames", "arguments": {"video": v, "target_frames": f}}) + '</tool_call>'
    answer = '<think>done</think><answer>{"TA": "A", "VQ": "B", "MQ": "tie", "overall": "A"}</answer>'
    cache = FrameCache(1 << 26)
    return [replay(processor, EpisodeJob(EpisodeInput(f"p{i}", "a red square", videos,
                                                      {"A": 24, "B": 16}), i),
                   load_preset("vrt"), Budgets(initial_frames=2, memory_window=4, max_turns=3),
                   PIXELS, [call("A", [i % 24]), call("B", [i % 16]), answer], cache=cache)
            for i in range(n)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--world-size", type=int, default=2)
    args = parser.parse_args()
    real_stdout = claim_stdout()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_tiny(Path(tmp) / "model")
        trajectories = scripted_episodes(model_dir, Path(tmp), args.episodes)
        items = [s for t in trajectories for s in train_sequences(t)]
        per_turn = sum(len(s) for t in trajectories for s in train_sequences(t, pack=False))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        report = {"episodes": args.episodes, "sequences": len(items),
                  "forward_tokens_packed": sum(len(s) for s in items),
                  "forward_tokens_one_sample_per_turn": per_turn}
        for stage in (2, 3):
            cfg = LearnerConfig(world_size=args.world_size, num_cpus_per_worker=2 / args.world_size,
                                zero_stage=stage, lr=1e-4, micro_batch_tokens=2048)
            group = LearnerGroup(cfg, str(model_dir), grpo=GRPOConfig(beta=0.0))
            logprobs = group.logprobs(items)
            for it, lps in zip(items, logprobs):
                it.seq.logprobs = [lp if a else None for lp, a in zip(lps, it.seq.action_mask)]
            advantages = [1.0 if i % 2 else -1.0 for i in range(len(items))]
            grpo = [group.train_grpo(items, advantages)["step_s"] for _ in range(args.steps)]
            sft = [group.train_sft(items)["step_s"] for _ in range(args.steps)]
            report[f"zero{stage}"] = {"group_start_s": round(group.start_s, 2),
                                      "grpo_step_s": round(statistics.median(grpo), 3),
                                      "sft_step_s": round(statistics.median(sft), 3)}
            group.shutdown()
        ray.shutdown()
    emit(real_stdout, report)


if __name__ == "__main__":
    main()
