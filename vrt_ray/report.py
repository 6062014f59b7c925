"""HTML trace pages: the reasoning of one or more episodes with the frames they looked at.

Each page is one self-contained file (frames inlined as PNG data URIs, no scripts), readable in
a browser without a server. Per turn it shows what the model wrote, the tool's answer with the
frames it brought in (at the pixel budget the model saw), and which frames the visual memory
window had dropped from view by then; at the end, the verdicts against the labels.
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import List, Mapping, Optional, Sequence

import numpy as np
from PIL import Image

from vrt_ray.model_inputs import FrameSource, PixelBudget
from vrt_ray.protocol import FrameRef
from vrt_ray.trajectory import Trajectory

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
.episode{border:1px solid #ccc;border-radius:6px;padding:1em;margin-bottom:2em}
.msg{margin:.6em 0;padding:.5em .8em;border-radius:4px;white-space:pre-wrap}
.system{background:#f4f4f4;font-size:.85em}.user{background:#eef5ff}.assistant{background:#fff8e6}
.tool{background:#eefaf0}.error{background:#fdecec}.note{color:#777;font-size:.85em}
figure{display:inline-block;margin:.3em;text-align:center;font-size:.75em}
figure img{display:block;image-rendering:pixelated;border:1px solid #999;max-height:160px}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em}
.right{color:#17803d;font-weight:bold}.wrong{color:#c0262d;font-weight:bold}
"""


def render_html(trajectories: Sequence[Trajectory], labels: Optional[Mapping[str, Mapping]] = None,
                prompts: Optional[Mapping[str, str]] = None, title: str = "vrt-ray traces") -> str:
    """The page for `trajectories`; `labels` and `prompts` are keyed by pair id."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for trajectory in trajectories:
        body.append(_episode(trajectory, (labels or {}).get(trajectory.pair_id, {}),
                             (prompts or {}).get(trajectory.pair_id)))
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body>{''.join(body)}</body></html>")


def write_html(path: str | Path, trajectories: Sequence[Trajectory], **kwargs) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(trajectories, **kwargs), encoding="utf-8")
    return path


def _episode(t: Trajectory, labels: Mapping[str, str], prompt: Optional[str]) -> str:
    budget = t.budget
    source = FrameSource(t.videos, PixelBudget(int(budget["min_pixels"]), int(budget["max_pixels"]),
                                               str(budget.get("backend", "pyav"))))
    head = (f"<h2>pair {html.escape(t.pair_id)} · sample {t.sample_index} · policy v"
            f"{t.policy_version} · preset {html.escape(t.preset)}</h2>")
    if prompt:
        head += f"<p><b>Prompt:</b> {html.escape(prompt)}</p>"
    head += (f"<p class='note'>video A: {html.escape(t.videos.get('A', ''))} · video B: "
             f"{html.escape(t.videos.get('B', ''))} · ended by {html.escape(t.end_reason)} · "
             f"{t.valid_calls} valid / {t.invalid_calls} invalid tool calls · "
             f"{t.frames_fetched} frames fetched</p>")
    parts = [head]
    turn = 0
    seen: List[FrameRef] = []
    for message in t.messages:
        kind, role = message.get("kind", ""), message["role"]
        if kind == "assistant":
            parts.append(_window_note(t, turn, seen))
            turn += 1
        css = {"system": "system", "initial": "user", "assistant": "assistant",
               "tool_result": "tool", "error": "error", "budget": "error"}.get(kind, "user")
        parts.append(f"<div class='msg {css}'><b>{html.escape(role)}</b>\n"
                     f"{_content(message['content'], source, seen)}</div>")
    parts.append(_verdicts(t, labels))
    return f"<div class='episode'>{''.join(parts)}</div>"


def _content(content, source: FrameSource, seen: List[FrameRef]) -> str:
    if isinstance(content, str):
        return html.escape(content)
    refs = [FrameRef(**r) for part in content if part["type"] in ("image", "video")
            for r in (part["refs"] if part["type"] == "video" else [part["ref"]])]
    seen.extend(refs)
    frames = iter(_frames(refs, source))
    out = []
    for part in content:
        if part["type"] == "text" and "label_of" not in part:
            out.append(html.escape(part["text"]))
        elif part["type"] in ("image", "video"):
            count = len(part["refs"]) if part["type"] == "video" else 1
            out.extend(next(frames) for _ in range(count))
    return "".join(out)


def _frames(refs: List[FrameRef], source: FrameSource) -> List[str]:
    """A figure per frame, decoded together (one pass per video); a report never fails on a
    frame it cannot show."""
    try:
        pixels = source.frames(refs)
    except Exception as exc:
        reason = html.escape(str(exc)[:120])
        return [f"<figure><span class='wrong'>unreadable: {reason}</span>video {r.video}, "
                f"frame {r.index}</figure>" for r in refs]
    return [f"<figure><img src='{_data_uri(frame)}' alt='video {r.video} frame {r.index}'>"
            f"video {r.video}, frame {r.index}</figure>" for r, frame in zip(refs, pixels)]


def _window_note(t: Trajectory, turn: int, seen: List[FrameRef]) -> str:
    if turn >= len(t.turns):
        return ""
    in_view = {ref for _, refs in t.turns[turn].visuals for ref in refs}
    dropped = [r for r in dict.fromkeys(seen) if r not in in_view]
    text = f"turn {turn + 1}: {len(in_view)} frames in view"
    if turn < len(t.outcomes):
        text += f" · came to: {t.outcomes[turn]}"
    if dropped:
        names = ", ".join(f"{r.video}{r.index}" for r in dropped)
        text += f"; dropped by the memory window: {names}"
    return f"<p class='note'>{html.escape(text)}</p>"


def _verdicts(t: Trajectory, labels: Mapping[str, str]) -> str:
    dims = list(dict.fromkeys([*t.verdicts, *labels]))
    if not dims:
        return "<p class='wrong'>no verdict</p>"
    rows = []
    for d in dims:
        verdict, label = t.verdicts.get(d), labels.get(d)
        mark = "" if label is None else ("right" if verdict == label else "wrong")
        rows.append(f"<tr><td>{html.escape(d)}</td><td class='{mark}'>{html.escape(str(verdict))}"
                    f"</td><td>{html.escape(str(label)) if label else '—'}</td></tr>")
    return ("<table><tr><th>dimension</th><th>verdict</th><th>label</th></tr>"
            + "".join(rows) + "</table>")


def _data_uri(frame: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(frame)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()

