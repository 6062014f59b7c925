"""Evaluation: the table of a fixture computed by hand, first from hand-made trajectories (the
pure module), then end to end on a real local Ray: rollout workers whose real tiny model is
steered to write the fixture's answers, results files, MLflow; and `vrt-ray evaluate` with the
model left to itself."""
import json
import math

import pytest
import ray
from mlflow.tracking import MlflowClient
from video_samples import encode

from vrt_ray import config
from vrt_ray.data.loaders import LoadReport, MissingVideo
from vrt_ray.data.pair import PreferencePair
from vrt_ray.evaluation import behaviour_text, evaluate, flat_metrics, sample_for_report

DIMS = ["TA", "VQ", "MQ"]
SHORT, LONG = {"A": 20, "B": 16}, {"A": 40, "B": 36}  # pair lengths 20 and 40; bucket edge 32

# pair -> (prompt, length, labels, the model's answer); p3 is labelled overall only, p5's answer
# lacks VQ and MQ, p7's video A is not a video, p8's video A does not exist.
FIXTURE = {
    "p1": ("scene alpha", SHORT, dict(TA="A", VQ="A", MQ="B", overall="A"),
           dict(TA="A", VQ="A", MQ="B", overall="A")),
    "p2": ("scene bravo", SHORT, dict(TA="B", VQ="tie", MQ="A", overall="B"),
           dict(TA="B", VQ="A", MQ="A", overall="A")),
    "p3": ("scene charlie", SHORT, dict(overall="tie"),
           dict(TA="A", VQ="B", MQ="A", overall="tie")),
    "p4": ("scene delta", LONG, dict(TA="A", VQ="B", MQ="B", overall="B"),
           dict(TA="B", VQ="B", MQ="tie", overall="B")),
    "p5": ("scene echo", LONG, dict(TA="A", VQ="A", MQ="A", overall="A"),
           dict(TA="A", overall="A")),
    "p6": ("scene foxtrot", LONG, dict(TA="tie", VQ="B", MQ="A", overall="B"),
           dict(TA="tie", VQ="B", MQ="B", overall="A")),
    "p7": ("scene golf", SHORT, dict(overall="A"), dict(overall="A")),
}

# By hand (h: A=1, B=-1, tie=0; a missing verdict is a model tie). Without ties: C / (C+D+Tm)
# over non-tie labels. With ties: the best threshold on |m| (only 0 or 1 for verdicts); the
# reference loop (which tries k=1..N on a stable sort) reaches the same here.
#  TA  p1 1/1 p2 -1/-1 p4 1/-1 p5 1/1 p6 0/0: 3/4; tie at 0 -> (3 + p6) / 5
#  VQ  p1 1/1 p2 0/1 p4 -1/-1 p5 1/0 p6 -1/-1: 3/4; best is no tie: 3/5
#  MQ  p1 -1/-1 p2 1/1 p4 -1/0 p5 1/0 p6 1/-1: 2/5; 2/5
#  overall p1 1/1 p2 -1/1 p3 0/0 p4 -1/-1 p5 1/1 p6 -1/1: 3/5; tie at 0 -> (3 + p3) / 6
EXPECTED = {"TA": (5, 4, 3 / 4, 4 / 5), "VQ": (5, 4, 3 / 4, 3 / 5),
            "MQ": (5, 5, 2 / 5, 2 / 5), "overall": (6, 5, 3 / 5, 4 / 6)}
# short p1-p3: overall 1/2 (p3 a tie), TA 2/2; long p4-p6: overall 2/3, TA 1/2 (p6 a tie)
EXPECTED_BY_LENGTH = {"<32": {"overall": 1 / 2, "TA": 1.0}, "32+": {"overall": 2 / 3, "TA": 1 / 2}}


def answer_text(answer):
    return "<think>compared</think><answer>" + json.dumps(answer) + "</answer>"


def check_results(results):
    assert results["counts"] == {"rows": 8, "judged": 6, "unreadable": 2, "bad_rows": 0,
                                 "answered": 5, "right": 2}
    table = results["table"]
    for dim, (n, n_without_ties, without, with_ties) in EXPECTED.items():
        row = table["dimensions"][dim]
        assert (row["n"], row["n_without_ties"], row["missing"]) == (n, n_without_ties, 0), dim
        assert row["without_ties"] == pytest.approx(without), dim
        assert row["with_ties"] == pytest.approx(with_ties), dim
        assert row["with_ties_clean"] == pytest.approx(with_ties), dim
    for bucket, expected in EXPECTED_BY_LENGTH.items():
        for dim, accuracy in expected.items():
            assert table["by_length"][bucket][dim]["without_ties"] == pytest.approx(accuracy)
    assert results["no_verdict"] == {"TA": 0, "VQ": 1, "MQ": 1, "overall": 0}
    records = {r["pair_id"]: r for r in results["pairs"]}
    assert list(records) == ["p1", "p2", "p3", "p4", "p5", "p6"]
    assert records["p5"]["verdicts"] == {"TA": "A", "VQ": None, "MQ": None, "overall": "A"}
    assert records["p5"]["correct"] == {"TA": True, "VQ": False, "MQ": False, "overall": True}
    assert records["p3"]["correct"] == {"TA": None, "VQ": None, "MQ": None, "overall": True}
    assert [r["pair_id"] for r in results["pairs"] if r["right"]] == ["p1", "p3"]
    assert records["p4"]["frames"] == LONG and records["p1"]["frames"] == SHORT
    unreadable = {u["pair_id"]: u["reason"] for u in results["unreadable"]}
    assert set(unreadable) == {"p7", "p8"}
    assert unreadable["p7"].startswith("unreadable_video")
    assert unreadable["p8"].startswith("missing video file") and "gone.mp4" in unreadable["p8"]


def fixture_pairs():
    return [PreferencePair(pid, prompt, f"v/{pid}_a.mp4", f"v/{pid}_b.mp4", labels)
            for pid, (prompt, _, labels, _) in FIXTURE.items()]


def test_hand_made_trajectories_give_the_hand_computed_table():
    report = LoadReport("bench.jsonl", "jsonl", "line", rows=8, pairs=fixture_pairs(),
                        missing_videos=[MissingVideo(8, "p8", "v/gone.mp4")])
    trajectories = [{"pair_id": pid, "verdicts": answer, "turns": [{}],
                     "answer_complete": len(answer) == 4, "frames_fetched": 0,
                     "end_reason": "unreadable_video: not a video" if pid == "p7" else "answer"}
                    for pid, (_, _, _, answer) in FIXTURE.items()]
    frames = {pid: length for pid, (_, length, _, _) in FIXTURE.items() if pid != "p7"}
    results = evaluate(report, trajectories[::-1], DIMS, frames, [32])
    check_results(results)
    assert results["benchmark"] == []
    metrics = flat_metrics(results)
    assert metrics["accuracy/overall/without_ties"] == pytest.approx(3 / 5)
    assert metrics["accuracy_frames_lt32/TA/without_ties"] == 1.0
    # long overall, all |m| = 1: no tie is best (2/3), which only the clean version tries; the
    # reference loop's best is to tie p4 alone (first in the stable sort): 1/3
    assert metrics["accuracy_frames_32plus/overall/with_ties_clean"] == pytest.approx(2 / 3)
    assert metrics["accuracy_frames_32plus/overall/with_ties"] == pytest.approx(1 / 3)
    assert metrics["pairs/unreadable"] == 2 and metrics["no_verdict/VQ"] == 1
    with pytest.raises(ValueError, match="no trajectory for pair"):
        evaluate(report, trajectories[1:], DIMS, frames, [32])


def test_behaviour_counts_what_the_judged_episodes_did():
    report = LoadReport("bench.jsonl", "jsonl", "line", rows=8, pairs=fixture_pairs(),
                        missing_videos=[MissingVideo(8, "p8", "v/gone.mp4")])
    ok, oor, bad = "valid", "out_of_range", "bad_json"
    # pair -> (turn outcomes, frames fetched, end); p7 (unreadable) is left out
    did = {"p1": ([ok, ok, "answer"], 12, "answer"), "p2": ([oor, ok, bad, bad], 8, "budget"),
           "p3": ([bad] * 3 + ["no_call"] * 3, 0, "budget"), "p4": ([ok, "answer"], 4, "answer"),
           "p5": (["incomplete_answer"], 0, "answer"), "p6": ([ok, oor, ok], 16, "budget"),
           "p7": ([], 0, "unreadable_video: not a video")}
    trajectories = [{"pair_id": pid, "verdicts": {}, "turns": [{}] * len(outcomes),
                     "valid_calls": outcomes.count(ok),
                     "invalid_calls": sum(o not in (ok, "answer", "incomplete_answer")
                                          for o in outcomes),
                     "frames_fetched": f, "end_reason": end, "outcomes": outcomes}
                    for pid, (outcomes, f, end) in did.items()]
    results = evaluate(report, trajectories, DIMS, {}, None)
    b = results["behaviour"]
    assert b == {"episodes": 6, "valid_calls": {"0": 2, "1": 2, "2": 2}, "invalid_calls": 10,
                 "fetched_frames": 40, "episodes_fetching": 4,
                 "end_reasons": {"answer": 3, "budget": 3},
                 "first_turn": {"valid": 3, "out_of_range": 1, "bad_json": 1,
                                "incomplete_answer": 1},
                 "turns": {"valid": 6, "bad_json": 5, "no_call": 3, "answer": 2,
                           "out_of_range": 2, "incomplete_answer": 1}}
    assert results["pairs"][1]["valid_calls"] == 1 and results["pairs"][1]["invalid_calls"] == 3
    assert results["pairs"][1]["outcomes"] == [oor, ok, bad, bad]
    metrics = flat_metrics(results)
    assert metrics["behaviour/valid_calls_mean"] == pytest.approx(1.0)
    assert metrics["behaviour/invalid_calls_mean"] == pytest.approx(10 / 6)
    assert metrics["behaviour/fetching_share"] == pytest.approx(4 / 6)
    assert behaviour_text(b).splitlines() == [
        "episodes by valid tool calls (0: 2, 1: 2, 2: 2); 10 invalid calls; 4 of 6 fetched "
        "frames (40 in all); ended by: answer 3, budget 3",
        "  first turns: valid 3, out_of_range 1, bad_json 1, incomplete_answer 1",
        "  all turns: valid 6, bad_json 5, no_call 3, answer 2, out_of_range 2, "
        "incomplete_answer 1"]


def _judged(pairs, verdicts, format):
    report = LoadReport("bench", format, "item", rows=len(pairs), pairs=pairs)
    trajectories = [{"pair_id": p.id, "verdicts": {} if v is None else {"overall": v},
                     "end_reason": "answer"} for p, v in zip(pairs, verdicts)]
    return evaluate(report, trajectories, [], {}, None)


def test_genai_bench_and_mjbench_files_are_also_scored_by_their_own_protocols():
    votes = {"leftvote": "A", "rightvote": "B", "tievote": "tie", "bothbad_vote": "tie"}
    pairs = [PreferencePair(f"g{i}", "p", "a.mp4", "b.mp4", {"overall": label}, {"vote_type": vote})
             for i, (vote, label) in enumerate(votes.items())]
    # without ties: left A right, right (no answer) wrong -> 1/2; four-class: + both ties -> 3/4
    results = _judged(pairs, ["A", None, "tie", "tie"], "genai-bench")
    assert [(b["protocol"], b["n"], b["accuracy"]) for b in results["benchmark"]] == [
        ("genai-bench:without-ties", 2, 0.5), ("genai-bench:four-class", 4, 0.75)]
    assert flat_metrics(results)["benchmark/genai-bench/four-class"] == 0.75
    labels = [{"overall": "A"}, {"overall": "B"}, {"overall": "tie"}, {}]  # {}: hard to judge
    pairs = [PreferencePair(f"m{i}", "p", "a.mp4", "b.mp4", lab) for i, lab in enumerate(labels)]
    # over the A/B pairs: A right, B judged tie: strict 1/2, tie-aware 1.5/2
    results = _judged(pairs, ["A", "tie", "B", "A"], "mjbench-video")
    assert [(b["protocol"], b["n"], b["accuracy"]) for b in results["benchmark"]] == [
        ("mjbench-video:strict", 2, 0.5), ("mjbench-video:tie-aware", 2, 0.75)]
    assert _judged(pairs, ["A"] * 4, "jsonl")["benchmark"] == []


def test_report_sample_takes_right_and_wrong_pairs_in_order():
    records = [{"pair_id": str(i), "right": right} for i, right in
               enumerate([True, False, False, True, True, False, True])]
    assert sample_for_report(records, 4) == ["0", "1", "2", "3"]
    assert sample_for_report(records, 2) == ["0", "1"]
    only_right = [r for r in records if r["right"]]
    assert sample_for_report(only_right, 3) == ["0", "3", "4"]
    assert sample_for_report(records, 0) == [] and sample_for_report(records, 20) == [
        r["pair_id"] for r in records]


# -- end to end on local Ray -----------------------------------------------------------------

@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """The fixture as a JSONL benchmark with real videos."""
    root = tmp_path_factory.mktemp("bench")
    (root / "v").mkdir()
    for name, length in (("short", SHORT), ("long", LONG)):
        for video in "AB":
            encode(root / "v" / f"{name}_{video}.mp4", "libx264", length[video])
    (root / "v" / "broken.mp4").write_bytes(b"not a video at all")
    rows = []
    for pid, (prompt, length, labels, _) in FIXTURE.items():
        name = "short" if length is SHORT else "long"
        rows.append({"id": pid, "prompt": prompt, "labels": labels,
                     "video_a": "v/broken.mp4" if pid == "p7" else f"v/{name}_A.mp4",
                     "video_b": f"v/{name}_B.mp4"})
    rows.append({"id": "p8", "prompt": "scene hotel", "labels": {"overall": "B"},
                 "video_a": "v/gone.mp4", "video_b": "v/short_B.mp4"})
    (root / "bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def overrides(root, *more):
    return [f"eval.data={root}/bench.jsonl", "eval.format=jsonl", "eval.length_buckets=[32]",
            "eval.html_samples=4", "eval.batch_size=4", f"tracking.uri=sqlite:///{root}/mlflow.db",
            "tracking.experiment=eval-test", "protocol.initial_frames=2", "protocol.max_turns=1",
            "protocol.max_new_tokens=64", "video.min_pixels=784", "video.max_pixels=3136",
            "rollout.timeout_s=120", *more]


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_scripted_rollout_workers_give_the_hand_computed_table(ray_local, bench, tiny_model_dir):
    import scripted
    from jobs.evaluate import EvalRun

    cfg = config.load("tiny_cpu", overrides(bench, f"model.path={tiny_model_dir}"))
    out = bench / "scripted"
    run = EvalRun(cfg, out)
    ray.cloudpickle.register_pickle_by_value(scripted)
    scripts = {prompt: [answer_text(answer)] for prompt, _, _, answer in FIXTURE.values()}

    def install(worker):
        engine = worker.judge.engine
        engine.logits_processors.append(scripted.ScriptedByPrompt(engine.processor.tokenizer,
                                                                  scripts))

    ray.get([w.__ray_call__.remote(install) for w in run.pool.workers])
    try:
        results = run.run()
    finally:
        run.shutdown()
    check_results(results)
    assert results["data"] == f"{bench}/bench.jsonl" and results["model"] == str(tiny_model_dir)
    assert json.loads((out / "results.json").read_text())["counts"] == results["counts"]
    assert (out / "table.txt").read_text().startswith("accuracy (videogen-rewardbench)")
    index = (out / "report.html").read_text()
    assert index.count("traces/trace_") == 4 and "p7" in index and "p8" in index
    traces = sorted(p.name for p in (out / "traces").iterdir())
    assert traces == [f"trace_00{i}.html" for i in range(4)]
    assert "scene charlie" in (out / "traces" / "trace_002.html").read_text()  # p1 p2 p3 p4

    client = MlflowClient(f"sqlite:///{bench}/mlflow.db")
    (logged,) = client.search_runs(
        [client.get_experiment_by_name("eval-test").experiment_id])
    assert logged.info.status == "FINISHED"
    assert logged.data.metrics["accuracy/overall/without_ties"] == pytest.approx(3 / 5)
    assert logged.data.metrics["accuracy/TA/with_ties"] == pytest.approx(4 / 5)
    assert logged.data.metrics["pairs/unreadable"] == 2
    artifacts = {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert {"results.json", "table.txt", "report.html", "traces"} <= artifacts


def test_cli_evaluates_the_untrained_model(ray_local, bench, tiny_model_dir, capsys):
    from vrt_ray.cli import main

    out = bench / "cli"
    code = main(["evaluate", "tiny_cpu", *overrides(bench, "protocol.max_new_tokens=8",
                                                     "rollout.num_workers=1",
                                                     "tracking.experiment=eval-cli"),
                 "--model", str(tiny_model_dir), "--out", str(out)])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    counts = results["counts"]
    assert counts["rows"] == counts["judged"] + counts["unreadable"] + counts["bad_rows"] == 8
    assert counts["unreadable"] == 2 and len(results["pairs"]) == 6
    row = results["table"]["dimensions"]["overall"]
    assert row["n"] == 6 and row["missing"] == 0
    # a random model writes no answer: every verdict missing, so without ties every pair is wrong
    assert row["without_ties"] == 0.0 and results["no_verdict"]["overall"] == 6
    assert "pairs: 8 rows, 6 judged, 2 with an unreadable video" in capsys.readouterr().out
    client = MlflowClient(f"sqlite:///{bench}/mlflow.db")
    (logged,) = client.search_runs([client.get_experiment_by_name("eval-cli").experiment_id])
    assert logged.data.metrics["pairs/judged"] == 6 and not math.isnan(
        logged.data.metrics["accuracy/overall/without_ties"])
