"""A real Ray head for tests: `ray start --head --block` on 127.0.0.1 with its own ports and temp
dir, token authentication on as on a real cluster. Stopping that process stops the cluster."""
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict

VENV_BIN = str(Path(sys.executable).parent)


@dataclass
class Head:
    address: str  # the GCS address drivers join (RAY_ADDRESS)
    dashboard: str  # the job-submission URL
    env: Dict[str, str]  # what a client process needs: PATH to the venv, the shared token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def ray_head(temp_dir: Path, num_cpus: int = 2):
    port, dashboard = free_port(), free_port()
    # The agents' ports too: Ray's defaults (52365, ...) are taken while any other Ray runs
    # here, and a head whose dashboard agent cannot bind never accepts a job.
    agents = [f"--dashboard-agent-listen-port={free_port()}",
              f"--dashboard-agent-grpc-port={free_port()}",
              f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"]
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    proc = subprocess.Popen(
        [f"{VENV_BIN}/ray", "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={port}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard}", f"--num-cpus={num_cpus}", "--disable-usage-stats",
         f"--temp-dir={temp_dir}", *agents],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    head = Head(f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard}", env)
    check = [sys.executable, "-c", "import sys; from ray.job_submission import JobSubmissionClient "
             "as C; C(sys.argv[1]).list_jobs()", head.dashboard]
    deadline = time.monotonic() + 120
    try:
        while subprocess.run(check, env=env, capture_output=True).returncode != 0:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the Ray head did not come up")
            time.sleep(1)
        yield head
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
