"""The episode runner: batched, engine-agnostic, one `Trajectory` per episode.

No barrier per turn: an episode goes back to the engine (`submit`) as soon as its turn came
back (`collect`) and its tool ran, never waiting for the slowest episode of a batch. vLLM
schedules each request as it comes; the HF engine's generate call takes every pending episode
(up to `max_batch`, oldest first). `replay` builds the same per-turn contexts for given assistant
texts (teacher traces, SFT samples) without generating.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from tqdm import tqdm

from vrt_ray.engines.base import Engine, Prompt, SamplingParams
from vrt_ray.frame_cache import FrameCache
from vrt_ray.model_inputs import FrameSource, PixelBudget, processor_inputs
from vrt_ray.preset import Preset
from vrt_ray.protocol import Budgets, Episode, EpisodeInput, Visual, render
from vrt_ray.trajectory import Trajectory, Turn


@dataclass(frozen=True)
class EpisodeJob:
    inp: EpisodeInput
    sample_index: int = 0


def prepare_prompt(processor, episode: Episode, source: FrameSource) -> Tuple[Prompt, List[Visual]]:
    """The engine prompt of the episode's next turn: windowed context rendered by the chat
    template, with its frames decoded at the run's pixel budget."""
    messages, visuals = render(episode.context())
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    images, videos = source.visuals(visuals)
    return Prompt(text, images, videos), visuals


def run_episodes(engine: Engine, jobs: Sequence[EpisodeJob], preset: Preset, budgets: Budgets,
                 sampling: SamplingParams, pixels: PixelBudget, max_batch: int = 8,
                 max_context_tokens: int = 32768, cache: Optional[FrameCache] = None,
                 progress: bool = False, timings: Optional[Dict[str, float]] = None
                 ) -> List[Trajectory]:
    """Run `jobs` to completion with `engine`; the model's mistakes end up in the trajectories.
    Seconds spent preparing prompts, generating and executing tools are added to `timings`."""
    timings = {} if timings is None else timings
    for key in ("prepare_s", "generate_s", "tool_s"):
        timings.setdefault(key, 0.0)
    episodes = [Episode(job.inp, preset, budgets) for job in jobs]
    sources = [FrameSource(job.inp.videos, pixels, cache) for job in jobs]
    trajectories = [_new_trajectory(job, preset, pixels, engine.policy_version) for job in jobs]
    for episode, source, trajectory in zip(episodes, sources, trajectories):
        _check_initial_view(episode, source, trajectory)
    tokenizer = engine.processor.tokenizer
    bar = tqdm(total=len(jobs), desc="episodes", disable=not progress)
    bar.update(sum(e.done for e in episodes))
    visuals_of: Dict[int, List[Visual]] = {}

    def submit(i: int) -> None:
        started = time.perf_counter()
        prompt, visuals_of[i] = prepare_prompt(engine.processor, episodes[i], sources[i])
        timings["prepare_s"] += time.perf_counter() - started
        engine.submit(i, prompt, sampling)

    for i, episode in enumerate(episodes):
        if not episode.done:
            submit(i)
    in_flight = sum(not e.done for e in episodes)
    while in_flight:
        started = time.perf_counter()
        finished = engine.collect(max_batch)
        stepped = time.perf_counter()
        timings["generate_s"] += stepped - started
        for i, gen in finished:  # each goes back to the engine as soon as its tool ran
            trajectories[i].turns.append(Turn(gen.prompt_ids, visuals_of.pop(i), gen.token_ids,
                                              gen.logprobs, gen.finish_reason))
            text = tokenizer.decode(gen.token_ids, skip_special_tokens=True)
            episodes[i].step(text, sources[i].fetch)
            if not episodes[i].done and len(gen.prompt_ids) + len(gen.token_ids) >= max_context_tokens:
                episodes[i].end_for_budget("context")
            if episodes[i].done:
                in_flight -= 1
                bar.update(1)
            else:
                submit(i)
        timings["tool_s"] += time.perf_counter() - stepped
    bar.close()
    return [_finish(t, e) for t, e in zip(trajectories, episodes)]


def replay(processor, job: EpisodeJob, preset: Preset, budgets: Budgets, pixels: PixelBudget,
           assistant_texts: Sequence[str], cache: Optional[FrameCache] = None) -> Trajectory:
    """The trajectory an engine would produce by writing `assistant_texts`, turn by turn: each
    turn's context is built exactly as `run_episodes` builds it, the text is tokenised and
    closed with <|im_end|>, and no log-probs are attached."""
    episode = Episode(job.inp, preset, budgets)
    source = FrameSource(job.inp.videos, pixels, cache)
    trajectory = _new_trajectory(job, preset, pixels, policy_version=-1)
    _check_initial_view(episode, source, trajectory)
    end_id = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    for text in assistant_texts:
        if episode.done:
            break
        prompt, visuals = prepare_prompt(processor, episode, source)
        prompt_ids = processor_inputs(processor, prompt.text, prompt.images,
                                      prompt.videos)["input_ids"][0].tolist()
        token_ids = processor.tokenizer.encode(text, add_special_tokens=False) + [end_id]
        trajectory.turns.append(Turn(prompt_ids, visuals, token_ids, [], "stop"))
        episode.step(text, source.fetch)
    return _finish(trajectory, episode)


def _new_trajectory(job: EpisodeJob, preset: Preset, pixels: PixelBudget,
                    policy_version: int) -> Trajectory:
    return Trajectory(pair_id=job.inp.pair_id, sample_index=job.sample_index,
                      policy_version=policy_version, preset=preset.name,
                      videos=dict(job.inp.videos),
                      budget={"min_pixels": pixels.min_pixels, "max_pixels": pixels.max_pixels,
                              "backend": pixels.backend})


def _check_initial_view(episode: Episode, source: FrameSource, trajectory: Trajectory) -> None:
    """An episode whose initial frames cannot be decoded ends before its first turn."""
    try:
        source.visuals(render(episode.context())[1])
    except Exception as exc:
        episode.end_for_budget("unreadable_video")
        trajectory.end_reason = f"unreadable_video: {' '.join(str(exc).split())[:300]}"


def _finish(trajectory: Trajectory, episode: Episode) -> Trajectory:
    answer = episode.answer
    trajectory.verdicts = dict(answer.verdicts) if answer else {}
    trajectory.answer_complete = bool(answer and answer.complete)
    trajectory.end_reason = trajectory.end_reason or episode.end_reason
    trajectory.valid_calls = episode.valid_calls
    trajectory.invalid_calls = episode.invalid_calls
    trajectory.tool_failures = episode.tool_failures
    trajectory.frames_fetched = episode.frames_fetched
    trajectory.turns_over_budget = episode.turns_over_budget
    trajectory.outcomes = list(episode.outcomes)
    trajectory.messages = episode.messages
    return trajectory
