"""Our GRPO step against TRL's `GRPOTrainer` on the same tiny Qwen2.5-VL; prints JSON.

Single-turn, one image per prompt (a frame of a real video), 2 prompts x 4 completions = 8
trajectories per step, the same max new tokens, sampling at temperature 1 (top-p 1, no top-k),
the same beta (default 0: no reference model; > 0: a reference model and the k3 KL estimator on
both sides), clip 0.2 / 0.28, token-mean loss, AdamW at a constant learning rate, gradient
clipping at 1.0, and the same reward: the share of ASCII letters in the completion's text. Both
use 2 CPU cores:
- TRL: `GRPOTrainer` in this process with 2 torch threads (transformers `generate`, then one
  batched forward/backward);
- ours: local Ray with 2 CPUs: an HFEngine actor (1 CPU) and a learner group of one DeepSpeed
  ZeRO-2 rank (1 CPU); the engine's log-probs are the old log-probs (no extra forward), the
  rollout of step t+1 runs while step t learns (one-step off-policy), then the weights go to the
  engine through the object store; with beta > 0 a ReferencePolicy actor scores the batch on
  the learner's core just before the learning step.
Per size: trajectories/s of each (first step excluded as warm-up), the ratio, and per-stage
seconds and time shares of a step (overlapped stages of ours run on different cores at the same
time, so their shares add up to more than 1), and the share of the machine's cores that other
processes took during the measured steps (the machine may be shared: a step that had to share
its cores is slower).
Usage: python benchmarks/grpo_vs_trl.py [--steps 4] [--sizes small large] [--beta 0.0]
"""
import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import psutil  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
from video_samples import encode  # noqa: E402

from actors.learner import LearnerGroup  # noqa: E402
from actors.reference import ReferencePolicy  # noqa: E402
from vrt_ray.config import GRPOConfig, LearnerConfig  # noqa: E402
from vrt_ray.engines.base import SamplingParams  # noqa: E402
from vrt_ray.frame_cache import FrameCache  # noqa: E402
from vrt_ray.grpo import group_advantages  # noqa: E402
from vrt_ray.learner_core import train_sequences  # noqa: E402
from vrt_ray.model_inputs import FrameSource, PixelBudget  # noqa: E402
from vrt_ray.models import TinySpec, load_policy, load_processor, make_tiny  # noqa: E402
from vrt_ray.protocol import FrameRef  # noqa: E402
from vrt_ray.trajectory import Trajectory, Turn  # noqa: E402

SIZES = {
    "small": dict(spec=TinySpec(hidden_size=64, intermediate_size=256, num_layers=2, num_heads=1,
                                num_kv_heads=1), max_new_tokens=64),
    "large": dict(spec=TinySpec(hidden_size=256, intermediate_size=1024, num_layers=4,
                                num_heads=4, num_kv_heads=2), max_new_tokens=256),
}
PROMPTS_PER_STEP, GROUP = 2, 4
PIXELS = PixelBudget(min_pixels=56 * 56, max_pixels=112 * 112)
VIDEO_FRAMES = 16
QUESTIONS = ["What is in the picture?", "Describe the image.", "Which cells are red?",
             "Count the coloured squares."]
LR, CLIP_LOW, CLIP_HIGH, MAX_GRAD_NORM = 1e-5, 0.2, 0.28, 1.0


def reward(text: str) -> float:
    """The share of ASCII letters in a completion's text: deterministic, varied across samples."""
    return sum(c.isascii() and c.isalpha() for c in text) / max(len(text), 1)


def trl_reward(completions, **_):
    return [reward(c[-1]["content"] if isinstance(c, list) else c) for c in completions]


def prompt_of(i: int):
    """Prompt i: a question and frame i of the video, as a FrameRef (ours) and pixels (TRL)."""
    return QUESTIONS[i % len(QUESTIONS)], FrameRef("A", i % VIDEO_FRAMES + 1)


def chat(question: str) -> list:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


def cpu_mark():
    """(time, busy CPU seconds of the whole machine, CPU seconds of each process of this tree)."""
    t = psutil.cpu_times()
    me = psutil.Process()
    ours = {}
    for p in [me] + me.children(recursive=True):  # Ray's processes are this one's descendants
        try:
            c = p.cpu_times()
        except psutil.Error:
            continue
        ours[p.pid] = c.user + c.system
    return (time.perf_counter(), t.user + t.nice + t.system + t.irq + t.softirq + t.steal, ours)


def others_share(start, end) -> float:
    """The share of the machine's cores that processes outside this tree used between two marks:
    the machine is shared, and a measurement taken while others ran says so."""
    ours = sum(v - start[2].get(pid, 0.0) for pid, v in end[2].items())
    other = (end[1] - start[1]) - ours
    return round(max(other, 0.0) / (psutil.cpu_count() * (end[0] - start[0])), 3)


def mean_shares(stages: list, walls: list) -> dict:
    """Per-stage mean seconds of the measured steps and their shares of the mean step time."""
    wall = statistics.mean(walls)
    seconds = {k: statistics.mean(s[k] for s in stages) for k in stages[0]}
    return {"step_s": round(wall, 3), "stages_s": {k: round(v, 3) for k, v in seconds.items()},
            "shares": {k: round(v / wall, 3) for k, v in seconds.items()}}


# ---- TRL ------------------------------------------------------------------------------------

def run_trl(model_dir: Path, video: str, max_new_tokens: int, steps: int, beta: float,
            out: Path) -> dict:
    """TRL's GRPOTrainer for `steps` steps in this process (2 torch threads)."""
    import datasets
    from PIL import Image
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOConfig as TRLConfig, GRPOTrainer

    torch.set_num_threads(2)
    source = FrameSource({"A": video}, PIXELS, FrameCache(1 << 26))
    rows = [prompt_of(i) for i in range(steps * PROMPTS_PER_STEP)]
    dataset = datasets.Dataset.from_dict({
        "prompt": [[{"role": "user", "content": q}] for q, _ in rows],
        "image": [Image.fromarray(source.frames([ref])[0]) for _, ref in rows]})
    args = TRLConfig(
        output_dir=str(out), use_cpu=True, bf16=False, report_to="none", save_strategy="no",
        disable_tqdm=True, logging_steps=1, seed=0, max_steps=steps,
        per_device_train_batch_size=PROMPTS_PER_STEP * GROUP, num_generations=GROUP,
        gradient_accumulation_steps=1, max_completion_length=max_new_tokens, temperature=1.0,
        top_p=1.0, top_k=0, beta=beta, epsilon=CLIP_LOW, epsilon_high=CLIP_HIGH, loss_type="dapo",
        learning_rate=LR, lr_scheduler_type="constant", weight_decay=0.0,
        max_grad_norm=MAX_GRAD_NORM, shuffle_dataset=False, dataloader_num_workers=0)
    trainer = GRPOTrainer(model=load_policy(model_dir), reward_funcs=trl_reward, args=args,
                          train_dataset=dataset,
                          processing_class=load_processor(model_dir, PIXELS.min_pixels,
                                                          PIXELS.max_pixels))
    spent = {"generate": 0.0, "generate_and_score": 0.0, "training_step": 0.0}
    prompt_tokens = []

    def timed(name, fn):
        def wrapper(*a, **kw):
            started = time.perf_counter()
            result = fn(*a, **kw)
            spent[name] += time.perf_counter() - started
            if name == "generate":  # (prompt ids, completion ids, ...)
                prompt_tokens.extend(len(ids) for ids in result[0])
            return result
        return wrapper

    for name, attr in (("generate", "_generate"),
                       ("generate_and_score", "_generate_and_score_completions"),
                       ("training_step", "training_step")):
        setattr(trainer, attr, timed(name, getattr(trainer, attr)))
    ends, stages, marks = [], [], []

    class StepTimes(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())
            marks.append(cpu_mark())
            stages.append({
                "generate": spent["generate"],
                # rewards, advantages, pixel inputs; the reference's forward when beta > 0
                "score_and_prepare": spent["generate_and_score"] - spent["generate"],
                "forward_backward": spent["training_step"] - spent["generate_and_score"]})
            spent.update(generate=0.0, generate_and_score=0.0, training_step=0.0)

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(StepTimes())
    started = time.perf_counter()
    trainer.train()
    walls = [b - a for a, b in zip([started] + ends, ends)][1:]
    for s, wall in zip(stages[1:], walls):
        s["optimizer_data_logging"] = wall - sum(s.values())
    lengths = [m["completions/mean_length"] for m in trainer.state.log_history
               if "completions/mean_length" in m]
    return {"trajectories_per_s": round(PROMPTS_PER_STEP * GROUP * len(walls) / sum(walls), 3),
            "mean_prompt_tokens": round(statistics.mean(prompt_tokens), 1),
            "mean_completion_tokens": round(statistics.mean(lengths[1:]), 1),
            "others_cpu_share": others_share(marks[0], marks[-1]),
            **mean_shares(stages[1:], walls)}


# ---- ours -----------------------------------------------------------------------------------

@ray.remote
class Sampler:
    """An HFEngine on one core: generates a step's completions; loads synced weights."""

    def __init__(self, model_dir: str, video: str, seed: int):
        from vrt_ray.engines.hf import HFEngine

        torch.set_num_threads(1)
        processor = load_processor(model_dir, PIXELS.min_pixels, PIXELS.max_pixels)
        self.engine = HFEngine(load_policy(model_dir), processor, seed=seed)
        self.source = FrameSource({"A": video}, PIXELS, FrameCache(1 << 26))

    def generate(self, texts, refs, sampling):
        from vrt_ray.engines.base import Prompt

        started = time.perf_counter()
        prompts = [Prompt(t, images=self.source.frames([r])) for t, r in zip(texts, refs)]
        return self.engine.generate(prompts, sampling), time.perf_counter() - started

    def load_weights(self, state, version: int) -> float:
        started = time.perf_counter()
        self.engine.model.load_state_dict(state)
        self.engine.policy_version = version
        return time.perf_counter() - started


def run_ours(model_dir: Path, video: str, max_new_tokens: int, steps: int, beta: float) -> dict:
    """Our step for `steps` steps: rollout of step t+1 overlapped with learning step t (and with
    the reference's scoring when beta > 0)."""
    processor = load_processor(model_dir, PIXELS.min_pixels, PIXELS.max_pixels)
    sampling = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=max_new_tokens)
    one_thread = {"env_vars": {"OMP_NUM_THREADS": "1"}}
    sampler = Sampler.options(num_cpus=1, runtime_env=one_thread).remote(str(model_dir), video, 0)
    group = LearnerGroup(
        LearnerConfig(world_size=1, num_cpus_per_worker=1, zero_stage=2,
                      max_grad_norm=MAX_GRAD_NORM),
        str(model_dir), pixels=PIXELS, lr=LR, env=one_thread["env_vars"],
        grpo=GRPOConfig(beta=beta, kl_estimator="k3", clip_low=CLIP_LOW, clip_high=CLIP_HIGH,
                        loss_agg="token-mean"))
    # the reference shares the learner's core: the two run one after the other
    reference = ReferencePolicy.options(num_cpus=0, runtime_env=one_thread).remote(
        str(model_dir), PIXELS.min_pixels, PIXELS.max_pixels) if beta > 0 else None

    def rollout(step: int):
        rows = [prompt_of(step * PROMPTS_PER_STEP + p) for p in range(PROMPTS_PER_STEP)]
        texts = [processor.apply_chat_template(chat(q), tokenize=False, add_generation_prompt=True)
                 for q, _ in rows for _ in range(GROUP)]
        return sampler.generate.remote(texts, [ref for _, ref in rows for _ in range(GROUP)],
                                       sampling)

    pending, version = rollout(0), 0
    walls, stages, lengths, prompt_tokens, marks = [], [], [], [], []
    for step in range(steps):
        started = time.perf_counter()
        generations, generate_s = ray.get(pending)  # at once but on the first step
        if stages:
            stages[-1]["generate"] = generate_s  # the rollout ran during the previous step
        pending = rollout(step + 1)  # runs while this step learns (on the last step too, as
        # in a run that goes on)
        score_started = time.perf_counter()
        rewards = [reward(processor.tokenizer.decode(g.token_ids, skip_special_tokens=True))
                   for g in generations]
        advantages = group_advantages(rewards, [i // GROUP for i in range(len(generations))])
        items = []
        for i, g in enumerate(generations):
            _, ref = prompt_of(step * PROMPTS_PER_STEP + i // GROUP)
            turn = Turn(g.prompt_ids, [("image", (ref,))], g.token_ids, g.logprobs,
                        g.finish_reason)
            items += train_sequences(Trajectory(
                f"p{step}-{i // GROUP}", i % GROUP, version, "single-turn", {"A": video},
                dataclasses.asdict(PIXELS), turns=[turn]))
        score_s = time.perf_counter() - score_started
        reference_started = time.perf_counter()
        ref_logprobs = ray.get(reference.logprobs.remote(items)) if reference else None
        reference_s = time.perf_counter() - reference_started
        learn_started = time.perf_counter()
        group.train_grpo(items, advantages, ref_logprobs)
        learn_s = time.perf_counter() - learn_started
        export_started = time.perf_counter()
        state = group.weights()
        export_s = time.perf_counter() - export_started
        version += 1
        load_s = ray.get(sampler.load_weights.remote(state, version))  # after the next rollout
        walls.append(time.perf_counter() - started)
        marks.append(cpu_mark())
        lengths.append(statistics.mean(len(g.token_ids) for g in generations))
        prompt_tokens.extend(len(g.prompt_ids) for g in generations)
        stages.append({"generate": None, "score_and_prepare": score_s, "reference": reference_s,
                       "learn": learn_s, "weight_export": export_s, "weight_load": load_s})
    stages[-1]["generate"] = ray.get(pending)[1]
    group.shutdown()
    for actor in (sampler, reference):
        if actor is not None:
            ray.kill(actor)
    report = mean_shares(stages[1:], walls[1:])
    seconds = report["stages_s"]
    report["core_busy"] = {
        "engine": round((seconds["generate"] + seconds["weight_load"]) / report["step_s"], 3),
        "learner": round((seconds["reference"] + seconds["learn"] + seconds["weight_export"])
                         / report["step_s"], 3)}
    return {"trajectories_per_s": round(PROMPTS_PER_STEP * GROUP * (steps - 1) / sum(walls[1:]), 3),
            "mean_prompt_tokens": round(statistics.mean(prompt_tokens), 1),
            "mean_completion_tokens": round(statistics.mean(lengths[1:]), 1),
            "others_cpu_share": others_share(marks[0], marks[-1]), **report}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def measure(sizes, steps: int, beta: float) -> dict:
    report = {"cpus": os.cpu_count(), "trajectories_per_step": PROMPTS_PER_STEP * GROUP,
              "prompts_per_step": PROMPTS_PER_STEP, "group_size": GROUP, "beta": beta,
              "measured_steps": steps - 1, "load_before": uptime()}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        video = str(encode(Path(tmp) / "frames.mp4", "libx264", VIDEO_FRAMES, size=(112, 112)))
        for name in sizes:
            size = SIZES[name]
            model_dir = make_tiny(Path(tmp) / name, spec=size["spec"])
            params = sum(p.numel() for p in load_policy(model_dir).parameters())
            trl = run_trl(model_dir, video, size["max_new_tokens"], steps, beta, Path(tmp) / "trl")
            ours = run_ours(model_dir, video, size["max_new_tokens"], steps, beta)
            ratio = ours["trajectories_per_s"] / trl["trajectories_per_s"]
            report[name] = {
                "hidden_size": size["spec"].hidden_size, "layers": size["spec"].num_layers,
                "parameters": params, "max_new_tokens": size["max_new_tokens"],
                "ratio_ours_to_trl": round(ratio, 2), "ours": ours, "trl": trl}
    ray.shutdown()
    report["load_after"] = uptime()
    return report


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4, help="steps per side and size, the "
                        "first one a warm-up")
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--beta", type=float, default=0.0, help="KL coefficient of both sides "
                        "(k3 estimator); > 0 adds a reference model to each")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first is a warm-up)")
    with contextlib.redirect_stdout(sys.stderr):  # the libraries' own prints; stdout is the JSON
        report = measure(args.sizes, args.steps, args.beta)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
