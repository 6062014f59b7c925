"""What the served judge answers: the JSON of one verdict (`judge_response`) and the trace pages
kept on disk for `GET /v1/trace/{id}` (`TracePages`).

Trace pages live on disk under the output folder, not in a replica's memory: with several
replicas, the request for a page goes to any of them, and every one must find it (on a
multi-node cluster the output folder has to be shared storage). The newest `keep` pages stay.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Dict, List, Sequence

from vrt_ray.judge import verdict_table
from vrt_ray.serve_requests import RequestError
from vrt_ray.tool_calls import extract_call_text
from vrt_ray.trajectory import Trajectory

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")  # uuid4().hex


def judge_response(trajectory: Trajectory, dimensions: Sequence[str], trace_id: str,
                   model: Dict[str, str], latency_ms: float) -> dict:
    """The answer to `POST /v1/judge`."""
    return {"trace_id": trace_id, "verdicts": verdict_table(trajectory, dimensions),
            "answer_complete": trajectory.answer_complete, "end_reason": trajectory.end_reason,
            "trace": trace_summary(trajectory), "model": model,
            "latency_ms": round(latency_ms, 1)}


def trace_summary(trajectory: Trajectory) -> dict:
    """The episode in short: the frames first shown, then per assistant turn its text, the
    tool call it made (as written) and the tool's reply with the frames it brought in."""
    initial: List[dict] = []
    turns: List[dict] = []
    for message in trajectory.messages:
        kind = message.get("kind")
        if kind == "initial":
            initial = _frames(message["content"])
        elif kind == "assistant":
            text = message["content"]
            turns.append({"text": text, "tool_call": extract_call_text(text), "reply": None,
                          "frames": []})
        elif kind in ("tool_result", "error", "budget") and turns:
            turns[-1]["reply"] = _text(message["content"])
            turns[-1]["frames"] = _frames(message["content"])
    return {"initial_frames": initial, "turns": turns,
            "tool_calls": {"valid": trajectory.valid_calls, "invalid": trajectory.invalid_calls,
                           "failed": trajectory.tool_failures},
            "frames_fetched": trajectory.frames_fetched}


def _text(content) -> str:
    if isinstance(content, str):
        return content
    return "".join(part["text"] for part in content if part["type"] == "text")


def _frames(content) -> List[dict]:
    if isinstance(content, str):
        return []
    refs = []
    for part in content:
        if part["type"] == "image":
            refs.append(dict(part["ref"]))
        elif part["type"] == "video":
            refs.extend(dict(r) for r in part["refs"])
    return refs


class TracePages:
    """HTML trace pages by trace id in `folder`, the newest `keep` of them."""

    def __init__(self, folder: str | Path, keep: int):
        self.folder = Path(folder)
        self.keep = keep
        self.folder.mkdir(parents=True, exist_ok=True)

    def save(self, trace_id: str, page: str) -> Path:
        """Write the page (whole or not at all: a temporary file renamed) and drop the oldest
        beyond `keep`."""
        fd, staging = tempfile.mkstemp(prefix=".page.", dir=self.folder)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(page)
        path = self.folder / f"{trace_id}.html"
        os.replace(staging, path)
        self._prune()
        return path

    def load(self, trace_id: str) -> str:
        if TRACE_ID.match(trace_id):
            try:
                return (self.folder / f"{trace_id}.html").read_text(encoding="utf-8")
            except FileNotFoundError:
                pass
        raise RequestError(404, f"no trace {trace_id!r} (unknown, or older than the pages kept)")

    def _prune(self) -> None:
        pages = []
        for path in self.folder.glob("*.html"):
            try:
                pages.append((path.stat().st_mtime_ns, path))
            except FileNotFoundError:  # pruned by another replica meanwhile
                continue
        for _, path in sorted(pages)[:-self.keep]:
            path.unlink(missing_ok=True)

