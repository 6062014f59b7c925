"""One MLflow run per job (DESIGN.md §3 step 9): the whole resolved config as params and as
`config.yaml`, metrics per step, artifacts (plots, reports). A resumed job continues its run.
With `tracking.enabled: false` every call is a no-op."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional

from omegaconf import DictConfig, OmegaConf

_PARAMS_PER_CALL = 100  # MLflow's limit per log_batch


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
    def __init__(self, cfg: DictConfig, run_name: str, run_id: Optional[str] = None):
        self.run_id = ""
        self.client = None
        if not cfg.tracking.enabled:
            return
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = cfg.tracking.uri
        artifacts = None  # a local store keeps its artifacts beside its database, not in ./mlruns
        if uri.startswith("sqlite:///"):
            folder = Path(uri[len("sqlite:///"):]).parent
            folder.mkdir(parents=True, exist_ok=True)
            artifacts = (folder / "mlartifacts").resolve().as_uri()
        self.client = MlflowClient(uri)
        if run_id:
            self.run_id = self.client.get_run(run_id).info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            return
        experiment = self.client.get_experiment_by_name(cfg.tracking.experiment)
        experiment_id = (experiment.experiment_id if experiment else
                         self.client.create_experiment(cfg.tracking.experiment,
                                                       artifact_location=artifacts))
        tags = ({"mlflow.parentRunId": cfg.tracking.parent_run_id}
                if cfg.tracking.parent_run_id else None)
        self.run_id = self.client.create_run(experiment_id, run_name=run_name,
                                             tags=tags).info.run_id
        params = [Param(k, v[:6000]) for k, v in flatten(cfg).items()]
        for i in range(0, len(params), _PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=params[i:i + _PARAMS_PER_CALL])
        self.client.log_text(self.run_id, OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step)
                                                    for k, v in metrics.items()])

    def history(self, key: str) -> List[tuple]:
        """(step, value) of a metric over the whole run, resumed segments included."""
        if self.client is None:
            return []
        return sorted((m.step, m.value) for m in self.client.get_metric_history(self.run_id, key))

    def log_artifact(self, path: str | Path, folder: Optional[str] = None) -> None:
        if self.client is not None:
            self.client.log_artifact(self.run_id, str(path), folder)

    def log_figure(self, figure, name: str) -> None:
        if self.client is not None:
            self.client.log_figure(self.run_id, figure, name)

    def finish(self, status: str = "FINISHED") -> None:
        if self.client is not None:
            self.client.set_terminated(self.run_id, status)
