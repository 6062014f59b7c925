"""`vrt-ray pipeline CONFIG [key=value ...]`: the paper's recipe end to end on one config.

    synthetic data -> tiny model -> warm-up -> cold start -> RFT -> GRPO

Each trained model is evaluated on the test split (the warmed-up base first), so the table shows
what each stage added; under it, a line a stage says what its test episodes did (valid tool
calls, frames fetched, how they ended), which moves before accuracy does. One MLflow parent run
holds a child run per stage and evaluation, the stage table (`stage_table.txt`) and its plot
(`plots/stage_accuracy.png`). Stages can be skipped, or the run started at a stage from a given
checkpoint. Existing data and an existing model at `data.dir` / `model.path` are used as they
are.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Dict, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from jobs import cold_start, evaluate, grpo, rft, warmup
from jobs.grpo import start_ray
from vrt_ray import checkpoints
from vrt_ray.config import TRAINING_STAGES as STAGES
from vrt_ray.evaluation import behaviour_text, metric_name
from vrt_ray.tracking import Tracker


def prepare(cfg: DictConfig) -> None:
    """Synthetic data and the tiny model, unless they are already there."""
    from vrt_ray.data.synth import SynthSettings, generate
    from vrt_ray.models import make_tiny
    from vrt_ray.tiny_spec import tiny_spec

    s = cfg.data.synthetic
    if not (Path(cfg.data.dir) / cfg.data.train).is_file():
        generate(Path(cfg.data.dir), SynthSettings(
            pairs=s.pairs_train + s.pairs_val + s.pairs_test,
            split=(s.pairs_train, s.pairs_val, s.pairs_test), seed=s.seed,
            min_frames=s.min_frames, max_frames=s.max_frames, size=s.size, fps=s.fps,
            initial_frames=cfg.protocol.initial_frames, max_turns=cfg.protocol.max_turns,
            max_frames_per_call=cfg.protocol.max_frames_per_call, notes=s.notes))
    if not (Path(cfg.model.path) / "config.json").is_file():
        make_tiny(cfg.model.path, seed=cfg.seed, spec=tiny_spec(cfg.model.tiny_spec))


def with_model(cfg: DictConfig, model: str, **keys) -> DictConfig:
    """A copy of `cfg` whose model is `model` (and `keys` set, dotted names with __)."""
    out = OmegaConf.merge(cfg, {"model": {"path": str(model)}})
    for key, value in keys.items():
        OmegaConf.update(out, key.replace("__", "."), value)
    return out


def run_stage(stage: str, cfg: DictConfig, model: str) -> str:
    """Train `model` with `stage`; returns the trained policy's directory."""
    out = Path(cfg.output_dir) / stage
    if stage == "warmup":
        return warmup.main(cfg, model, str(out))["model"]
    if stage == "cold_start":
        return cold_start.main(cfg, model, str(out))["model"]
    if stage == "rft":
        return rft.main(cfg, model, str(out))["model"]
    ckpt = out / "checkpoints"
    shutil.rmtree(ckpt, ignore_errors=True)  # the pipeline owns this folder: a fresh run
    grpo.main(with_model(cfg, model, checkpointing__dir=str(ckpt)))
    return str(checkpoints.latest(ckpt) / "policy")


def accuracy_row(results: Dict, dimensions: Sequence[str]) -> Dict[str, Optional[float]]:
    """Overall and per-dimension accuracy without ties, and overall per length bucket (None
    where no pair counts)."""
    table = results["table"]
    row = {d: table["dimensions"].get(d, {}).get("without_ties")
           for d in (*dimensions, "overall")}
    for bucket, dims in table.get("by_length", {}).items():
        row[f"overall {bucket} frames"] = dims.get("overall", {}).get("without_ties")
    return {k: None if v is None or math.isnan(v) else v for k, v in row.items()}


def format_rows(rows: Dict[str, Dict[str, Optional[float]]]) -> str:
    columns = list(dict.fromkeys(k for row in rows.values() for k in row))
    width = max(len(c) for c in columns) + 2
    lines = ["stage".ljust(14) + "".join(c.rjust(width) for c in columns)]
    for stage, row in rows.items():
        cells = ["-" if row.get(c) is None else f"{100 * row[c]:.1f}%" for c in columns]
        lines.append(stage.ljust(14) + "".join(v.rjust(width) for v in cells))
    return "\n".join(lines)


def plot_rows(rows: Dict[str, Dict[str, Optional[float]]]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 3.8))
    stages = list(rows)
    for column in dict.fromkeys(k for row in rows.values() for k in row):
        axis.plot(stages, [rows[s].get(column) for s in stages], marker="o", label=column)
    axis.set_ylabel("test accuracy (without ties)")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    return figure


def main(cfg: DictConfig, skip: Sequence[str] = (), start_at: Optional[str] = None,
         model: Optional[str] = None) -> Dict[str, Dict[str, Optional[float]]]:
    """Run the stages in order (from `start_at` with `model`, without `skip`); returns the
    stage table (test accuracy after each trained stage)."""
    prepare(cfg)
    start_ray(cfg)
    parent = Tracker(cfg, run_name=f"{cfg.name}-pipeline")
    child = OmegaConf.merge(cfg, {"tracking": {"parent_run_id": parent.run_id,
                                               "registered_model": ""}})  # the parent registers
    stages = list(STAGES[STAGES.index(start_at):] if start_at else STAGES)
    model = str(model or cfg.model.path)
    rows: Dict[str, Dict[str, Optional[float]]] = {}
    did: Dict[str, str] = {}  # what each stage's test episodes did, accuracy aside
    dimensions = list(cfg.protocol.dimensions)
    status = "FAILED"
    try:
        def evaluated(label: str, stage: str) -> None:
            results = _evaluate(child, model, stage)
            rows[label] = accuracy_row(results, dimensions)
            did[label] = behaviour_text(results["behaviour"])
            parent.log_metrics({f"test_accuracy/{metric_name(k)}": v
                                for k, v in rows[label].items() if v is not None}, len(rows))

        if "warmup" not in stages or "warmup" in skip or not cfg.warmup.enabled:
            evaluated("base", "base")
        for stage in stages:
            if stage in skip or not cfg[stage].enabled:
                continue
            model = run_stage(stage, with_model(child, model), model)
            evaluated("base (warm)" if stage == "warmup" else stage, stage)
        text = format_rows(rows) + "\n\n" + "\n".join(f"{k}: {v}" for k, v in did.items())
        out = Path(cfg.output_dir) / "stage_table.txt"
        out.write_text(text + "\n")
        parent.log_artifact(out)
        parent.log_figure(plot_rows(rows), "plots/stage_accuracy.png")
        parent.register_model(model)
        print(text)
        status = "FINISHED"
    finally:
        parent.finish(status)
    return rows


def _evaluate(cfg: DictConfig, model: str, stage: str) -> Dict:
    return evaluate.main(with_model(cfg, model), Path(cfg.output_dir) / "eval" / stage)
