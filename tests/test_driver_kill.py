"""A GRPO driver killed with SIGKILL mid-run, on a real Ray head started by the test, resumes
with `--resume` and twice the rollout workers, and ends at the run's final step: the learner
group is untouched by the rescale, the data position and the MLflow run carry on."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ray_head import VENV_BIN, ray_head
from vrt_ray import checkpoints
from vrt_ray.data.synth import SynthSettings, generate

STEPS = 6
REPO = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    with ray_head(tmp_path_factory.mktemp("ray")) as head:
        yield head


def _grpo(head, root: Path, model: Path, *more: str) -> subprocess.Popen:
    overrides = [f"model.path={model}", f"data.dir={root}/data", f"output_dir={root}/out",
                 f"checkpointing.dir={root}/ckpt", "checkpointing.every_steps=1",
                 f"tracking.uri=sqlite:///{root}/mlflow.db", "tracking.experiment=kill-test",
                 f"grpo.steps={STEPS}", "grpo.pairs_per_step=1", "grpo.group_size=2",
                 "protocol.max_new_tokens=16", "protocol.max_turns=1",
                 "protocol.initial_frames=2", *more]
    return subprocess.Popen([f"{VENV_BIN}/vrt-ray", "grpo", "tiny_cpu", *overrides],
                            env={**head.env, "RAY_ADDRESS": head.address}, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_killed_driver_resumes_with_twice_the_rollout_workers(head, tmp_path, tiny_model_dir):
    generate(tmp_path / "data", SynthSettings(pairs=6, min_frames=16, max_frames=24, seed=2),
             progress=False)
    first = _grpo(head, tmp_path, tiny_model_dir, "rollout.num_workers=1")
    deadline = time.monotonic() + 420
    while not (tmp_path / "ckpt" / "step_000002").is_dir():
        assert first.poll() is None, first.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint of step 2 in time"
        time.sleep(0.2)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    killed_at = checkpoints.read_state(checkpoints.latest(tmp_path / "ckpt"))
    assert 2 <= killed_at.step < STEPS

    resumed = _grpo(head, tmp_path, tiny_model_dir, "rollout.num_workers=2", "--resume")
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output[-3000:]
    assert f"resuming from step {killed_at.step}" in output
    final = checkpoints.read_state(checkpoints.latest(tmp_path / "ckpt"))
    assert final.step == STEPS
    assert final.data_position == killed_at.data_position + (STEPS - killed_at.step)
    assert final.tracking_run_id == killed_at.tracking_run_id
    config = json.loads((tmp_path / "ckpt" / f"step_{STEPS:06d}" / "state.json").read_text())
    assert config["step"] == STEPS
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    steps = {m.step for m in client.get_metric_history(final.tracking_run_id, "reward_mean")}
    assert steps == set(range(1, STEPS + 1))
    assert client.get_run(final.tracking_run_id).info.status == "FINISHED"
