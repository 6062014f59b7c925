"""The cold-start teacher: a scripted frame search whose every step follows from frames it has seen.

An episode (DESIGN.md §6, §12) for one pair: look at the K initial frames of each video; scan
each video coarsely (one call per video, frames spread evenly between those already seen); zoom
into consecutive frames where something looked wrong, or, where nothing did, into the stretch
most likely to hide a motion fault; then answer from the evidence. The teacher is given the
prompt, the two video paths, a frame reader and a frame counter: never the labels or the meta
of the pair. Every turn's reasoning first says what each frame it just received shows: in
`exact` notes the object's centre and moves in pixels, in `coarse` notes in words (the ninth of
the frame it is in, the directions it moved); frames, calls and answers are the same.

Trace record (one JSON object per pair):
  {"pair_id", "initial": {"A": [...], "B": [...]},
   "turns": [{"think", "tool_call": {"video", "target_frames"}}, ..., {"think", "answer": {...}}],
   "findings": {"A": [{"dimension", "kind", "frames"}], "B": [...]}}
`check_trace` adds "found" by comparing the findings and the answer with the hidden truth.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from vrt_ray.data.pair import PreferencePair
from vrt_ray.data.perceive import FrameView, perceive
from vrt_ray.data.scene import DIRECTIONS, REF_SIZE, parse_prompt
from vrt_ray.video import uniform_indices

ReadFrames = Callable[[str, Sequence[int]], List[np.ndarray]]
CountFrames = Callable[[str], int]

VIDEOS = ("A", "B")
DIMENSIONS = ("TA", "VQ", "MQ")
OFF_PATH = 2.5  # px (112-pixel frame) from the path line: the object left its path
FAR_OFF_PATH = 12.0  # px: it jumped (teleport) rather than shook (jitter)
STILL = 0.3  # px: two positions closer than this are the same place
MIN_EXPECTED = 1.2  # px: below this expected travel, stillness or slowness says nothing
BACKWARD = 1.0  # px of travel against the prompt's direction that counts as a wrong direction
IDENTICAL = 8  # largest pixel difference (grey levels) at which two frames look identical
SLOW = 0.5  # a stretch that covers less than this share of its expected travel is suspicious
_OPPOSITE = {"right": "left", "left": "right", "up": "down", "down": "up"}
_QUALITY_KIND = {"noisy": "noise", "blurred": "blur", "blocky": "blocking"}
NOTE_STYLES = ("exact", "coarse")
_ROWS, _COLUMNS = ("top", "middle", "bottom"), ("left", "centre", "right")


def place(x: float, y: float, size: float) -> str:
    """Which ninth of a `size`-pixel frame a centre lies in: 'top left' ... 'bottom right'."""
    row, column = (min(max(int(3 * v / size), 0), 2) for v in (y, x))
    return f"{_ROWS[row]} {_COLUMNS[column]}"


def scan_indices(num_frames: int, seen: Sequence[int], count: int) -> List[int]:
    """Up to `count` unseen frames spread evenly over the gaps between seen frames.

    Gaps (including before the first and after the last seen frame) get frames in proportion to
    their number of unseen frames (largest remainder, earlier gap first on ties); inside a gap
    (a, b) with c frames, frame j is a + floor(j * (b - a) / (c + 1) + 1/2), j = 1..c.
    """
    bounds = [0] + sorted(set(seen)) + [num_frames + 1]
    gaps = [(a, b) for a, b in zip(bounds, bounds[1:]) if b - a > 1]
    sizes = [b - a - 1 for a, b in gaps]
    total = sum(sizes)
    if total <= count:
        return [t for a, b in gaps for t in range(a + 1, b)]
    shares = [count * s / total for s in sizes]
    alloc = [int(s) for s in shares]
    order = sorted(range(len(gaps)), key=lambda g: (-(shares[g] - alloc[g]), g))
    for g in order[: count - sum(alloc)]:
        alloc[g] += 1
    picks = []
    for (a, b), c in zip(gaps, alloc):
        picks += [a + int(np.floor(j * (b - a) / (c + 1) + 0.5)) for j in range(1, c + 1)]
    return sorted(picks)


def coarse_grid(num_frames: int, initial_frames: int, per_call: int) -> List[int]:
    """The frames an episode has seen of a video after its initial view and its scan."""
    first = uniform_indices(num_frames, initial_frames)
    return sorted(set(first) | set(scan_indices(num_frames, first, per_call)))


def max_gap(num_frames: int, initial_frames: int, per_call: int) -> int:
    """The longest run of frames without a coarse-grid frame, plus one: every segment of at
    least this many frames holds a grid frame (and of twice as many, two)."""
    grid = [0] + coarse_grid(num_frames, initial_frames, per_call) + [num_frames + 1]
    return max(b - a for a, b in zip(grid, grid[1:]))


def _weighted_median(values: Sequence[float], weights: Sequence[float]) -> float:
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(np.asarray(weights, dtype=np.float64)[order])
    return float(np.asarray(values)[order][np.searchsorted(cum, cum[-1] / 2.0)])


def _time_weights(frames: Sequence[int]) -> List[float]:
    """How much of the video each seen frame stands for: half the distance to each neighbour."""
    if len(frames) == 1:
        return [1.0]
    edges = [frames[0]] + [(a + b) / 2.0 for a, b in zip(frames, frames[1:])] + [frames[-1]]
    return [max(hi - lo, 0.5) for lo, hi in zip(edges, edges[1:])]


@dataclass
class Finding:
    """Something wrong seen in a video: its dimension, kind (as the generator names defects),
    the frames that show it, and one sentence."""

    dimension: str
    kind: str
    frames: List[int]
    text: str


@dataclass
class _Analysis:
    findings: List[Finding] = field(default_factory=list)
    suspects: List[Tuple[int, int, str]] = field(default_factory=list)  # (i, j, why): too slow
    pairs: List[Tuple[int, int, float]] = field(default_factory=list)  # (i, j, pace deviation)


class _Video:
    """What the episode has seen of one video."""

    def __init__(self, name: str, path: str, num_frames: int):
        self.name, self.path, self.n = name, path, num_frames
        self.views: Dict[int, FrameView] = {}
        self.images: Dict[int, np.ndarray] = {}
        self.calls: List[List[int]] = []
        self.zoomed: set = set()
        self.scale = 1.0  # frame width / 112


def _fmt(v: float) -> str:
    return f"{v:.1f}".replace("-0.0", "0.0")


class Teacher:
    """Runs teacher episodes with given budgets (DESIGN.md §6 protocol defaults)."""

    def __init__(self, read_frames: ReadFrames, count_frames: CountFrames, *,
                 initial_frames: int = 4, max_turns: int = 6, max_frames_per_call: int = 8,
                 notes: str = "exact"):
        if notes not in NOTE_STYLES:
            raise ValueError(f"notes {notes!r}: one of {', '.join(NOTE_STYLES)}")
        self.read_frames, self.count_frames = read_frames, count_frames
        self.k, self.max_turns, self.per_call = initial_frames, max_turns, max_frames_per_call
        self.exact = notes == "exact"

    def _px(self, v: float) -> str:
        """A distance as the notes give it: '4.6 px ' in exact notes, nothing in coarse ones."""
        return f"{_fmt(v)} px " if self.exact else ""

    # -- perception over the frames seen so far -------------------------------------------
    def _analyse(self, v: _Video, colour: str, shape: str, direction: str) -> _Analysis:
        out = _Analysis()
        dx, dy = DIRECTIONS[direction]
        scale = v.scale
        for t in sorted(v.views):
            view = v.views[t]
            if view.quality != "clean":
                out.findings.append(Finding("VQ", _QUALITY_KIND[view.quality], [t],
                                            f"frame {t} is {view.quality}"))
            if view.colour is not None and view.colour != colour:
                out.findings.append(Finding(
                    "TA", "wrong_colour", [t], f"frame {t} is {view.colour}, not {colour}"))
            if view.quality == "clean" and view.shape is not None and view.shape != shape:
                out.findings.append(Finding("TA", "wrong_shape", [t],
                                            f"frame {t} is a {view.shape}, not a {shape}"))
        usable = [t for t in sorted(v.views)
                  if v.views[t].quality == "clean" and v.views[t].x is not None]
        if len(usable) < 2:
            return out
        along = {t: v.views[t].x * dx + v.views[t].y * dy for t in usable}
        perp = {t: v.views[t].x * abs(dy) + v.views[t].y * abs(dx) for t in usable}
        line = _weighted_median([perp[t] for t in usable], _time_weights(usable))
        on_path = []
        for t in usable:
            off = perp[t] - line
            if abs(off) > OFF_PATH * scale:
                far = abs(off) > FAR_OFF_PATH * scale
                out.findings.append(Finding(
                    "MQ", "teleport" if far else "jitter", [t],
                    f"frame {t} is {self._px(abs(off))}off the path"
                    + (" (a jump)" if far else " (a shake)")))
            else:
                on_path.append(t)
        if len(on_path) < 2:
            return out
        steps = [(i, j, along[j] - along[i]) for i, j in zip(on_path, on_path[1:])]
        net = _weighted_median([d / (j - i) for i, j, d in steps], [j - i for i, j, _ in steps])
        if net < 0 and abs(net) * (on_path[-1] - on_path[0]) > BACKWARD * scale:
            out.findings.append(Finding("TA", "wrong_direction", list(on_path),
                                        f"it moves {_OPPOSITE[direction]} overall, "
                                        f"not {direction}"))
            return out
        forward = [(i, j, d) for i, j, d in steps if d > 0]  # the pace while it moves as asked
        pace = _weighted_median([d / (j - i) for i, j, d in forward],
                                [j - i for i, j, _ in forward]) if forward else 0.0
        still_from = 0  # runs of positions that stay put although the object should move
        for end in range(1, len(on_path) + 1):
            moved = end < len(on_path) and max(
                abs(along[on_path[end]] - along[on_path[still_from]]),
                abs(perp[on_path[end]] - perp[on_path[still_from]])) >= STILL * scale
            if end == len(on_path) or moved:
                run = on_path[still_from:end]
                # stillness between far-apart frames may be a turn and a return: only neighbouring
                # frames that should have moved visibly show a freeze (others become suspects)
                if pace * (_longest_consecutive(run) - 1) >= MIN_EXPECTED * scale:
                    expected = (f"{_fmt(pace * (run[-1] - run[0]))} px of travel was expected"
                                if self.exact else "it should move")
                    out.findings.append(Finding(
                        "MQ", "freeze", list(run),
                        f"frames {_ranges(run)} stay in place where {expected}"))
                still_from = end
        back_from = 0  # runs of steps against the prompt's direction
        for end in range(1, len(on_path) + 1):
            step_back = end < len(on_path) and (
                along[on_path[end]] - along[on_path[end - 1]] < -0.05 * scale)
            if not step_back:
                i, j = on_path[back_from], on_path[end - 1]
                if j > i and along[i] - along[j] >= BACKWARD * scale:
                    out.findings.append(Finding(
                        "TA", "wrong_direction", list(on_path[back_from:end]),
                        f"from frame {i} to {j} it moves {self._px(along[i] - along[j])}"
                        f"{_OPPOSITE[direction]}, not {direction}"))
                back_from = end
        flagged = {t for f in out.findings if f.kind in ("freeze", "wrong_direction")
                   for t in f.frames}
        for i, j, d in steps:
            expected = pace * (j - i)
            out.pairs.append((i, j, abs(d - expected) / max(expected, 1e-6)))
            if expected >= 1.5 * scale and d < SLOW * expected and not {i, j} & flagged:
                still = abs(d) < STILL * scale
                if self.exact:
                    moved = "stayed in place" if still else f"moved {_fmt(d)} px"
                    moved += f" where {_fmt(expected)} px was expected"
                else:
                    moved = "stayed in place" if still else "moved too little"
                out.suspects.append((i, j, f"between frames {i} and {j} it {moved}"))
        return out

    # -- episode ---------------------------------------------------------------------------
    def run(self, pair: PreferencePair) -> dict:
        """One episode for a pair; uses only its id, prompt and video paths."""
        colour, shape, direction, _ = parse_prompt(pair.prompt)
        videos = {"A": _Video("A", pair.video_a, self.count_frames(pair.video_a)),
                  "B": _Video("B", pair.video_b, self.count_frames(pair.video_b))}
        initial = {name: uniform_indices(v.n, self.k) for name, v in videos.items()}
        first = {name: self._look(videos[name], initial[name]) for name in VIDEOS}
        turns = []
        text = [restatement(colour, shape, direction)]
        for name in VIDEOS:
            text.append(self._describe(videos[name], first[name]))
        pending = " ".join(text)
        while len(turns) < self.max_turns:
            step = self._next_call(videos, colour, shape, direction)
            if step is None:
                break
            name, frames, reason = step
            turns.append({"think": f"{pending} {reason}".strip(),
                          "tool_call": {"video": name, "target_frames": frames}})
            videos[name].calls.append(frames)
            pending = self._describe(videos[name], self._look(videos[name], frames))
        analyses = {name: self._analyse(videos[name], colour, shape, direction) for name in VIDEOS}
        summary, answer = self._verdict(videos, analyses, colour, shape, direction)
        turns.append({"think": f"{pending} {summary}".strip(), "answer": answer})
        findings = {name: [{"dimension": f.dimension, "kind": f.kind, "frames": f.frames}
                           for f in analyses[name].findings] for name in VIDEOS}
        return {"pair_id": pair.id, "initial": initial, "turns": turns, "findings": findings}

    def _look(self, v: _Video, frames: Sequence[int]) -> List[int]:
        new = [t for t in frames if t not in v.views]
        for t, img in zip(new, self.read_frames(v.path, new) if new else []):
            v.views[t] = perceive(img)
            v.images[t] = img
            v.scale = img.shape[1] / REF_SIZE
        return list(frames)

    def _describe(self, v: _Video, frames: Sequence[int]) -> str:
        """What each just-received frame shows and how it changed since the one seen before it."""
        parts, previous = [], None
        for t in frames:
            view = v.views[t]
            if view.x is None:
                parts.append(f"{v.name} {t}: no object, {view.quality}.")
                continue
            what = f"{view.colour} {view.shape if view.quality == 'clean' else 'object'}"
            where = (f"({view.x:.0f},{view.y:.0f}) {view.quality}" if self.exact else
                     f"at {place(view.x, view.y, v.scale * REF_SIZE)}, {view.quality}")
            line = f"{v.name} {t}: {what} {where}"
            earlier = [s for s in v.views if s < t and v.views[s].x is not None]
            if earlier:  # the change since the frame seen before it ("since" unless just listed)
                s = max(earlier)
                since = "" if previous == s else f" since {s}"
                ddx, ddy = view.x - v.views[s].x, view.y - v.views[s].y
                if np.abs(v.images[t].astype(np.int16) - v.images[s]).max() <= IDENTICAL:
                    line += f", identical to {s}"
                elif max(abs(ddx), abs(ddy)) < STILL * v.scale:
                    line += f", same place as {s}"
                else:
                    moves = [(abs(d), neg if d < 0 else pos)
                             for d, neg, pos in ((ddx, "left", "right"), (ddy, "up", "down"))
                             if abs(d) >= 0.5 * v.scale]
                    if not moves:
                        line += f", barely moved{since}"
                    elif self.exact:
                        line += f", {' '.join(f'{_fmt(d)} {w}' for d, w in moves)}{since}"
                    else:
                        line += f", moved {' and '.join(w for _, w in moves)}{since}"
            previous = t
            parts.append(line + ".")
        return " ".join(parts)

    def _next_call(self, videos, colour, shape, direction) -> Optional[Tuple[str, List[int], str]]:
        """(video, frames, why) of the next tool call, or None when there is nothing to look at."""
        for name in VIDEOS:  # coarse scans first
            v = videos[name]
            if not v.calls:
                frames = scan_indices(v.n, sorted(v.views), self.per_call)
                if frames:
                    return name, frames, f"Next: scan {name} between the frames seen."
        choices = []
        for name in VIDEOS:
            target = self._zoom_target(videos[name], colour, shape, direction)
            if target is not None:
                choices.append((name, *target))
        if not choices:
            return None
        choices.sort(key=lambda c: (len(videos[c[0]].calls), c[0]))  # the less zoomed video first
        name, key, frames, reason = choices[0]
        videos[name].zoomed.add(key)
        return name, frames, reason

    def _zoom_target(self, v: _Video, colour, shape, direction):
        """(key, frames, reason) of the next zoom into video v, or None."""
        a = self._analyse(v, colour, shape, direction)
        options = []
        for i, j, why in a.suspects:
            options.append((("slow", i, j), (i + j) // 2,
                            f"{v.name}: {why}; zoom in to see if it stopped or turned back."))
        for f in a.findings:  # a fault not yet seen next to a neighbouring frame: confirm it
            if any(t - 1 in v.views or t + 1 in v.views for t in f.frames):
                continue
            centre = f.frames[len(f.frames) // 2]
            options.append(((f.dimension, f.kind), centre,
                            f"{v.name}: {f.text}; zoom in to confirm."))
        if not v.zoomed and not options and a.pairs:
            i, j, _ = max(a.pairs, key=lambda p: (p[2], p[1] - p[0], -p[0]))
            options.append((("stretch",), (i + j) // 2, (
                f"{v.name}: nothing wrong yet; zoom between frames {i} and {j}, where the pace "
                "varied most, for a motion fault I may have missed.")))
        for key, centre, reason in options:
            if key in v.zoomed:
                continue
            frames = self._window(v.n, centre)
            if frames in v.calls:
                v.zoomed.add(key)
                continue
            return key, frames, reason
        return None

    def _window(self, n: int, centre: int) -> List[int]:
        size = min(self.per_call, n)
        start = min(max(1, centre - (size - 1) // 2), n - size + 1)
        return list(range(start, start + size))

    def _verdict(self, videos, analyses, colour, shape, direction):
        faults = {}
        lines = ["Evidence:"]
        for name in VIDEOS:
            groups: Dict[Tuple[str, str], List[int]] = {}
            for f in analyses[name].findings:
                groups.setdefault((f.dimension, f.kind), []).extend(f.frames)
            faults[name] = {dim for dim, _ in groups}
            if groups:
                lines.append(f"{name}: " + "; ".join(
                    f"{kind.replace('_', ' ')} ({dim}) in frames {_ranges(sorted(set(fr)))}"
                    for (dim, kind), fr in groups.items()) + ".")
            else:
                lines.append(f"{name}: {_article(colour)} {colour} {shape} moving {direction}, "
                             f"clean and steady in all {len(videos[name].views)} frames seen.")
        answer = {}
        for dim in DIMENSIONS:
            a, b = dim in faults["A"], dim in faults["B"]
            answer[dim] = "tie" if a == b else ("B" if a else "A")
            why = ("both faulty" if a and b else "neither faulty" if a == b
                   else f"only {'A' if a else 'B'} faulty")
            lines.append(f"{dim}: {why}, {answer[dim]}.")
        wins_a = sum(answer[d] == "A" for d in DIMENSIONS)
        wins_b = sum(answer[d] == "B" for d in DIMENSIONS)
        answer["overall"] = "A" if wins_a > wins_b else "B" if wins_b > wins_a else "tie"
        lines.append(f"Overall: A wins {wins_a}, B wins {wins_b}, {answer['overall']}.")
        return " ".join(lines), answer


def restatement(colour: str, shape: str, direction: str) -> str:
    """How the teacher's first turn opens: the prompt's object and motion, restated."""
    return f"Prompt: {_article(colour)} {colour} {shape} moving {direction}."


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _longest_consecutive(frames: Sequence[int]) -> int:
    """Length of the longest run of consecutive frame numbers, e.g. 3 for [2, 5, 6, 7, 9]."""
    best = run = 1 if frames else 0
    for a, b in zip(frames, frames[1:]):
        run = run + 1 if b == a + 1 else 1
        best = max(best, run)
    return best


def _ranges(frames: Sequence[int]) -> str:
    """'3-5, 9' for [3, 4, 5, 9]."""
    out, run = [], []
    for t in frames:
        if run and t == run[-1] + 1:
            run.append(t)
        else:
            if run:
                out.append(run)
            run = [t]
    if run:
        out.append(run)
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in out)


def check_trace(trace: dict, pair: PreferencePair) -> dict:
    """Whether the teacher found each hidden defect (a finding of the same dimension and kind on
    a frame of the defect's segment) and answered each labelled dimension right."""
    defects = []
    for name in VIDEOS:
        for d in pair.meta.get("defects", {}).get(name, []):
            s, e = d["segment"]
            hit = any(f["dimension"] == d["dimension"] and f["kind"] == d["kind"]
                      and any(s <= t <= e for t in f["frames"]) for f in trace["findings"][name])
            defects.append({"video": name, "dimension": d["dimension"], "kind": d["kind"],
                            "segment": [s, e], "found": hit})
    answer = trace["turns"][-1]["answer"]
    correct = {dim: answer.get(dim) == label for dim, label in pair.labels.items()}
    return {"defects": defects, "all_found": all(d["found"] for d in defects),
            "correct": correct, "all_correct": all(correct.values())}
