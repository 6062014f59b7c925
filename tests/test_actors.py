"""Rollout and verifier actors on a real local Ray."""
import json

import pytest
import ray
import torch
from omegaconf import OmegaConf
from video_samples import encode

from actors.reference import ReferencePolicy
from actors.rollout import RolloutWorker
from actors.verifier import RewardVerifier
from vrt_ray import config


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def cfg():
    return OmegaConf.to_container(config.load("tiny_cpu", [
        "protocol.max_new_tokens=8", "protocol.max_turns=2", "protocol.initial_frames=2",
        "video.min_pixels=784", "video.max_pixels=3136"]))


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("actor_videos")
    videos = {"A": str(encode(folder / "a.mp4", "libx264", 30)),
              "B": str(encode(folder / "b.mp4", "libx264", 20))}
    return [{"pair_id": "p0", "prompt": "a red square", "videos": videos,
             "num_frames": {"A": 30, "B": 20}, "sample_index": i} for i in range(3)]


def test_rollout_worker_runs_episodes_and_loads_weights_in_place(ray_local, cfg, jobs, tiny_model_dir):
    worker = RolloutWorker.options(num_cpus=0.5).remote(cfg, str(tiny_model_dir))
    assert ray.get(worker.policy_version.remote()) == 0
    answer = ray.get(worker.run.remote(jobs, 0.0))
    first = answer["trajectories"]
    assert answer["timings"]["generate_s"] > 0
    assert [t["sample_index"] for t in first] == [0, 1, 2]
    assert all(t["policy_version"] == 0 and t["turns"] for t in first)
    json.dumps(answer)  # plain data: it crosses process boundaries as is
    from vrt_ray.models import load_policy

    changed = {k: v * 1.5 for k, v in load_policy(tiny_model_dir).state_dict().items()}
    assert ray.get(worker.load_weights.remote(changed, 1)) == 1
    second = ray.get(worker.run.remote(jobs[:1], 0.0))["trajectories"]
    assert second[0]["policy_version"] == 1
    before = first[0]["turns"][0]["logprobs"]
    after = second[0]["turns"][0]["logprobs"]
    assert before != after  # same greedy context, new weights, new distribution
    with pytest.raises(ray.exceptions.RayTaskError, match="unexpected weights"):
        ray.get(worker.load_weights.remote({"nope.weight": torch.zeros(1)}, 2))


def test_verifier_actor_scores_trajectories(ray_local, cfg):
    weights = {**cfg["verifier"], "incomplete_answer_penalty": 0.5}
    verifier = RewardVerifier.options(num_cpus=0.25).remote(weights, ["TA", "VQ", "MQ"])
    trajectories = [
        {"pair_id": "p", "verdicts": {"TA": "A", "VQ": "B", "MQ": "tie", "overall": "A"},
         "invalid_calls": 0, "turns_over_budget": 0, "end_reason": "answer",
         "answer_complete": True},
        {"pair_id": "p", "verdicts": {}, "invalid_calls": 2, "turns_over_budget": 1,
         "end_reason": "budget", "answer_complete": False},
        {"pair_id": "p", "verdicts": {"TA": "B"}, "invalid_calls": 0, "turns_over_budget": 0,
         "end_reason": "answer", "answer_complete": False}]
    labels = {"p": {"TA": "A", "VQ": "B", "MQ": "tie", "overall": "A"}}
    right, empty, broken = ray.get(verifier.score.remote(trajectories, labels))
    assert right["all_correct"] and right["reward"] == pytest.approx(1.0)
    assert empty["reward"] == 0.0 and not empty["all_correct"]
    assert broken["reward"] == pytest.approx(-0.5)  # ended on an answer that did not parse


def test_reference_scores_action_tokens_as_the_engine_did(ray_local, cfg, jobs, tiny_model_dir):
    """Unchanged weights: the reference's log-probs on every action token equal the engine's."""
    from vrt_ray.learner_core import train_sequences
    from vrt_ray.trajectory import Trajectory

    worker = RolloutWorker.options(num_cpus=0.5).remote(cfg, str(tiny_model_dir))
    trajectory = Trajectory.from_dict(ray.get(worker.run.remote(jobs[:1], 1.0))["trajectories"][0])
    reference = ReferencePolicy.options(num_cpus=0.5).remote(
        str(tiny_model_dir), cfg["video"]["min_pixels"], cfg["video"]["max_pixels"])
    items = train_sequences(trajectory)
    scored = ray.get(reference.logprobs.remote(items))
    for item, logprobs in zip(items, scored):
        engine = [lp for lp, a in zip(item.seq.logprobs, item.seq.action_mask) if a]
        ours = [lp for lp, a in zip(logprobs, item.seq.action_mask) if a]
        assert ours == pytest.approx(engine, abs=2e-4)
