"""`vrt-ray submit` against a real Ray head started by the test (127.0.0.1, its own ports): a
tiny GRPO job runs to SUCCEEDED, its logs come back on stdout, the head is stopped."""
import subprocess
from pathlib import Path

import pytest

from ray_head import VENV_BIN, ray_head
from vrt_ray.cli.submit_cmd import NO_AGENT, submit_when_ready
from vrt_ray.data.synth import SynthSettings, generate


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    with ray_head(tmp_path_factory.mktemp("ray")) as head:
        yield head


def test_a_submitted_grpo_job_succeeds_and_streams_its_logs(head, tmp_path, tiny_model_dir):
    address, env = head.dashboard, head.env
    generate(tmp_path / "data", SynthSettings(pairs=4, min_frames=16, max_frames=24, seed=1),
             progress=False)
    overrides = [f"model.path={tiny_model_dir}", f"data.dir={tmp_path}/data",
                 f"checkpointing.dir={tmp_path}/ckpt", f"tracking.uri=sqlite:///{tmp_path}/m.db",
                 "grpo.steps=1", "grpo.pairs_per_step=1", "grpo.group_size=2", "grpo.beta=0",
                 "protocol.max_new_tokens=16", "protocol.max_turns=1",
                 "protocol.initial_frames=2"]
    done = subprocess.run([f"{VENV_BIN}/vrt-ray", "submit", "--address", address, "tiny_cpu",
                           "grpo", *overrides], env=env, capture_output=True, text=True,
                          timeout=600, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "grpo: 1 steps done" in done.stdout  # the job's own output, streamed
    assert "SUCCEEDED" in done.stderr
    assert (tmp_path / "ckpt" / "step_000001" / "policy" / "config.json").is_file()


def test_a_failing_job_returns_a_nonzero_exit_code(head, tmp_path):
    address, env = head.dashboard, head.env
    done = subprocess.run([f"{VENV_BIN}/vrt-ray", "submit", "--address", address, "tiny_cpu",
                           "grpo", f"data.dir={tmp_path}/nothing"], env=env,
                          capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).parents[1])
    assert done.returncode == 1 and "FAILED" in done.stderr
    assert "no such file" in done.stdout  # the job's one-line error, streamed


class AgentNotUpYet:
    """Stands in for a JobSubmissionClient whose head has not started its job agent yet: Ray's
    500 answer to the first `misses` submissions (a state the tests cannot make on demand)."""

    def __init__(self, misses, error=NO_AGENT):
        self.misses, self.error, self.calls = misses, error, 0

    def submit_job(self, **job):
        self.calls += 1
        if self.calls <= self.misses:
            raise RuntimeError(f"Request failed with status code 500: {self.error}, please try "
                               "again later..")
        return "raysubmit_1"


def test_submit_waits_for_a_new_heads_job_agent():
    client = AgentNotUpYet(misses=2)
    assert submit_when_ready(client, wait_s=30, entrypoint="vrt-ray grpo tiny_cpu") == \
        "raysubmit_1"
    assert client.calls == 3


def test_submit_does_not_hide_other_errors_or_wait_past_its_bound():
    other = AgentNotUpYet(misses=1, error="Job with submission_id x already exists")
    with pytest.raises(RuntimeError, match="already exists"):
        submit_when_ready(other, wait_s=30, entrypoint="e")
    assert other.calls == 1
    never = AgentNotUpYet(misses=10**6)
    with pytest.raises(RuntimeError, match=NO_AGENT):
        submit_when_ready(never, wait_s=0, entrypoint="e")
    assert never.calls == 1
