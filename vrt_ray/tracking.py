"""One MLflow run per job (DESIGN.md §3 step 9): the whole resolved config as params and as
`config.yaml`, metrics per step, artifacts (plots, reports), the final policy as a registered
model version (`tracking.registered_model`). A resumed job continues its run. With
`tracking.enabled: false` every call is a no-op.

With a tracking server (`http(s)://`) that cannot be reached, at the start or mid-run, the job
goes on: one warning, and what could not be logged is kept in an offline buffer under
`<output_dir>/mlflow_offline/` for `vrt-ray tracking sync` (vrt_ray/mlflow_log.py)."""
from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Dict, List, Mapping, Optional

from omegaconf import DictConfig, OmegaConf

from vrt_ray.mlflow_log import (OfflineBuffer, apply, client_for, is_remote, reachable,
                                server_lost, start_run)

log = logging.getLogger(__name__)
_warned: set = set()  # tracking URIs already reported unreachable in this process


def flatten(cfg: DictConfig) -> Dict[str, str]:
    """`section.key` -> value as text, for MLflow params."""
    out: Dict[str, str] = {}

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, name + ".")
            else:
                out[name] = str(value)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


class Tracker:
    """The MLflow run of one job (`run_id` given: continue that run)."""

    def __init__(self, cfg: DictConfig, run_name: str, run_id: Optional[str] = None):
        self.run_id = run_id or ""
        self.client = None
        self.buffer: Optional[OfflineBuffer] = None
        self.model_version: Optional[str] = None  # set by register_model
        self.local: Dict[str, List[tuple]] = {}  # metrics logged by this process
        t = cfg.tracking
        self.enabled, self.uri, self.model_name = t.enabled, t.uri, t.registered_model
        if not self.enabled:
            return
        self.header = {"uri": t.uri, "experiment": t.experiment, "run_name": run_name,
                       "tags": {"mlflow.parentRunId": t.parent_run_id} if t.parent_run_id else {}}
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.buffer_path = (Path(cfg.output_dir) / "mlflow_offline"
                            / f"{run_name}-{stamp}-{uuid.uuid4().hex[:6]}.jsonl")
        artifacts = None  # a local store keeps its artifacts beside its database, not in ./mlruns
        if t.uri.startswith("sqlite:///"):
            folder = Path(t.uri[len("sqlite:///"):]).parent
            folder.mkdir(parents=True, exist_ok=True)
            artifacts = (folder / "mlartifacts").resolve().as_uri()
        down = reachable(t.uri) if is_remote(t.uri) else None
        if down:
            self._lost(down)
        else:
            self.client = client_for(t.uri)
            try:
                if self.run_id:
                    self.client.update_run(self.run_id, status="RUNNING")
                else:
                    self.run_id = start_run(self.client, t.experiment, run_name,
                                            self.header["tags"], artifacts)
            except Exception as exc:  # noqa: BLE001 - only a lost server is absorbed
                self._absorb(exc)
        if not run_id:
            self._record({"op": "params", "params": flatten(cfg)})
            self._record({"op": "text", "text": OmegaConf.to_yaml(cfg, resolve=True),
                          "name": "config.yaml"})

    # -- a lost server ----------------------------------------------------------------------
    def _absorb(self, exc: Exception) -> None:
        """Go offline when `exc` says the server is gone; anything else is raised."""
        if not (is_remote(self.uri) and server_lost(exc)):
            raise exc
        self._lost(str(exc).splitlines()[0][:300])

    def _lost(self, why: str) -> None:
        self.client = None
        self.buffer = OfflineBuffer(self.buffer_path, {**self.header, "run_id": self.run_id})
        if self.uri not in _warned:
            _warned.add(self.uri)
            log.warning("MLflow server %s unreachable (%s): the job goes on; what it logs is "
                        "kept in %s, log it later with `vrt-ray tracking sync %s`", self.uri,
                        why, self.buffer.path.parent, self.buffer.path.parent)

    def _record(self, record: dict):
        if self.client is not None:
            try:
                return apply(self.client, self.run_id, record)
            except Exception as exc:  # noqa: BLE001 - only a lost server is absorbed
                self._absorb(exc)
        if self.buffer is not None:
            self.buffer.append(record)
        return None

    # -- what jobs log ----------------------------------------------------------------------
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if not self.enabled:
            return
        for key, value in metrics.items():
            self.local.setdefault(key, []).append((step, float(value)))
        self._record({"op": "metrics", "step": step, "timestamp": int(time.time() * 1000),
                      "metrics": {k: float(v) for k, v in metrics.items()}})

    def history(self, key: str) -> List[tuple]:
        """(step, value) of a metric over the whole run, resumed segments included (offline:
        what this process logged)."""
        if self.client is not None:
            try:
                return sorted((m.step, m.value)
                              for m in self.client.get_metric_history(self.run_id, key))
            except Exception as exc:  # noqa: BLE001 - only a lost server is absorbed
                self._absorb(exc)
        return sorted(self.local.get(key, []))

    def log_artifact(self, path: str | Path, folder: Optional[str] = None) -> None:
        if self.enabled:
            self._record({"op": "artifact", "path": str(Path(path).resolve()), "folder": folder})

    def log_figure(self, figure, name: str) -> None:
        if self.client is not None:
            try:
                self.client.log_figure(self.run_id, figure, name)
                return
            except Exception as exc:  # noqa: BLE001 - only a lost server is absorbed
                self._absorb(exc)
        if self.buffer is not None:
            path = self.buffer.files / name
            path.parent.mkdir(parents=True, exist_ok=True)
            figure.savefig(path)
            self.buffer.append({"op": "artifact", "path": str(path.resolve()),
                                "folder": str(Path(name).parent) if "/" in name else None})

    def register_model(self, policy_dir: str | Path) -> Optional[str]:
        """Log the policy directory and register it as a version of `tracking.registered_model`
        (nothing when that is empty); the version, or None when offline."""
        if self.enabled and self.model_name:
            self.model_version = self._record({"op": "model", "name": self.model_name,
                                               "path": str(Path(policy_dir).resolve())})
        return self.model_version

    def finish(self, status: str = "FINISHED") -> None:
        if self.enabled:
            self._record({"op": "end", "status": status, "end_time": int(time.time() * 1000)})
