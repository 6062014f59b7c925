"""What a Tracker sends to MLflow, as plain JSON records: applied to a client now, or kept in an
offline buffer (`<output_dir>/mlflow_offline/*.jsonl`) while the tracking server is unreachable
and replayed into it later (`vrt-ray tracking sync`).

A buffer's first line names the run (tracking URI, experiment, run name, tags, and its id when
the run was created before the server went away); each further line is one record:

    {"op": "params", "params": {key: value}}
    {"op": "metrics", "step": 3, "timestamp": ms, "metrics": {key: value}}
    {"op": "text", "text": "...", "name": "config.yaml"}
    {"op": "artifact", "path": "/abs/file", "folder": "traces" | null}
    {"op": "model", "path": "/abs/policy_dir", "name": "registered model name"}
    {"op": "end", "status": "FINISHED", "end_time": ms}
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional

from vrt_ray.errors import VrtError

log = logging.getLogger(__name__)

_PARAMS_PER_CALL = 100  # MLflow's limit per log_batch
# An unreachable server should cost seconds, not the client's default minutes of retries.
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
SYNCED = ".synced"  # a replayed buffer is renamed `<name>.jsonl.synced`


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def client_for(uri: str):
    """An MlflowClient whose tracking and registry are `uri`; for a server, short HTTP retries
    and timeouts unless the user set MLflow's own variables."""
    from mlflow.tracking import MlflowClient

    if is_remote(uri):
        for name, value in _HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
    return MlflowClient(uri, registry_uri=uri)


def reachable(uri: str, timeout: float = 3.0) -> Optional[str]:
    """None when the server at `uri` answers HTTP at all, else why not (one quick request)."""
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout)
        return None
    except requests.RequestException as exc:
        return f"{type(exc).__name__}: {exc}"


def server_lost(exc: BaseException) -> bool:
    """Whether `exc` says the server could not be reached (connection refused, timeout,
    retries spent), not that it answered with an error."""
    import requests

    return any(isinstance(e, requests.RequestException)
               for e in (exc, exc.__cause__, exc.__context__))


def start_run(client, experiment: str, run_name: str, tags: Optional[Dict[str, str]],
              artifacts: Optional[str] = None) -> str:
    """Create a run in `experiment` (created when missing, artifacts at `artifacts`)."""
    found = client.get_experiment_by_name(experiment)
    experiment_id = (found.experiment_id if found else
                     client.create_experiment(experiment, artifact_location=artifacts))
    return client.create_run(experiment_id, run_name=run_name, tags=tags or None).info.run_id


def apply(client, run_id: str, record: dict):
    """Send one record to `run_id`; a model record returns its registered model version."""
    from mlflow.entities import Metric, Param

    op = record["op"]
    if op == "params":
        params = [Param(k, v[:6000]) for k, v in record["params"].items()]
        for i in range(0, len(params), _PARAMS_PER_CALL):
            client.log_batch(run_id, params=params[i:i + _PARAMS_PER_CALL])
    elif op == "metrics":
        client.log_batch(run_id, metrics=[Metric(k, float(v), record["timestamp"], record["step"])
                                          for k, v in record["metrics"].items()])
    elif op == "text":
        client.log_text(run_id, record["text"], record["name"])
    elif op == "artifact":
        client.log_artifact(run_id, record["path"], record["folder"])
    elif op == "model":
        from vrt_ray.registry import register

        return register(client, run_id, record["name"], record["path"])
    elif op == "end":
        client.set_terminated(run_id, record["status"], record["end_time"])
    else:
        raise VrtError(f"unknown tracking record {op!r}")
    return None


class OfflineBuffer:
    """Records appended as JSON lines to `path`, after a first line that names the run."""

    def __init__(self, path: Path, header: dict):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(header) + "\n")

    @property
    def files(self) -> Path:
        """Where files made only for the buffer (figures) are kept."""
        return self.path.with_suffix("")

    def append(self, record: dict) -> None:
        with self.path.open("a") as out:
            out.write(json.dumps(record) + "\n")


def _missing(record: dict) -> bool:
    if record["op"] in ("artifact", "model") and not Path(record["path"]).exists():
        log.warning("%s is gone: not logged", record["path"])
        return True
    return False


def replay(path: str | Path, uri: Optional[str] = None) -> str:
    """Log the buffer at `path` into `uri` (default: the URI it was meant for), creating the run
    when the server never saw it; then rename it `*.jsonl.synced`. Returns the run id."""
    path = Path(path)
    lines = path.read_text().splitlines()
    try:
        header, records = json.loads(lines[0]), [json.loads(line) for line in lines[1:] if line]
    except (IndexError, json.JSONDecodeError) as exc:
        raise VrtError(f"{path}: not an offline tracking buffer ({exc})") from exc
    from mlflow.exceptions import MlflowException

    target = uri or header["uri"]
    client = client_for(target)
    try:
        run_id = header["run_id"]
        if not run_id:
            run_id = start_run(client, header["experiment"], header["run_name"], header["tags"])
            header["run_id"] = run_id  # a second sync after a failure continues this run
            path.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
        for record in records:
            if not _missing(record):
                apply(client, run_id, record)
    except MlflowException as exc:
        raise VrtError(f"{path}: could not log to {target}: {exc.message}") from exc
    path.rename(path.with_name(path.name + SYNCED))
    return run_id


def sync(path: str | Path, uri: Optional[str] = None) -> List[tuple]:
    """Replay one buffer file, or every unsynced one in a folder (oldest first); returns
    (file, run id) pairs."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
    elif path.is_file():
        files = [path]
    else:
        raise VrtError(f"{path}: no such buffer file or folder")
    return [(str(f), replay(f, uri)) for f in files]
