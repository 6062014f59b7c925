"""A real `mlflow server` (sqlite backend, proxied artifacts, 127.0.0.1) started by the test: a
short warm-up job logs to it and is read back with MlflowClient (params, metrics, artifacts,
registered model version, loaded back from its `models:/` URI); the same job with the server
down completes and is synced later; a server lost mid-run is caught up after its restart."""
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from data_helpers import stage_overrides
from mlflow.tracking import MlflowClient
from test_registry import dead_port_uri

from vrt_ray import config
from vrt_ray.data.synth import SynthSettings, generate
from vrt_ray.registry import local_model_dir

MODEL = "tiny-served"


class MlflowServer:
    """`mlflow server` on a fixed free port; stopped and started again on the same store."""

    def __init__(self, root: Path):
        self.root = root
        self.uri = dead_port_uri()  # free now; the server takes it
        self.process = None

    def start(self) -> None:
        port = self.uri.rsplit(":", 1)[1]
        log = (self.root / "server.log").open("a")
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
             "--port", port, "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.root}/server.db",
             "--artifacts-destination", str(self.root / "artifacts")],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.root)

    def wait(self) -> None:
        """Until the server answers (it starts while the test's other fixtures are built)."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.root / "server.log").read_text()[-2000:]
            try:
                if requests.get(f"{self.uri}/health", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.3)
        raise TimeoutError(f"mlflow server at {self.uri} did not answer")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = MlflowServer(tmp_path_factory.mktemp("mlflow_server"))
    running.start()
    yield running
    if running.process.poll() is None:
        running.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow_job")
    generate(root / "data", SynthSettings(pairs=4, min_frames=16, max_frames=16, seed=4))
    return root


def _warmup(root, model, uri, out):
    from jobs import warmup

    cfg = config.load("tiny_cpu", stage_overrides(
        root, model, f"output_dir={root}/{out}", f"tracking.uri={uri}",
        "tracking.experiment=served", f"tracking.registered_model={MODEL}", "warmup.steps=2",
        "warmup.batch_size=2"))
    return warmup.main(cfg)


def test_a_job_logs_to_the_server_and_its_model_loads_from_the_registry(
        server, data, tiny_model_dir, local_ray):
    from vrt_ray.models import load_policy, load_processor

    server.wait()
    summary = _warmup(data, tiny_model_dir, server.uri, "online")
    assert summary["model_version"] == "1"
    client = MlflowClient(server.uri)
    run = client.get_run(summary["tracking_run_id"])
    assert run.info.status == "FINISHED" and run.data.params["warmup.steps"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2]
    artifacts = {a.path for folder in ("", "policy")
                 for a in client.list_artifacts(run.info.run_id, folder)}
    assert {"config.yaml", "policy/config.json", "policy/model.safetensors",
            "policy/tokenizer.json"} <= artifacts
    version = client.get_model_version(MODEL, "1")
    assert version.run_id == run.info.run_id and version.status == "READY"

    local = local_model_dir(f"models:/{MODEL}/1", server.uri, data / "cache")
    load_policy(local)
    load_processor(local)


def test_with_the_server_down_the_job_completes_and_is_synced_later(
        server, data, tiny_model_dir, local_ray, caplog):
    from vrt_ray.cli import main

    caplog.set_level(logging.WARNING, logger="vrt_ray.tracking")
    started = time.monotonic()
    summary = _warmup(data, tiny_model_dir, dead_port_uri(), "offline")
    assert summary["tracking_run_id"] == "" and summary["model_version"] is None
    assert (Path(summary["model"]) / "model.safetensors").is_file()
    assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1
    buffers = data / "offline" / "mlflow_offline"
    assert len(list(buffers.glob("*.jsonl"))) == 1
    print(f"offline job: {time.monotonic() - started:.1f} s")

    server.wait()
    assert main(["tracking", "sync", str(buffers), "--uri", server.uri]) == 0
    client = MlflowClient(server.uri)
    version = client.get_model_version(MODEL, "2")
    history = client.get_metric_history(version.run_id, "train/loss")
    assert [m.step for m in history] == [1, 2]
    assert client.get_run(version.run_id).info.status == "FINISHED"


def test_a_server_lost_mid_run_is_caught_up_after_its_restart(server, data, caplog):
    from vrt_ray.mlflow_log import sync
    from vrt_ray.tracking import Tracker

    caplog.set_level(logging.WARNING, logger="vrt_ray.tracking")
    server.wait()
    cfg = config.load("tiny_cpu", [f"output_dir={data}/midrun", f"tracking.uri={server.uri}",
                                   "tracking.experiment=served"])
    tracker = Tracker(cfg, "mid-run")
    tracker.log_metrics({"reward_mean": 0.1}, 1)
    server.stop()
    started = time.monotonic()
    for step in (2, 3):
        tracker.log_metrics({"reward_mean": 0.1 * step}, step)
    tracker.finish()
    assert time.monotonic() - started < 30  # retries are short, then nothing is retried
    assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1

    server.start()
    server.wait()
    assert [run_id for _, run_id in sync(data / "midrun" / "mlflow_offline")] == [tracker.run_id]
    client = MlflowClient(server.uri)
    history = client.get_metric_history(tracker.run_id, "reward_mean")
    assert [m.step for m in history] == [1, 2, 3]
    assert client.get_run(tracker.run_id).info.status == "FINISHED"
