"""A short pipeline (a few steps per stage) on local Ray: data and tiny model made, every stage
run and evaluated, the stage table printed and logged under one MLflow parent run."""
import json

import ray
from mlflow.tracking import MlflowClient

from vrt_ray import config


def test_short_pipeline_runs_every_stage_and_logs_the_table(tmp_path, capsys):
    from jobs import pipeline

    cfg = config.load("tiny_cpu", [
        f"output_dir={tmp_path}/out", f"model.path={tmp_path}/out/model",
        f"data.dir={tmp_path}/out/data", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        "data.synthetic.pairs_train=10", "data.synthetic.pairs_val=1", "data.synthetic.pairs_test=1",
        "data.synthetic.min_frames=16", "data.synthetic.max_frames=24",
        "protocol.max_turns=2", "protocol.max_new_tokens=32", "protocol.initial_frames=2",
        "warmup.steps=3", "warmup.batch_size=4", "cold_start.epochs=1", "cold_start.batch_size=4",
        "rft.samples_per_pair=1", "grpo.steps=1", "grpo.pairs_per_step=2", "grpo.group_size=2",
        "eval.html_samples=1", "model.tiny_spec=[intermediate_size=256]"])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rows = pipeline.main(cfg)
    finally:
        ray.shutdown()
    assert list(rows) == ["base (warm)", "cold_start", "rft", "grpo"]
    made = json.loads((tmp_path / "out" / "model" / "config.json").read_text())
    assert made["text_config"]["intermediate_size"] == 256  # model.tiny_spec
    for row in rows.values():
        assert set(row) >= {"TA", "VQ", "MQ", "overall"}
        assert all(v is None or 0.0 <= v <= 1.0 for v in row.values())
    printed = capsys.readouterr().out
    assert "cold_start" in printed and (tmp_path / "out" / "stage_table.txt").is_file()
    assert printed.count("episodes by valid tool calls") == 4  # a line per evaluated stage
    for stage in ("base", "cold_start", "rft", "grpo"):
        assert (tmp_path / "out" / "eval" / stage / "results.json").is_file() or stage == "base"

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parent = next(r for r in runs if r.info.run_name.endswith("-pipeline"))
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    names = sorted(r.info.run_name.rsplit("-", 1)[-1] for r in children)
    assert names == sorted(["warmup", "start", "rft", "grpo", "eval", "eval", "eval", "eval"])
    artifacts = [a.path for a in client.list_artifacts(parent.info.run_id)]
    assert "stage_table.txt" in artifacts and "plots" in artifacts
    (version,) = client.search_model_versions("name='vrt-ray-tiny'")  # once, by the parent
    assert version.run_id == parent.info.run_id
