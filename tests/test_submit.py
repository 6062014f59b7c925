"""`vrt-ray submit` against a real Ray head started by the test (127.0.0.1, its own ports): a
tiny GRPO job runs to SUCCEEDED, its logs come back on stdout, the head is stopped."""
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vrt_ray.data.synth import SynthSettings, generate

VENV_BIN = str(Path(sys.executable).parent)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """`ray start --head --block`: stopping that process stops the cluster it started. Token
    authentication on, as on a real cluster: the head and the client share the token."""
    dashboard = _free_port()
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    proc = subprocess.Popen(
        [f"{VENV_BIN}/ray", "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={_free_port()}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard}", "--num-cpus=2", "--disable-usage-stats",
         f"--temp-dir={tmp_path_factory.mktemp('ray')}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    check = [sys.executable, "-c", "import sys; from ray.job_submission import JobSubmissionClient "
             "as C; C(sys.argv[1]).list_jobs()", address]
    deadline = time.monotonic() + 120
    while subprocess.run(check, env=env, capture_output=True).returncode != 0:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("the Ray head did not come up")
        time.sleep(1)
    yield address, env
    proc.terminate()
    proc.wait(timeout=60)


def test_a_submitted_grpo_job_succeeds_and_streams_its_logs(head, tmp_path, tiny_model_dir):
    address, env = head
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
    address, env = head
    done = subprocess.run([f"{VENV_BIN}/vrt-ray", "submit", "--address", address, "tiny_cpu",
                           "grpo", f"data.dir={tmp_path}/nothing"], env=env,
                          capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).parents[1])
    assert done.returncode == 1 and "FAILED" in done.stderr
    assert "no such file" in done.stdout  # the job's one-line error, streamed
