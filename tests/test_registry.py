"""The model registry and the offline buffer on a local sqlite store: policies registered as
versions and fetched back by `models:/` URIs; a job whose tracking server is down keeps its
records and `vrt-ray tracking sync` logs them later."""
import json
import logging
import socket
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mlflow.tracking import MlflowClient

from vrt_ray import config
from vrt_ray.errors import VrtError
from vrt_ray.registry import RegistryError, local_model_dir, parse_model_uri
from vrt_ray.tracking import Tracker


def _cfg(root: Path, uri: str, *more: str):
    return config.load("tiny_cpu", [f"output_dir={root}/out", f"tracking.uri={uri}",
                                    "tracking.registered_model=tiny-test", *more])


def dead_port_uri() -> str:
    """An http URI on a local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("text, parsed", [
    ("models:/tiny/3", ("tiny", "3", None)), ("models:/tiny/3/", ("tiny", "3", None)),
    ("models:/vrt-ray.tiny@best", ("vrt-ray.tiny", None, "best")),
    ("models:/tiny", None), ("models:/tiny/v3", None), ("models:/tiny/3/policy", None),
    ("models:/@best", None), ("runs:/abc/policy", None), ("outputs/tiny", None)])
def test_registry_uris_are_parsed(text, parsed):
    assert parse_model_uri(text) == parsed


@given(st.text())
def test_parsing_any_text_gives_a_uri_or_none(text):
    parsed = parse_model_uri(text)
    assert parsed is None or (text.startswith("models:/") and parsed[0]
                              and (parsed[1] is None) != (parsed[2] is None))


def test_a_directory_is_used_as_it_is_and_a_missing_one_is_refused(tmp_path):
    assert local_model_dir(str(tmp_path), "sqlite:///unused.db") == str(tmp_path)
    with pytest.raises(VrtError, match="no such model directory"):
        local_model_dir(str(tmp_path / "nope"), "sqlite:///unused.db")
    with pytest.raises(RegistryError, match="not a registry URI"):
        local_model_dir("models:/tiny", "sqlite:///unused.db")


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_model_dir):
    """A sqlite store holding versions 1 and 2 of `tiny-test` (alias `best` on 1)."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root}/mlflow.db"
    tracker = Tracker(_cfg(root, uri), "registry")
    assert [tracker.register_model(tiny_model_dir) for _ in range(2)] == ["1", "2"]
    tracker.finish()
    MlflowClient(uri).set_registered_model_alias("tiny-test", "best", "1")
    return root, uri


def test_policies_become_versions_fetched_back_by_version_and_alias(store, tiny_model_dir):
    root, uri = store
    cache = root / "cache"
    second = local_model_dir("models:/tiny-test/2", uri, cache)
    assert sorted(p.name for p in Path(second).iterdir()) == \
        sorted(p.name for p in Path(tiny_model_dir).iterdir())
    assert local_model_dir("models:/tiny-test/2", uri, cache) == second  # cached, not refetched
    assert local_model_dir("models:/tiny-test@best", uri, cache).endswith("/tiny-test/1")
    for missing in ("models:/tiny-test/9", "models:/nobody/1", "models:/tiny-test@worst"):
        with pytest.raises(RegistryError, match="not found in the model registry"):
            local_model_dir(missing, uri, cache)


def test_judge_and_evaluate_take_a_registry_uri(store, monkeypatch, capsys):
    from video_samples import encode

    from vrt_ray.cli import main

    root, uri = store
    monkeypatch.setenv("XDG_CACHE_HOME", str(root / "xdg"))
    videos = [encode(root / f"{n}.mp4", "libx264", 16) for n in "ab"]
    assert main(["judge", *map(str, videos), "--model", "models:/tiny-test/1", "--prompt", "x",
                 "--json", "--set", f"tracking.uri={uri}", "--set", "protocol.max_turns=1",
                 "--set", "protocol.max_new_tokens=8"]) == 0
    assert set(json.loads(capsys.readouterr().out.splitlines()[-1])["verdicts"]) \
        == {"TA", "VQ", "MQ", "overall"}
    assert (root / "xdg" / "vrt-ray" / "models").is_dir()
    assert main(["evaluate", "tiny_cpu", f"tracking.uri={uri}", "--model",
                 "models:/tiny-test/7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "models:/tiny-test/7: not found in the model registry" in err[0]


def test_with_the_server_down_the_job_goes_on_and_sync_logs_it_later(tmp_path, tiny_model_dir,
                                                                      caplog):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vrt_ray.cli import main

    cfg = _cfg(tmp_path, dead_port_uri(), "tracking.experiment=offline")
    caplog.set_level(logging.WARNING, logger="vrt_ray.tracking")
    tracker = Tracker(cfg, "offline-job")
    for step in (1, 2, 3):
        tracker.log_metrics({"loss": 1.0 / step}, step)
    assert tracker.history("loss") == [(1, 1.0), (2, 0.5), (3, 1 / 3)]
    (tmp_path / "table.txt").write_text("a table\n")
    tracker.log_artifact(tmp_path / "table.txt", "tables")
    tracker.log_figure(plt.figure(), "plots/curve.png")
    assert tracker.register_model(tiny_model_dir) is None
    tracker.finish()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()
    (buffer,) = (tmp_path / "out" / "mlflow_offline").glob("*.jsonl")
    ops = [json.loads(line).get("op") for line in buffer.read_text().splitlines()]
    assert ops == [None, "params", "text", "metrics", "metrics", "metrics", "artifact",
                   "artifact", "model", "end"]

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["tracking", "sync", str(buffer.parent), "--uri", uri]) == 0
    assert not list(buffer.parent.glob("*.jsonl"))  # renamed *.synced: not replayed twice
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("offline").experiment_id])
    assert run.info.run_name == "offline-job" and run.info.status == "FINISHED"
    assert run.data.params["grpo.group_size"] == str(cfg.grpo.group_size)
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 0.5), (3, 1 / 3)]
    artifacts = {a.path for folder in ("", "tables", "plots", "policy")
                 for a in client.list_artifacts(run.info.run_id, folder)}
    assert {"config.yaml", "tables/table.txt", "plots/curve.png",
            "policy/config.json"} <= artifacts
    (version,) = client.search_model_versions("name='tiny-test'")
    assert version.run_id == run.info.run_id


def test_a_file_that_is_not_a_buffer_is_refused(tmp_path, capsys):
    from vrt_ray.cli import main

    (tmp_path / "x.jsonl").write_text("not json\n")
    assert main(["tracking", "sync", str(tmp_path / "x.jsonl")]) == 2
    assert "not an offline tracking buffer" in capsys.readouterr().err
