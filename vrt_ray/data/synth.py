"""The synthetic preference data set: rendered mp4 pairs with time-localised defects, labels,
splits, cold-start teacher traces and frame captions (DESIGN.md §9, §12; docs/synthetic_data.md).

Each pair shows one prompt twice (same length, same scene); each video carries zero or more
defects, one per dimension at most, each confined to a segment of frames. A segment is long
enough that the teacher's coarse grid (initial view + one scan) lands in it — twice as long
for freeze and wrong direction, which show only between two frames — and the segments of one
video are apart by that grid spacing. The labels follow from the defects only.
Same seed, same bytes.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from vrt_ray.data.pair import PreferencePair
from vrt_ray.data.scene import (BACKGROUNDS, COLOURS, DIRECTIONS, MARGIN, RADIUS, REF_SIZE,
                                SHAPES, VQ_KINDS, FrameState, background, hue_degrees,
                                parse_prompt, prompt_text, render)
from vrt_ray.data.teacher import DIMENSIONS, NOTE_STYLES, Teacher, check_trace, max_gap, place
from vrt_ray.errors import VrtError
from vrt_ray.frame_cache import FrameCache
from vrt_ray.video import open_video

KINDS = {"VQ": VQ_KINDS, "MQ": ("jitter", "freeze", "teleport"),
         "TA": ("wrong_colour", "wrong_shape", "wrong_direction")}
STRETCH_KINDS = ("freeze", "wrong_direction")  # visible only between two frames
# who carries a defect in a dimension, and how often
WHO = (("A", 0.3), ("B", 0.3), ("none", 0.25), ("both", 0.15))
JITTER = (3.5, 6.0)  # px off the path, either side, per frame
TELEPORT = (22.0, 28.0)  # px off the path, towards the middle of the frame
SPLITS = (("train", 0.8), ("val", 0.1), ("test", 0.1))
CAPTIONS_PER_VIDEO = 16  # 4 let a long warm-up memorise the videos instead of reading position
_DRAWS = 1000  # tries at a mix of defects that fits the length range
# x264's macroblock-tree rate control gave different bytes for the same frames from one run to
# the next (at 112 px, even on one thread); without it the output is reproducible
X264_OPTIONS = {"crf": "18", "preset": "veryfast", "threads": "1", "x264-params": "mbtree=0"}


class SynthError(VrtError):
    """The synthetic data set cannot be made as asked."""


@dataclass(frozen=True)
class SynthSettings:
    pairs: int
    seed: int = 0
    min_frames: int = 16
    max_frames: int = 256
    size: int = 112
    fps: int = 8
    initial_frames: int = 4
    max_turns: int = 6
    max_frames_per_call: int = 8
    split: Tuple[int, ...] = ()  # train/val/test pair counts; empty: 80/10/10 of `pairs`
    notes: str = "exact"  # how traces and captions say where the object is (NOTE_STYLES)

    def validate(self) -> None:
        if self.pairs < 1:
            raise SynthError(f"--pairs {self.pairs}: need at least 1")
        if not 16 <= self.min_frames <= self.max_frames:
            raise SynthError(f"frame range {self.min_frames}..{self.max_frames}: need "
                             "16 <= min-frames <= max-frames")
        if self.size < 96 or self.size % 8:  # smaller objects are too small to read reliably
            raise SynthError(f"--size {self.size}: need a multiple of 8, at least 96")
        if min(self.initial_frames, self.max_turns, self.max_frames_per_call) < 2 or self.fps < 1:
            raise SynthError("--fps >= 1, --initial-frames >= 2, --max-turns >= 2 and "
                             "--max-frames-per-call >= 2 are needed")
        if self.split and (len(self.split) != 3 or min(self.split) < 0
                           or sum(self.split) != self.pairs):
            raise SynthError(f"split {list(self.split)}: need three counts (train, val, test) "
                             f"adding up to the {self.pairs} pairs")
        if self.notes not in NOTE_STYLES:
            raise SynthError(f"--notes {self.notes}: one of {', '.join(NOTE_STYLES)}")


def labels_from_defects(defects: Dict[str, List[dict]]) -> Dict[str, str]:
    """Per dimension: the video without a defect in it wins; neither or both: tie. Overall: the
    video that wins more dimensions; as many: tie."""
    labels = {}
    for dim in DIMENSIONS:
        a = any(d["dimension"] == dim for d in defects["A"])
        b = any(d["dimension"] == dim for d in defects["B"])
        labels[dim] = "tie" if a == b else ("B" if a else "A")
    wins_a = sum(labels[d] == "A" for d in DIMENSIONS)
    wins_b = sum(labels[d] == "B" for d in DIMENSIONS)
    labels["overall"] = "A" if wins_a > wins_b else "B" if wins_b > wins_a else "tie"
    return labels


def _lengths(kinds: Sequence[str], n: int, s: SynthSettings, rng: np.random.Generator) -> List[int]:
    g = max_gap(n, s.initial_frames, s.max_frames_per_call)
    extra = max(0, round(0.05 * n))
    return [max(3, 2 * g if k in STRETCH_KINDS else g) + int(rng.integers(0, extra + 1))
            for k in kinds]


def _place(lengths: List[int], n: int, sep: int,
           rng: np.random.Generator) -> Optional[List[List[int]]]:
    """Random disjoint segments [start, end] inside frames 2..n-1, `sep` frames apart, in a
    random order; None when they do not fit."""
    free = (n - 2) - sum(lengths) - sep * (len(lengths) - 1)
    if free < 0:
        return None
    order = rng.permutation(len(lengths))
    cuts = np.sort(rng.integers(0, free + 1, size=len(lengths)))  # slack before each segment
    segments, pos, used = [None] * len(lengths), 2, 0
    for rank, i in enumerate(order):
        pos += int(cuts[rank]) - used
        used = int(cuts[rank])
        segments[i] = [pos, pos + lengths[i] - 1]
        pos += lengths[i] + sep
    return segments


def _moves_as_asked(kinds: Sequence[str], lengths: Sequence[int], n: int) -> bool:
    """Whether the object still clearly moves the prompt's way: forward frames at least 1.5
    times the backward ones."""
    back = sum(L for k, L in zip(kinds, lengths) if k == "wrong_direction")
    still = sum(L for k, L in zip(kinds, lengths) if k == "freeze")
    return n - back - still >= 1.5 * back


def _plan_defects(kinds: Dict[str, List[str]], s: SynthSettings, rng: np.random.Generator):
    """(num_frames, segments per video), or None when the defects cannot fit: the length is
    drawn, then lengthened until they fit."""
    n = int(rng.integers(s.min_frames, s.max_frames + 1))
    while n <= s.max_frames:
        sep = max_gap(n, s.initial_frames, s.max_frames_per_call)
        lengths = {v: _lengths(kinds[v], n, s, rng) for v in "AB"}
        placed = {v: _place(lengths[v], n, sep, rng) for v in "AB"}
        if all(p is not None for p in placed.values()) and all(
                _moves_as_asked(kinds[v], lengths[v], n) for v in "AB"):
            return n, placed
        n += 1
    return None


def _states(n: int, colour: str, shape: str, direction: str, defects: List[dict], size: int,
            rng: np.random.Generator) -> List[FrameState]:
    """Per-frame truth of one video: the object's look, centre and degradation."""
    scale = size / REF_SIZE
    dx, dy = DIRECTIONS[direction]
    kind_at: Dict[int, str] = {}
    for d in defects:
        for t in range(d["segment"][0], d["segment"][1] + 1):
            kind_at[t] = d["kind"]
    step = [0.0] + [{"freeze": 0.0, "wrong_direction": -1.0}.get(kind_at.get(t), 1.0)
                    for t in range(2, n + 1)]
    travel = np.cumsum(step)
    lo, hi = (RADIUS + MARGIN) * scale, size - (RADIUS + MARGIN) * scale
    pace = (hi - lo) / max(travel.max() - travel.min(), 1.0)
    along = lo + (travel - travel.min()) * pace
    line = float(rng.uniform(size / 2 - 16 * scale, size / 2 + 16 * scale))
    towards_middle = 1.0 if line < size / 2 else -1.0
    wrong_colour = [c for c in COLOURS if _hue_gap(c, colour) >= 60]
    alt_colour = wrong_colour[int(rng.integers(len(wrong_colour)))]
    alt_shape = [x for x in SHAPES if x != shape][int(rng.integers(len(SHAPES) - 1))]
    jump = towards_middle * float(rng.uniform(*TELEPORT)) * scale
    states = []
    for t in range(1, n + 1):
        kind = kind_at.get(t)
        a = along[t - 1] if dx + dy > 0 else size - along[t - 1]
        off = 0.0
        if kind == "jitter":
            off = float(rng.choice([-1.0, 1.0]) * rng.uniform(*JITTER)) * scale
        elif kind == "teleport":
            off = jump
        x, y = (a, line + off) if dx else (line + off, a)
        states.append(FrameState(
            colour=alt_colour if kind == "wrong_colour" else colour,
            shape=alt_shape if kind == "wrong_shape" else shape,
            x=round(x, 3), y=round(y, 3), vq=kind if kind in VQ_KINDS else None))
    return states


def _hue_gap(c1: str, c2: str) -> float:
    h1, h2 = hue_degrees(np.asarray([COLOURS[c1], COLOURS[c2]], dtype=np.float64))
    return float(abs((h1 - h2 + 180.0) % 360.0 - 180.0))


def _encode(frames: Sequence[np.ndarray], path: Path, fps: int) -> None:
    """Write RGB frames as H.264 (yuv420p) mp4, reproducibly (see X264_OPTIONS)."""
    import av

    with av.open(str(path), "w", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("libx264", rate=fps, options=dict(X264_OPTIONS))
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def video_reader(root: Path, cache_bytes: int = 256 << 20):
    """`read_frames(path, indices)` and `count_frames(path)` over files under `root`, decoded
    exactly by index through the video layer (what the model will see) and cached."""
    cache = FrameCache(cache_bytes)

    def read_frames(path: str, indices: Sequence[int]) -> List[np.ndarray]:
        return cache.get(root / path, indices)

    def count_frames(path: str) -> int:
        with open_video(root / path) as reader:
            return reader.info.num_frames

    return read_frames, count_frames


# -- the data set ---------------------------------------------------------------------------------
def _draw_scene(rng: np.random.Generator) -> Dict[str, str]:
    return {"colour": list(COLOURS)[int(rng.integers(len(COLOURS)))],
            "shape": SHAPES[int(rng.integers(len(SHAPES)))],
            "direction": list(DIRECTIONS)[int(rng.integers(len(DIRECTIONS)))],
            "background": BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]}


def _draw_kinds(rng: np.random.Generator) -> Dict[str, List[str]]:
    kinds: Dict[str, List[str]] = {"A": [], "B": []}
    who = [w for w, _ in WHO]
    p = [q for _, q in WHO]
    for dim in DIMENSIONS:
        owner = who[int(rng.choice(len(who), p=p))]
        for v in "AB":
            if owner in (v, "both"):
                kinds[v].append(KINDS[dim][int(rng.integers(len(KINDS[dim])))])
    return kinds


def _dimension(kind: str) -> str:
    return next(dim for dim, kinds in KINDS.items() if kind in kinds)


def render_video(path: Path, prompt: str, num_frames: int, defects: Sequence[dict], *,
                 size: int = 112, fps: int = 8,
                 rng: np.random.Generator) -> List[FrameState]:
    """Render one video of a grammar prompt with defects ({"kind", "segment": [start, end]},
    1-based, inclusive) to an mp4 at `path`; returns the per-frame truth."""
    colour, shape, direction, background_kind = parse_prompt(prompt)
    states = _states(num_frames, colour, shape, direction, defects, size, rng)
    bg = background(background_kind, size)
    _encode([render(st, bg, rng) for st in states], Path(path), fps)
    return states


def make_pair(index: int, s: SynthSettings, out: Path) -> tuple:
    """Draw and render pair `index` of the data set under out/videos; returns (pair, states)."""
    rng = np.random.default_rng([s.seed, index])
    scene = _draw_scene(rng)
    for _ in range(_DRAWS):  # short videos cannot hold every mix of defects: draw again
        kinds = _draw_kinds(rng)
        plan = _plan_defects(kinds, s, rng)
        if plan is not None:
            break
    else:
        raise SynthError(f"defects do not fit in {s.min_frames}..{s.max_frames} frames; "
                         "raise --max-frames")
    n, segments = plan
    defects = {v: sorted(({"dimension": _dimension(k), "kind": k, "segment": seg}
                          for k, seg in zip(kinds[v], segments[v])), key=lambda d: d["segment"])
               for v in "AB"}
    pair_id = f"synth-{s.seed}-{index:05d}"
    prompt = prompt_text(scene["colour"], scene["shape"], scene["direction"], scene["background"])
    states, paths = {}, {}
    for v in "AB":
        paths[v] = f"videos/{pair_id}-{v}.mp4"
        states[v] = render_video(out / paths[v], prompt, n, defects[v], size=s.size, fps=s.fps,
                                 rng=rng)
    pair = PreferencePair(
        id=pair_id, prompt=prompt, video_a=paths["A"], video_b=paths["B"],
        labels=labels_from_defects(defects),
        meta={"source": "synthetic", "num_frames": n, "fps": s.fps, "size": s.size,
              "defects": defects})
    return pair, states


def caption_text(state: FrameState, background_kind: str, notes: str = "exact",
                 size: int = REF_SIZE) -> str:
    """A factual one-line description of a rendered frame of side `size`; the object's place as
    the teacher's `notes` give it (its centre in pixels, or the ninth of the frame)."""
    quality = {"noise": "noisy", "blur": "blurred", "blocking": "blocky"}.get(
        state.vq, "sharp and clean")
    where = (f"({state.x:.0f},{state.y:.0f})" if notes == "exact"
             else place(state.x, state.y, size))
    return (f"A {state.colour} {state.shape} at {where} over a {background_kind} background, "
            f"{quality}.")


_CAPTION = re.compile(r"A (?P<colour>\w+) (?P<shape>\w+) at (?:\((?P<x>\d+),(?P<y>\d+)\)|"
                      r"(?P<place>\w+ \w+)) over a (?P<background>\w+) background, "
                      r"(?P<quality>[\w ]+)\.")


def caption_spans(caption: str) -> List[Tuple[str, int, int]]:
    """(field, start, end) of each fact in a caption written by `caption_text` (x and y, or the
    place, are `position`); [] for any other text."""
    m = _CAPTION.fullmatch(caption)
    if m is None:
        return []
    return [("position" if g in ("x", "y", "place") else g, *m.span(g))
            for g, value in m.groupdict().items() if value is not None]


def _captions(pair: PreferencePair, states: Dict[str, List[FrameState]], background_kind: str,
              rng: np.random.Generator, notes: str) -> List[dict]:
    """Per video: a frame inside its first defect segment (when it has one), then random ones."""
    rows = []
    for v, path in (("A", pair.video_a), ("B", pair.video_b)):
        n = len(states[v])
        frames = []
        for d in pair.meta["defects"][v][:1]:
            frames.append(int(rng.integers(d["segment"][0], d["segment"][1] + 1)))
        while len(frames) < CAPTIONS_PER_VIDEO:
            t = int(rng.integers(1, n + 1))
            if t not in frames:
                frames.append(t)
        for t in sorted(frames):
            st = states[v][t - 1]
            caption = caption_text(st, background_kind, notes, pair.meta["size"])
            rows.append({"video": path, "frame": t, "caption": caption,
                         "facts": {"colour": st.colour, "shape": st.shape, "x": st.x, "y": st.y,
                                   "quality": st.vq or "clean", "background": background_kind}})
    return rows


def _write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")


_TEACHERS: Dict[tuple, Teacher] = {}  # per process: its frame cache


def _make_one(index: int, s: SynthSettings, out: Path) -> tuple:
    """Pair `index` rendered, its teacher trace checked, its captions: (pair, trace, captions)."""
    key = (str(out), s.initial_frames, s.max_turns, s.max_frames_per_call, s.notes)
    if key not in _TEACHERS:
        _TEACHERS[key] = Teacher(*video_reader(out), initial_frames=s.initial_frames,
                                 max_turns=s.max_turns, max_frames_per_call=s.max_frames_per_call,
                                 notes=s.notes)
    pair, states = make_pair(index, s, out)
    trace = _TEACHERS[key].run(PreferencePair(pair.id, pair.prompt, pair.video_a, pair.video_b))
    trace["found"] = check_trace(trace, pair)
    captions = _captions(pair, states, parse_prompt(pair.prompt)[3],
                         np.random.default_rng([s.seed, index, 1]), s.notes)
    return pair, trace, captions


def generate(out: Path, s: SynthSettings, progress: bool = True,
             workers: Optional[int] = None) -> dict:
    """Write the data set into `out` (pairs, videos, splits, traces, captions); return a summary.
    Pairs are made by `workers` processes (default: one per core); every pair depends only on
    the seed and its index, so the files are the same for any number of workers."""
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial
    from itertools import repeat
    from multiprocessing import get_context

    from tqdm import tqdm

    s.validate()
    out = Path(out)
    videos_dir = out / "videos"
    try:
        videos_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SynthError(f"cannot create {videos_dir}: {exc.strerror}") from None
    if workers is not None and workers < 1:
        raise SynthError(f"--workers {workers}: must be at least 1")
    workers = min(workers or os.cpu_count() or 1, s.pairs)
    start = time.perf_counter()
    bar = partial(tqdm, total=s.pairs, desc="synth pairs", unit="pair", disable=not progress)
    if workers == 1:
        made = [_make_one(index, s, out) for index in bar(range(s.pairs))]
        _TEACHERS.clear()  # its frame cache is not kept past the data set
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            made = list(bar(pool.map(_make_one, range(s.pairs), repeat(s), repeat(out))))
    pairs = [pair for pair, _, _ in made]
    traces = [trace for _, trace, _ in made]
    captions = [row for _, _, rows in made for row in rows]
    order = np.random.default_rng([s.seed, 2**31]).permutation(len(pairs))
    bounds = np.cumsum([0, *(s.split or [round(frac * len(pairs)) for _, frac in SPLITS])])
    bounds[-1] = len(pairs)
    splits = {}
    for (name, _), lo, hi in zip(SPLITS, bounds, bounds[1:]):
        splits[name] = [pairs[i] for i in sorted(order[lo:hi])]
        _write_jsonl(out / f"{name}.jsonl", [p.to_dict() for p in splits[name]])
    split_of = {p.id: name for name, ps in splits.items() for p in ps}
    for trace in traces:
        trace["split"] = split_of[trace["pair_id"]]
    _write_jsonl(out / "pairs.jsonl", [p.to_dict() for p in pairs])
    _write_jsonl(out / "traces.jsonl", traces)
    _write_jsonl(out / "captions.jsonl", captions)
    return _summarise(pairs, traces, splits, captions, time.perf_counter() - start)


def _summarise(pairs, traces, splits, captions, seconds: float) -> dict:
    """Counts, label distribution and the teacher's rates (from the traces' `found`)."""
    defects = [d for t in traces for d in t["found"]["defects"]]
    labelled = [(dim, ok) for t in traces for dim, ok in t["found"]["correct"].items()]
    labels = {dim: {v: sum(p.labels[dim] == v for p in pairs) for v in ("A", "B", "tie")}
              for dim in (*DIMENSIONS, "overall")}
    return {
        "pairs": len(pairs), "splits": {k: len(v) for k, v in splits.items()},
        "frames": sum(2 * p.meta["num_frames"] for p in pairs),
        "num_frames_range": [min(p.meta["num_frames"] for p in pairs),
                             max(p.meta["num_frames"] for p in pairs)],
        "labels": labels, "defects": len(defects), "captions": len(captions),
        "teacher": {
            "defects_found": sum(d["found"] for d in defects) / max(len(defects), 1),
            "dimension_accuracy": sum(ok for _, ok in labelled) / max(len(labelled), 1),
            "all_correct": sum(t["found"]["all_correct"] for t in traces) / len(traces),
            "tool_calls_per_episode": sum(len(t["turns"]) - 1 for t in traces) / len(traces)},
        "seconds": round(seconds, 1)}
