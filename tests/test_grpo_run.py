"""GRPO on a real local Ray (2 CPUs): 2 rollout workers, 1 reference, 1 verifier, a learner group
of 2 (ZeRO-2 on gloo), the tiny model taught the answer format (vrt_ray/primer.py), synthetic
data. The tests run in file order on one run: steps, faults, then a resume."""
import time

import pytest
import ray
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from vrt_ray import checkpoints, config
from vrt_ray.data.loaders import load_pairs
from vrt_ray.data.synth import SynthSettings, generate

B, G = 2, 2


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_model_dir):
    from vrt_ray.primer import prime

    root = tmp_path_factory.mktemp("grpo_run")
    generate(root / "data", SynthSettings(pairs=6, min_frames=16, max_frames=40, seed=3))
    cfg = config.load("tiny_cpu", _overrides(root))
    pairs = load_pairs(root / "data" / "train.jsonl", "jsonl").pairs
    prime(tiny_model_dir, root / "primed", pairs, cfg, steps=120, seed=0)
    return root


def _overrides(root, *more):
    return [f"model.path={root}/primed", f"data.dir={root}/data",
            f"checkpointing.dir={root}/ckpt", "checkpointing.every_steps=1",
            f"tracking.uri=sqlite:///{root}/mlflow.db", "tracking.experiment=grpo-test",
            "protocol.max_new_tokens=48", "protocol.max_turns=2", "protocol.initial_frames=2",
            f"grpo.pairs_per_step={B}", f"grpo.group_size={G}", "grpo.steps=2",
            "rollout.timeout_s=120", "grpo.lr=1e-3", *more]


@pytest.fixture(scope="module")
def run(workdir):
    from jobs.grpo import GRPORun

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    grpo_run = GRPORun(config.load("tiny_cpu", _overrides(workdir)))
    yield grpo_run
    grpo_run.shutdown()
    ray.shutdown()


def test_two_steps_learn_sync_and_log(run, workdir):
    before = load_file(workdir / "primed" / "model.safetensors")
    state = run.train()
    assert state.step == 2 and state.data_position == 2 * B
    assert state.policy_version >= 1  # at least one step had a group with a reward spread
    assert run.rollouts.ready() == [state.policy_version] * 2  # every worker holds the new weights
    saved = checkpoints.latest(workdir / "ckpt")
    assert saved.name == "step_000002" and checkpoints.read_state(saved).step == 2
    after = load_file(saved / "policy" / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)

    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    logged = client.get_run(state.tracking_run_id)
    assert logged.data.params["grpo.group_size"] == str(G)
    for key in ("reward_mean", "format_rate", "accuracy_overall", "time/rollout_s",
                "time/learn_share", "kept_group_fraction", "tool_calls_per_episode"):
        assert [m.step for m in client.get_metric_history(state.tracking_run_id, key)] == [1, 2]
    assert [m.value for m in client.get_metric_history(state.tracking_run_id, "trajectories")] \
        == [B * G, B * G]
    kl = client.get_metric_history(state.tracking_run_id, "learner/kl")
    assert kl and all(m.value >= -1e-6 for m in kl)  # k3 is non-negative
    (version,) = client.search_model_versions("name='vrt-ray-tiny'")  # the final policy
    assert version.run_id == state.tracking_run_id
    assert "policy/model.safetensors" in {a.path for a in client.list_artifacts(version.run_id,
                                                                                "policy")}


def test_each_video_is_decoded_by_one_worker_only(run):
    stats = run.rollouts.cache_stats()
    files = [set(s["decoded_by_file"]) for s in stats]
    assert all(files) and not files[0] & files[1]


def test_a_worker_killed_mid_step_is_restarted_and_its_episodes_rerun(run):
    run.cfg.grpo.steps = run.state.step + 1
    victim = run.rollouts.workers[0]
    victim.__ray_call__.remote(lambda self: time.sleep(5))  # keeps the step's call in flight
    pending = run.submit(run.state.data_position)
    time.sleep(1.0)
    ray.kill(victim, no_restart=False)
    metrics, _ = run.step(pending)
    assert metrics["lost_rollout_calls"] >= 1 and metrics["trajectories"] == B * G
    assert len(pending.results) == B * G == len(set(pending.results))
    assert pending.journal.reissued >= 1
    assert run.rollouts.ready() == [run.state.policy_version] * 2  # the restarted one caught up


def test_a_hung_worker_is_treated_as_dead(run):
    run.cfg.grpo.steps = run.state.step + 1
    run.rollouts.timeout_s = 15.0
    hung = run.rollouts.workers[1]
    hung.__ray_call__.remote(lambda self: time.sleep(600))  # blocks the actor's only thread
    pending = run.submit(run.state.data_position)
    started = time.monotonic()
    metrics, _ = run.step(pending)
    assert time.monotonic() - started < 120
    assert metrics["lost_rollout_calls"] >= 1 and metrics["trajectories"] == B * G
    assert sorted(pending.results) == sorted(pending.order)
    assert run.rollouts.ready() == [run.state.policy_version] * 2


def _engine_weights(worker):
    return ray.get(worker.__ray_call__.remote(
        lambda self: {k: v.clone() for k, v in self.judge.engine.model.state_dict().items()}))


def test_gloo_sync_after_a_restart_gives_every_worker_the_learners_weights(run):
    learner = run.learners.weights()
    version = run.state.policy_version + 7  # a new label for the same weights
    for label in (version, version + 1):  # the second sync reuses the transfer group
        seconds = run.rollouts.sync(run.learners, label, "gloo")
        assert seconds > 0 and run.rollouts.ready() == [label] * 2
    assert run.rollouts.transfer is not None
    for worker in run.rollouts.workers:
        got = _engine_weights(worker)
        assert all(torch.equal(got[k], learner[k]) for k in learner)
    run.rollouts.sync(run.learners, run.state.policy_version, "object_store")


def test_resume_continues_at_the_saved_step_and_data_position(run, workdir):
    run.checkpoint()
    saved = checkpoints.read_state(checkpoints.latest(workdir / "ckpt"))
    run.shutdown()
    from jobs.grpo import GRPORun

    resumed = GRPORun(config.load("tiny_cpu", _overrides(workdir, f"grpo.steps={saved.step + 1}")),
                      resume=True)
    try:
        assert resumed.state.step == saved.step
        assert resumed.state.data_position == saved.data_position
        assert resumed.learners.version() == saved.policy_version
        assert resumed.rollouts.ready() == [saved.policy_version] * 2
        expected = [resumed.pairs[i].id for i in resumed.sampler.batch(saved.data_position, B)]
        pending = resumed.submit(resumed.state.data_position)
        assert [pid for pid, _ in pending.order[::G]] == expected
        metrics, _ = resumed.step(pending)
        assert resumed.state.step == saved.step + 1 and metrics["trajectories"] == B * G
        assert resumed.tracker.run_id == saved.tracking_run_id
    finally:
        resumed.shutdown()
