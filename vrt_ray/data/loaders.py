"""Benchmark loaders: each published preference file -> `PreferencePair`s plus a report.

`load_pairs(path, format)` reads one file. A row it cannot use is reported with its line (or
row / item number) and reason, and the rest loads; only a file it cannot read at all raises
`DataFileError`. Field mappings and what was verified against the published sources:
docs/data.md.
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, Union
from urllib.parse import urlparse

from vrt_ray.data.pair import PreferencePair
from vrt_ray.errors import VrtError

FORMATS = ("videogen-rewardbench", "genai-bench", "mjbench-video", "jsonl")


class DataFileError(VrtError):
    """A preference file that cannot be read at all (missing, not CSV / JSON / parquet)."""


class MissingVideoError(VrtError):
    """`strict` loading found pairs whose video files do not exist."""


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str


@dataclass(frozen=True)
class MissingVideo:
    line: int
    pair_id: str
    path: str


@dataclass
class LoadReport:
    """What one file gave: the pairs, and every row that was skipped and why.

    `unit` says what `line` numbers count: `line` (CSV, JSONL), `row` (parquet) or `item`
    (index in a JSON list), all 1-based.
    """

    path: str
    format: str
    unit: str
    rows: int = 0
    pairs: List[PreferencePair] = field(default_factory=list)
    bad_rows: List[BadRow] = field(default_factory=list)
    missing_videos: List[MissingVideo] = field(default_factory=list)

    @property
    def counts(self) -> Dict[str, int]:
        return {"rows": self.rows, "loaded": len(self.pairs), "bad_rows": len(self.bad_rows),
                "missing_video_pairs": len({m.line for m in self.missing_videos})}

    @property
    def skipped(self) -> int:
        return self.rows - len(self.pairs)

    @property
    def clean(self) -> bool:
        return self.skipped == 0

    def label_counts(self) -> Dict[str, Dict[str, int]]:
        """Per dimension, how many loaded pairs say A, B and tie."""
        counts: Dict[str, Counter] = {}
        for pair in self.pairs:
            for dim, verdict in pair.labels.items():
                counts.setdefault(dim, Counter())[verdict] += 1
        return {dim: {v: c[v] for v in ("A", "B", "tie")} for dim, c in counts.items()}

    def meta_counts(self, key: str) -> Dict[str, int]:
        """How often each value of `meta[key]` occurs among the loaded pairs (raw labels)."""
        return dict(Counter(str(p.meta[key]) for p in self.pairs if key in p.meta))


def load_pairs(path: Union[str, Path], format: str, video_root: Union[str, Path, None] = None,
               strict: bool = False, check_videos: bool = True) -> LoadReport:
    """Read a preference file of `format` (one of `FORMATS`).

    Video paths are resolved against `video_root` (default: the file's folder). With
    `check_videos`, a pair whose video file does not exist is reported in `missing_videos` and
    skipped, or, when `strict`, raises `MissingVideoError` after the whole file was read.
    """
    if format not in FORMATS:
        raise DataFileError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: {'not a file' if path.exists() else 'no such file'}")
    root = Path(video_root) if video_root is not None else path.parent
    read, parse = _FORMATS[format]
    try:
        unit, rows = read(path)
    except OSError as exc:
        raise DataFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    report = LoadReport(path=str(path), format=format, unit=unit)
    for line, row in rows:
        report.rows += 1
        try:
            pair = parse(row, root, f"{path.stem}-{line}")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            report.bad_rows.append(BadRow(line, str(exc) or type(exc).__name__))
            continue
        missing = [v for v in (pair.video_a, pair.video_b)
                   if check_videos and not Path(v).is_file()]
        if missing:
            report.missing_videos.extend(MissingVideo(line, pair.id, v) for v in missing)
            continue
        report.pairs.append(pair)
    if strict and report.missing_videos:
        first = report.missing_videos[0]
        raise MissingVideoError(
            f"{path}: {len(report.missing_videos)} missing video file(s), first at "
            f"{unit} {first.line}: {first.path}")
    return report


# --- reading files: each reader returns (unit, iterator of (number, row)) ------------------

Rows = Iterator[Tuple[int, Any]]


def _text(path: Path) -> str:
    """The file as text; undecodable bytes become U+FFFD so that only their rows go bad."""
    return path.read_bytes().decode("utf-8-sig", errors="replace")


def _read_csv(path: Path) -> Tuple[str, Rows]:
    lines = io.StringIO(_text(path), newline="")
    reader = csv.reader(lines)
    try:
        header = [h.strip() for h in next(reader)]
    except (StopIteration, csv.Error) as exc:
        raise DataFileError(f"{path}: no CSV header ({exc or 'empty file'})") from None
    missing = [c for c in _VIDEOGEN_REQUIRED if c not in header]
    labels = [c for c in _VIDEOGEN_DIMS if c in header]
    if missing or not labels:
        raise DataFileError(
            f"{path}: not a VideoGen-RewardBench CSV: header lacks "
            f"{', '.join(missing) or 'every label column (' + ', '.join(_VIDEOGEN_DIMS) + ')'}")

    def rows() -> Rows:
        while True:
            start = reader.line_num + 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield start, ValueError(f"unreadable CSV record: {exc}")
                continue
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(header):
                yield start, ValueError(f"{len(values)} fields, header has {len(header)}")
                continue
            yield start, dict(zip(header, values))

    return "line", rows()


def _json_lines(path: Path, text: str) -> Tuple[str, Rows]:
    parsed = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            parsed.append((number, json.loads(line)))
        except ValueError as exc:
            parsed.append((number, ValueError(f"not JSON: {exc}")))
    if parsed and all(isinstance(row, ValueError) for _, row in parsed):
        raise DataFileError(f"{path}: not JSON or JSON lines (no line parses)")
    return "line", iter(parsed)


def _read_jsonl(path: Path) -> Tuple[str, Rows]:
    return _json_lines(path, _text(path))


def _read_json_list(path: Path) -> Tuple[str, Rows]:
    try:
        data = json.loads(_text(path))
    except ValueError as exc:
        raise DataFileError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, list):
        raise DataFileError(f"{path}: expected a JSON list of pairs, got {type(data).__name__}")
    return "item", iter(enumerate(data, 1))


def _read_table(path: Path) -> Tuple[str, Rows]:
    """Parquet (by its magic bytes), else a JSON list, else JSON lines."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"PAR1":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise DataFileError(f"{path}: unreadable parquet ({exc})") from None
        return "row", iter(enumerate(table.to_pylist(), 1))
    text = _text(path)
    try:
        data = json.loads(text)
    except ValueError:
        return _json_lines(path, text)
    if not isinstance(data, list):
        raise DataFileError(f"{path}: expected a JSON list of pairs, got {type(data).__name__}")
    return "item", iter(enumerate(data, 1))


# --- turning one row into a pair; a bad row raises ValueError naming the problem -----------

def _check_row(row: Any) -> Mapping:
    if isinstance(row, ValueError):
        raise row
    if not isinstance(row, Mapping):
        raise ValueError(f"row is {type(row).__name__}, not an object")
    return row


def _field(row: Mapping, *names: str) -> str:
    """The first of `names` present in `row`, as a non-empty string."""
    for name in names:
        if name in row:
            value = row[name]
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name} is empty or not text: {value!r}")
            return value.strip()
    raise ValueError(f"missing field {' / '.join(names)}")


def _number(row: Mapping, name: str, whole: bool = False) -> Optional[float]:
    if name not in row:
        return None
    value = row[name]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is not a number") from None
    if not math.isfinite(number) or number <= 0 or (whole and not number.is_integer()):
        raise ValueError(f"{name}={value!r} is not a positive {'whole ' if whole else ''}number")
    return int(number) if whole else number


def _resolve(root: Path, path: str) -> str:
    return str(root / path)


def _jsonl_pair(row: Any, root: Path, default_id: str) -> PreferencePair:
    pair = PreferencePair.from_dict(_check_row(row))
    return PreferencePair(pair.id, pair.prompt, _resolve(root, pair.video_a),
                          _resolve(root, pair.video_b), pair.labels, pair.meta)


_VIDEOGEN_REQUIRED = ("path_A", "path_B", "prompt")
_VIDEOGEN_DIMS = ("VQ", "MQ", "TA", "Overall")
_VIDEOGEN_VERDICTS = {"A": "A", "B": "B", "same": "tie"}


def _videogen_pair(row: Any, root: Path, default_id: str) -> PreferencePair:
    row = _check_row(row)
    labels = {}
    for dim in _VIDEOGEN_DIMS:
        if dim in row:
            value = row[dim].strip()
            if value not in _VIDEOGEN_VERDICTS:
                raise ValueError(f"{dim}={value!r} is not A, B or same")
            labels["overall" if dim == "Overall" else dim] = _VIDEOGEN_VERDICTS[value]
    meta: Dict[str, Any] = {"source": "videogen-rewardbench"}
    for side in ("A", "B"):
        s = side.lower()
        meta[f"path_{s}"] = _field(row, f"path_{side}")
        if row.get(f"{side}_model", "").strip():
            meta[f"model_{s}"] = row[f"{side}_model"].strip()
        for key, name, whole in (("fps", f"fps_{side}", False),
                                 ("num_frames", f"num_frames_{side}", True)):
            value = _number(row, name, whole)
            if value is not None:
                meta[f"{key}_{s}"] = value
    return PreferencePair(default_id, _field(row, "prompt"), _resolve(root, meta["path_a"]),
                          _resolve(root, meta["path_b"]), labels, meta)


_GENAI_VOTES = {"leftvote": "A", "rightvote": "B", "tievote": "tie", "bothbad_vote": "tie"}


def _genai_video(row: Mapping, root: Path, *names: str) -> str:
    value = _field(row, *names)
    if urlparse(value).scheme in ("http", "https"):
        value = urlparse(value).path.rsplit("/", 1)[-1]
        if not value:
            raise ValueError(f"{names[0]} URL has no file name")
    return _resolve(root, value)


def _genai_pair(row: Any, root: Path, default_id: str) -> PreferencePair:
    row = _check_row(row)
    vote = _field(row, "vote_type")
    if vote not in _GENAI_VOTES:
        raise ValueError(f"vote_type={vote!r} is not one of {', '.join(_GENAI_VOTES)}")
    meta: Dict[str, Any] = {"source": "genai-bench", "vote_type": vote}
    for side, s in (("left", "a"), ("right", "b")):
        for name in (f"{side}_video", f"video_{side}"):
            if isinstance(row.get(name), str):
                meta[f"video_{s}_source"] = row[name]
        if isinstance(row.get(f"{side}_model"), str):
            meta[f"model_{s}"] = row[f"{side}_model"]
    pair_id = str(row["id"]) if row.get("id") not in (None, "") else default_id
    return PreferencePair(pair_id, _field(row, "prompt"),
                          _genai_video(row, root, "left_video", "video_left"),
                          _genai_video(row, root, "right_video", "video_right"),
                          {"overall": _GENAI_VOTES[vote]}, meta)


# MJ-Bench-Video aspect -> (our dimension, its key in category_preference).
_MJ_ASPECTS = {"Alignment": ("TA", "Alignment"), "Fineness": ("VQ", "Fineness"),
               "Consistency": ("MQ", "Coherence & Consistency"), "Safety": ("Safety", "Safety"),
               "Bias": ("Bias", "Bias")}
_MJ_PREFERENCES = {"same": "tie", "video 1 better": "A", "video 2 better": "B",
                   "hard to judge": None}


def _mj_preference(value: Any, name: str) -> Tuple[str, Optional[str]]:
    """A preference string, case-normalised, and its verdict (None for "Hard to judge")."""
    key = " ".join(value.lower().split()) if isinstance(value, str) else None
    if key not in _MJ_PREFERENCES:
        raise ValueError(f"{name}={value!r} is not one of "
                         "Same, Video 1 better, Video 2 better, Hard to judge")
    return key[:1].upper() + key[1:], _MJ_PREFERENCES[key]


def _mj_score_verdict(a: Any, b: Any, aspect: str) -> Optional[str]:
    """From the per-aspect scores (0 not relevant, 1 good, 2 bad): good beats bad, equal
    relevant scores tie, an aspect not relevant to either video has no verdict."""
    for score in (a, b):
        if isinstance(score, bool) or score not in (0, 1, 2):
            raise ValueError(f"{aspect} score {score!r} is not 0, 1 or 2")
    if a == 0 or b == 0:
        return None
    return "tie" if a == b else ("A" if a == 1 else "B")


def _mjbench_pair(row: Any, root: Path, default_id: str) -> PreferencePair:
    """Overall from `overall_preference`; each aspect from the annotators' own per-aspect
    verdict in `category_preference`, or, where that lacks the aspect, from the scores."""
    row = _check_row(row)
    overall, verdict = _mj_preference(row.get("overall_preference"), "overall_preference")
    labels: Dict[str, str] = {} if verdict is None else {"overall": verdict}
    categories = row.get("category_preference", {})
    scores = (row.get("video_0_overall_score", {}), row.get("video_1_overall_score", {}))
    if not all(isinstance(x, Mapping) for x in (categories, *scores)):
        raise ValueError("category_preference and video_*_overall_score must be objects")
    for aspect, (dim, category) in _MJ_ASPECTS.items():
        if category in categories:
            verdict = _mj_preference(categories[category], f"category_preference[{category}]")[1]
        elif aspect in scores[0] and aspect in scores[1]:
            verdict = _mj_score_verdict(scores[0][aspect], scores[1][aspect], aspect)
        else:
            verdict = None
        if verdict is not None:
            labels[dim] = verdict
    meta: Dict[str, Any] = {"source": "mjbench-video", "overall_preference": overall}
    for name in ("category_preference", "video_0_overall_score", "video_1_overall_score",
                 "video_0_total_score", "video_1_total_score", "video_0_label", "video_1_label"):
        if name in row:
            meta[name] = row[name]
    return PreferencePair(default_id, _field(row, "caption"),
                          _resolve(root, _field(row, "video_0_path")),
                          _resolve(root, _field(row, "video_1_path")), labels, meta)


_FORMATS: Dict[str, Tuple[Callable[[Path], Tuple[str, Rows]],
                          Callable[[Any, Path, str], PreferencePair]]] = {
    "jsonl": (_read_jsonl, _jsonl_pair),
    "videogen-rewardbench": (_read_csv, _videogen_pair),
    "genai-bench": (_read_table, _genai_pair),
    "mjbench-video": (_read_json_list, _mjbench_pair),
}
