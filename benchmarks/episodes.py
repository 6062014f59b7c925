"""Episode throughput of the HF engine on the tiny model; prints JSON.

Measures episodes/s and generated tokens/s, the share of time spent executing tools (frame
decoding through the cache), the frame cache hit rate, and the forward-pass tokens that packing
saves against one sample per turn, on sampled episodes and on scripted (teacher-like) ones.
Usage: python benchmarks/episodes.py [--episodes 16] [--max-batch 8] [--max-new-tokens 32]
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from video_samples import encode  # noqa: E402

from vrt_ray.engines.base import SamplingParams  # noqa: E402
from vrt_ray.engines.hf import HFEngine  # noqa: E402
from vrt_ray.episodes import EpisodeJob, replay, run_episodes  # noqa: E402
from vrt_ray.frame_cache import FrameCache  # noqa: E402
from vrt_ray.model_inputs import PixelBudget  # noqa: E402
from vrt_ray.models import load_policy, load_processor, make_tiny  # noqa: E402
from vrt_ray.preset import load_preset  # noqa: E402
from vrt_ray.protocol import Budgets, EpisodeInput  # noqa: E402
from vrt_ray.trajectory import to_sequences  # noqa: E402


def packing_savings(trajectories):
    per_turn = sum(len(s.input_ids) for t in trajectories for s in to_sequences(t.turns, pack=False))
    packed = sum(len(s.input_ids) for t in trajectories for s in to_sequences(t.turns))
    return {"tokens_one_sample_per_turn": per_turn, "tokens_packed": packed,
            "saved_fraction": round(1 - packed / per_turn, 3) if per_turn else 0.0}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vrt-bench-"))
    model_dir = make_tiny(work / "model")
    videos = {"A": str(encode(work / "a.mp4", "libx264", 128, size=(112, 112))),
              "B": str(encode(work / "b.mp4", "libx264", 96, size=(112, 112)))}
    pixels = PixelBudget(56 * 56, 112 * 112)
    engine = HFEngine(load_policy(model_dir), load_processor(model_dir, 56 * 56, 112 * 112))
    preset, budgets = load_preset("vrt"), Budgets(memory_window=2, max_turns=6)
    jobs = [EpisodeJob(EpisodeInput(f"p{i // 4}", "a red square moving right", videos,
                                    {"A": 128, "B": 96}), i % 4) for i in range(args.episodes)]
    cache, timings = FrameCache(256 << 20), {}
    started = time.perf_counter()
    trajectories = run_episodes(engine, jobs, preset, budgets,
                                SamplingParams(temperature=1.0, max_new_tokens=args.max_new_tokens),
                                pixels, max_batch=args.max_batch, cache=cache, timings=timings)
    wall = time.perf_counter() - started
    generated = sum(len(turn.token_ids) for t in trajectories for turn in t.turns)
    call = lambda video, frames: '<think>check</think><tool_call>' + json.dumps(
        {"name": "select_frames", "arguments": {"video": video, "target_frames": frames}}) + '</tool_call>'
    script = [call("A", list(range(10, 80, 10))), call("B", list(range(5, 90, 12))),
              call("A", [41, 42, 43]),
              '<answer>{"TA": "A", "VQ": "B", "MQ": "tie", "overall": "A"}</answer>']
    scripted = [replay(engine.processor, job, preset, Budgets(memory_window=3), pixels, script,
                       cache=cache) for job in jobs[:4]]
    print(json.dumps({
        "engine": "hf", "device": "cpu", "model": "tiny", "episodes": len(trajectories),
        "max_batch": args.max_batch, "max_new_tokens": args.max_new_tokens,
        "wall_s": round(wall, 2), "episodes_per_s": round(len(trajectories) / wall, 3),
        "generated_tokens_per_s": round(generated / wall, 1),
        "turns_per_episode": round(sum(len(t.turns) for t in trajectories) / len(trajectories), 2),
        "time_share": {k: round(v / wall, 3) for k, v in timings.items()},
        "frame_cache": {"hits": cache.hits, "misses": cache.misses,
                        "hit_rate": round(cache.hits / max(1, cache.hits + cache.misses), 3),
                        "decoded_frames": cache.decoded_frames},
        "packing_sampled_episodes": packing_savings(trajectories),
        "packing_scripted_episodes": packing_savings(scripted),
    }, indent=2))


if __name__ == "__main__":
    main()
