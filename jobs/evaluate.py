"""`vrt-ray evaluate CONFIG [--data FILE] [--format F] [--model DIR] [--out DIR]`: one greedy
episode per benchmark pair through the rollout workers, scored by `vrt_ray/evaluation.py`.

Writes into the output folder `results.json` (counts, accuracy table, a record per pair, the
pairs that could not be judged and why), `table.txt` (the table as text), `report.html` (an
index of the run with trace pages of a sample of right and wrong pairs under `traces/`), and
logs the accuracies and those files to one MLflow run.
"""
from __future__ import annotations

import html
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from omegaconf import DictConfig
from tqdm import tqdm

from actors.rollout_pool import RolloutPool
from jobs.grpo import start_ray
from vrt_ray.data.loaders import LoadReport, load_pairs
from vrt_ray.errors import VrtError
from vrt_ray.evaluation import (behaviour_text, evaluate, flat_metrics, json_safe,
                                 sample_for_report)
from vrt_ray.judge import known_frame_counts
from vrt_ray.metrics import format_table
from vrt_ray.report import STYLE, write_html
from vrt_ray.tracking import Tracker
from vrt_ray.trajectory import Trajectory

log = logging.getLogger(__name__)


def benchmark_path(cfg: DictConfig) -> Path:
    return Path(cfg.eval.data) if cfg.eval.data else Path(cfg.data.dir) / cfg.data.test


def load_benchmark(cfg: DictConfig) -> LoadReport:
    """The benchmark file (`eval.data`, else `data.dir`/`data.test`) in `eval.format`."""
    root = cfg.eval.video_root or ("" if cfg.eval.data else cfg.data.video_root)
    report = load_pairs(benchmark_path(cfg), cfg.eval.format, root or None, strict=cfg.data.strict)
    if report.bad_rows or report.missing_videos:
        log.warning("%s: %d bad rows, %d pairs with missing videos (listed in results.json)",
                    report.path, len(report.bad_rows), report.counts["missing_video_pairs"])
    if not report.pairs:
        raise VrtError(f"{report.path}: no pair to evaluate ({report.counts})")
    return report


def frame_counts(report: LoadReport, backend: str) -> Dict[str, Optional[Dict[str, int]]]:
    """Frames per video of each pair, None for a pair with a video that cannot be opened."""
    known: Dict[str, Optional[int]] = {}
    return {pair.id: known_frame_counts({"A": pair.video_a, "B": pair.video_b}, backend, known)
            for pair in tqdm(report.pairs, desc="frame counts", unit="pair")}


class EvalRun:
    """The rollout workers and tracking run of one evaluation."""

    def __init__(self, cfg: DictConfig, out: str | Path):
        self.cfg = cfg
        self.out = Path(out)
        self.report = load_benchmark(cfg)
        self.frames = frame_counts(self.report, cfg.video.backend)
        start_ray(cfg)
        self.pool = RolloutPool(cfg, cfg.model.path)
        self.pool.ready()
        self.tracker = Tracker(cfg, run_name=f"{cfg.name}-eval")

    def episodes(self) -> List[dict]:
        """One greedy trajectory per loaded pair, in file order; `eval.batch_size` pairs per
        submission, the next one submitted before waiting for the current one."""
        pairs = [{"pair_id": p.id, "prompt": p.prompt, "videos": {"A": p.video_a, "B": p.video_b},
                  "num_frames": self.frames[p.id]} for p in self.report.pairs]
        size = self.cfg.eval.batch_size
        chunks = [pairs[i:i + size] for i in range(0, len(pairs), size)]
        out: List[dict] = []
        bar = tqdm(total=len(pairs), desc="evaluate", unit="pair")
        pending = self.pool.submit(chunks[0], 1, 0.0)
        for following in [*chunks[1:], None]:
            upcoming = self.pool.submit(following, 1, 0.0) if following else None
            done = self.pool.wait(pending)
            out += done
            bar.update(len(done))
            pending = upcoming
        bar.close()
        return out

    def run(self) -> Dict[str, Any]:
        trajectories = self.episodes()
        results = evaluate(self.report, trajectories, list(self.cfg.protocol.dimensions),
                           self.frames, list(self.cfg.eval.length_buckets))
        results = {"data": self.report.path, "format": self.report.format,
                   "model": self.cfg.model.path, **results}
        self.write(results, trajectories)
        self.tracker.log_metrics(flat_metrics(results), step=0)
        for name in ("results.json", "table.txt", "report.html"):
            self.tracker.log_artifact(self.out / name)
        for page in sorted((self.out / "traces").glob("*.html")):
            self.tracker.log_artifact(page, "traces")
        return results

    def write(self, results: Mapping[str, Any], trajectories: List[dict]) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "results.json").write_text(json.dumps(json_safe(results), indent=1) + "\n",
                                               encoding="utf-8")
        (self.out / "table.txt").write_text(table_text(results) + "\n", encoding="utf-8")
        by_id = {t["pair_id"]: t for t in trajectories}
        pairs = {p.id: p for p in self.report.pairs}
        records = {r["pair_id"]: r for r in results["pairs"]}
        traces = []
        for i, pair_id in enumerate(sample_for_report(results["pairs"],
                                                      self.cfg.eval.html_samples)):
            page = Path("traces") / f"trace_{i:03d}.html"
            pair = pairs[pair_id]
            write_html(self.out / page, [Trajectory.from_dict(by_id[pair_id])],
                       labels={pair_id: pair.labels}, prompts={pair_id: pair.prompt},
                       title=f"pair {pair_id}")
            traces.append((page.as_posix(), records[pair_id]))
        (self.out / "report.html").write_text(index_html(results, traces), encoding="utf-8")

    def shutdown(self, status: str = "FINISHED") -> None:
        self.tracker.finish(status)
        self.pool.shutdown()


def table_text(results: Mapping[str, Any]) -> str:
    """The accuracy table, then what it leaves out."""
    c = results["counts"]
    lines = [format_table(results["table"]),
             f"pairs: {c['rows']} rows, {c['judged']} judged, {c['unreadable']} with an unreadable "
             f"video, {c['bad_rows']} bad rows; {c['answered']} complete answers",
             "no verdict (counted as a model tie): "
             + ", ".join(f"{d} {n}" for d, n in results["no_verdict"].items()),
             behaviour_text(results["behaviour"])]
    lines += [f"{b['protocol']}: {100 * b['accuracy']:.1f} % of {b['n']} pairs"
              for b in results["benchmark"]]
    lines += [f"unreadable: {u['pair_id']}: {u['reason']}" for u in results["unreadable"]]
    return "\n".join(lines)


def index_html(results: Mapping[str, Any], traces: List[tuple]) -> str:
    """The report's front page: the table, what could not be judged, links to sampled traces."""
    esc = html.escape
    mark = {True: "right", False: "wrong"}
    rows = "".join(
        f"<tr><td><a href='{esc(page)}'>{esc(r['pair_id'])}</a></td>"
        f"<td class='{mark[r['right']]}'>{mark[r['right']]}</td>"
        f"<td>{esc(', '.join(f'{d}={v}' for d, v in r['verdicts'].items()))}</td>"
        f"<td>{esc(', '.join(f'{d}={v}' for d, v in r['labels'].items()))}</td>"
        f"<td>{esc(r['end_reason'])}</td></tr>" for page, r in traces)
    unreadable = "".join(f"<li>{esc(u['pair_id'])}: {esc(u['reason'])}</li>"
                         for u in results["unreadable"])
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>evaluation</title>"
            f"<style>{STYLE}</style></head><body><h1>Evaluation</h1>"
            f"<p>data: {esc(str(results['data']))} ({esc(str(results['format']))}) · model: "
            f"{esc(str(results['model']))}</p><pre>{esc(table_text(results))}</pre>"
            f"<h2>Unreadable pairs ({len(results['unreadable'])})</h2><ul>{unreadable}</ul>"
            f"<h2>Sampled traces</h2><table><tr><th>pair</th><th></th><th>verdicts</th>"
            f"<th>labels</th><th>ended by</th></tr>{rows}</table></body></html>")


def main(cfg: DictConfig, out: str | Path | None = None) -> Dict[str, Any]:
    """Evaluate `model.path` on the benchmark; results are written into `out` (default
    `output_dir`/eval) and returned."""
    run = EvalRun(cfg, out or Path(cfg.output_dir) / "eval")
    status = "FAILED"
    try:
        results = run.run()
        status = "FINISHED"
        return results
    finally:
        run.shutdown(status)
