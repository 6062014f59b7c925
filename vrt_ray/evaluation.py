"""Benchmark evaluation without Ray: labelled pairs + one greedy trajectory each -> results.

`evaluate` turns what the rollout workers brought back into the accuracy table of
`vrt_ray/metrics.py` (with and without ties, per dimension, by video length), a record per
pair and the pairs that could not be judged, with why. Choices (docs/evaluation.md):
- a pair whose video cannot be read (a missing file the loader reported, or an episode that
  ended `unreadable_video`) is listed under `unreadable` and kept out of the table: it says
  nothing about the model;
- a dimension the model gave no verdict for counts as a model tie (so it is wrong without
  ties) and is counted in `no_verdict`: leaving it out would reward not answering;
- a pair's length is the longer of its two videos, in frames;
- GenAI-Bench and MJ-Bench-Video files are also scored by their own protocols (`benchmark`),
  where a missing overall verdict is wrong.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, Dict, List, Mapping, Optional, Sequence

from vrt_ray.data.loaders import LoadReport
from vrt_ray.data.pair import PreferencePair
from vrt_ray.metrics import (GENAI_PROTOCOLS, MJBENCH_PROTOCOLS, accuracy_table,
                             genai_bench_accuracy, mjbench_accuracy)

UNREADABLE = "unreadable_video"


def evaluate(report: LoadReport, trajectories: Sequence[Mapping[str, Any]],
             dimensions: Sequence[str], frames: Mapping[str, Optional[Mapping[str, int]]],
             edges: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """Results of one benchmark run.

    `report` is the loaded benchmark file, `trajectories` one trajectory dict per loaded pair
    (matched by pair id), `dimensions` the judged dimensions (overall is added), `frames` each
    pair's frame count per video (None when unknown), `edges` the length-bucket edges.
    Returns {counts, table, benchmark, no_verdict, behaviour, pairs, unreadable, bad_rows}.
    """
    dims = list(dict.fromkeys([*dimensions, "overall"]))
    by_id = {t["pair_id"]: t for t in trajectories}
    lost = [p.id for p in report.pairs if p.id not in by_id]
    if lost:
        raise ValueError(f"no trajectory for pair(s) {', '.join(lost[:5])}")
    unreadable: List[Dict[str, Any]] = [
        {"pair_id": m.pair_id, "line": m.line, "reason": f"missing video file: {m.path}"}
        for m in report.missing_videos]
    judged: List[PreferencePair] = []
    for pair in report.pairs:
        reason = by_id[pair.id].get("end_reason", "")
        if reason.startswith(UNREADABLE):
            unreadable.append({"pair_id": pair.id, "reason": reason})
        else:
            judged.append(pair)
    records = [pair_record(p, by_id[p.id], dims, frames.get(p.id)) for p in judged]
    human = {d: [p.labels.get(d) for p in judged] for d in dims}
    model = {d: [r["verdicts"][d] or "tie" for r in records] for d in dims}
    lengths = [max(r["frames"].values()) if r["frames"] else None for r in records]
    table = accuracy_table(human, model, lengths, edges or None)
    no_verdict = {d: sum(p.labels.get(d) is not None and r["verdicts"][d] is None
                         for p, r in zip(judged, records)) for d in dims}
    return {
        "counts": {"rows": report.rows, "judged": len(judged),
                   "unreadable": len({u["pair_id"] for u in unreadable}),
                   "bad_rows": len(report.bad_rows),
                   "answered": sum(r["answer_complete"] for r in records),
                   "right": sum(r["right"] for r in records)},
        "table": table,
        "benchmark": benchmark_protocols(report.format, judged, records),
        "no_verdict": no_verdict,
        "behaviour": behaviour(records),
        "pairs": records,
        "unreadable": unreadable,
        "bad_rows": [{"line": b.line, "reason": b.reason} for b in report.bad_rows],
    }


def pair_record(pair: PreferencePair, trajectory: Mapping[str, Any], dims: Sequence[str],
                frames: Optional[Mapping[str, int]]) -> Dict[str, Any]:
    """{pair_id, labels, verdicts, correct, right, frames, end_reason, ...} of a judged pair:
    `correct[d]` is None where the pair has no label for d, `right` whether every labelled
    dimension is correct."""
    verdicts = {d: trajectory.get("verdicts", {}).get(d) for d in dims}
    correct = {d: None if pair.labels.get(d) is None else verdicts[d] == pair.labels[d]
               for d in dims}
    labelled = [c for c in correct.values() if c is not None]
    return {"pair_id": pair.id, "labels": dict(pair.labels), "verdicts": verdicts,
            "correct": correct, "right": bool(labelled) and all(labelled),
            "frames": dict(frames) if frames else {},
            "end_reason": trajectory.get("end_reason", ""),
            "answer_complete": bool(trajectory.get("answer_complete")),
            "turns": len(trajectory.get("turns", [])),
            "valid_calls": int(trajectory.get("valid_calls", 0)),
            "invalid_calls": int(trajectory.get("invalid_calls", 0)),
            "frames_fetched": int(trajectory.get("frames_fetched", 0)),
            "outcomes": list(trajectory.get("outcomes", []))}


def behaviour(records: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """What the judged episodes did, right or wrong: how many made each number of valid tool
    calls (`valid_calls`, a histogram), their invalid calls and fetched frames in all, how
    many fetched any frame, how they ended (`end_reasons`), and what their turns came to
    (`first_turn`: each episode's first; `turns`: all; outcomes of `Episode.outcomes`)."""
    def histogram(values) -> Dict[str, int]:
        return {str(k): n for k, n in sorted(Counter(values).items())}

    def most_common(values) -> Dict[str, int]:
        return dict(Counter(values).most_common())

    return {"episodes": len(records),
            "valid_calls": histogram(r["valid_calls"] for r in records),
            "invalid_calls": sum(r["invalid_calls"] for r in records),
            "fetched_frames": sum(r["frames_fetched"] for r in records),
            "episodes_fetching": sum(r["frames_fetched"] > 0 for r in records),
            "end_reasons": most_common(r["end_reason"] for r in records),
            "first_turn": most_common(r["outcomes"][0] for r in records if r["outcomes"]),
            "turns": most_common(o for r in records for o in r["outcomes"])}


def behaviour_text(b: Mapping[str, Any]) -> str:
    """`behaviour` in three lines: valid calls an episode, frames and ends; first turns; all."""
    def listed(counts: Mapping[str, int], sep: str = " ") -> str:
        return ", ".join(f"{k}{sep}{n}" for k, n in counts.items()) or "-"

    return (f"episodes by valid tool calls ({listed(b['valid_calls'], ': ')}); "
            f"{b['invalid_calls']} invalid calls; {b['episodes_fetching']} of {b['episodes']} "
            f"fetched frames ({b['fetched_frames']} in all); ended by: {listed(b['end_reasons'])}"
            f"\n  first turns: {listed(b['first_turn'])}\n  all turns: {listed(b['turns'])}")


def benchmark_protocols(format: str, pairs: Sequence[PreferencePair],
                        records: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """The overall accuracy under each of the benchmark's own protocols (none for other
    formats)."""
    overall = [r["verdicts"]["overall"] for r in records]
    if format == "genai-bench":
        votes = [p.meta["vote_type"] for p in pairs]
        return [genai_bench_accuracy(votes, overall, protocol) for protocol in GENAI_PROTOCOLS]
    if format == "mjbench-video":
        human = [p.labels.get("overall") for p in pairs]
        return [mjbench_accuracy(human, overall, protocol) for protocol in MJBENCH_PROTOCOLS]
    return []


def flat_metrics(results: Mapping[str, Any]) -> Dict[str, float]:
    """MLflow metrics of `results`: accuracies (`accuracy/<dim>/<kind>`, by length
    `accuracy_frames_<bucket>/<dim>/<kind>`, `benchmark/<name>/<protocol>`), counts,
    no-verdict counts and the episodes' behaviour (`behaviour/...`); NaN left out."""
    out: Dict[str, float] = {f"pairs/{k}": float(v) for k, v in results["counts"].items()}
    out.update({f"no_verdict/{d}": float(n) for d, n in results["no_verdict"].items()})
    did = results["behaviour"]
    if did["episodes"]:
        calls = sum(int(k) * n for k, n in did["valid_calls"].items())
        out.update({"behaviour/valid_calls_mean": calls / did["episodes"],
                    "behaviour/invalid_calls_mean": did["invalid_calls"] / did["episodes"],
                    "behaviour/fetching_share": did["episodes_fetching"] / did["episodes"],
                    "behaviour/fetched_frames": float(did["fetched_frames"])})
    out.update({f"benchmark/{b['protocol'].replace(':', '/')}": float(b["accuracy"])
                for b in results.get("benchmark", []) if not math.isnan(b["accuracy"])})
    table = results["table"]
    blocks = [("accuracy", table["dimensions"])]
    blocks += [(f"accuracy_frames_{metric_name(b)}", rows)
               for b, rows in table.get("by_length", {}).items()]
    for prefix, rows in blocks:
        for dim, row in rows.items():
            for kind in ("without_ties", "with_ties", "with_ties_clean"):
                if not math.isnan(row[kind]):
                    out[f"{prefix}/{dim}/{kind}"] = float(row[kind])
    return out


def metric_name(bucket: str) -> str:
    """A bucket name MLflow accepts: `<64` -> `lt64`, `64+` -> `64plus`."""
    return bucket.replace("<", "lt").replace("+", "plus")


def sample_for_report(records: Sequence[Mapping[str, Any]], n: int) -> List[str]:
    """Up to `n` pair ids for the trace pages, half right and half wrong where there are enough
    of each, in benchmark order."""
    right = [r["pair_id"] for r in records if r["right"]]
    wrong = [r["pair_id"] for r in records if not r["right"]]
    take_right = min(len(right), max(n // 2, n - len(wrong)))
    chosen = set(right[:take_right] + wrong[:n - take_right])
    return [r["pair_id"] for r in records if r["pair_id"] in chosen]


def json_safe(value: Any) -> Any:
    """`value` with NaN floats as None (strict JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
