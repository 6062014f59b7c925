"""Protocol presets: every word and syntax the model reads or writes, in one YAML file.

A checkpoint is trained on one conversation format; the preset names it (`vrt`, ours, or
`vr_thinker`, the published VR-Thinker-7B's) so the same episode code can run either. Presets
live in vrt_ray/presets/; `protocol.preset` in the config is a name there or a YAML path.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict

import yaml

from vrt_ray.answers import AnswerSyntax
from vrt_ray.errors import VrtError
from vrt_ray.tool_calls import ERROR_KINDS

PRESET_DIR = Path(__file__).parent / "presets"


class PresetError(VrtError):
    """A preset file that is missing or incomplete."""


@dataclass(frozen=True)
class Preset:
    name: str
    frame_space: str  # per_video: calls name video A/B; pool: one 1-based pool over both videos
    initial_view: str  # images: labelled frames per video; pool_video: one video item
    initial_view_first: bool  # initial frames before the prompt text in the user turn
    tool_result_role: str  # tool | user
    reject_duplicate_calls: bool
    on_no_action: str  # message: tell the model; end: the episode ends without a verdict
    tool_open: str
    tool_close: str
    video_required: bool
    answer: AnswerSyntax
    dimension_descriptions: Dict[str, str]
    dimension_line: str
    system: str
    user: str
    initial_video_intro: str
    frame_label: str
    tool_result_intro: str
    dropped_stub: str  # empty: a dropped image leaves no trace
    budget_exhausted: str  # empty: no extra turn once the tool budget is spent
    no_action: str
    errors: Dict[str, str]
    pool_per_video: int = 0


_SCALARS = ("name", "frame_space", "initial_view", "initial_view_first", "tool_result_role",
            "reject_duplicate_calls", "on_no_action", "dimension_line", "system", "user",
            "initial_video_intro", "frame_label", "tool_result_intro", "dropped_stub",
            "budget_exhausted", "no_action")
_CHOICES = {"frame_space": ("per_video", "pool"), "initial_view": ("images", "pool_video"),
            "tool_result_role": ("tool", "user"), "on_no_action": ("message", "end")}


def load_preset(name_or_path: str) -> Preset:
    """The preset called `name_or_path` (under vrt_ray/presets/) or stored at that path."""
    path = Path(name_or_path)
    if not path.is_file():
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
        raise PresetError(f"protocol preset {name_or_path!r} not found (presets: {known})")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PresetError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(raw, dict):
        raise PresetError(f"{path}: must be a mapping")
    required = _SCALARS + ("tool_call", "answer", "dimension_descriptions", "errors")
    missing = [k for k in required if k not in raw]
    if missing:
        raise PresetError(f"{path}: missing key(s) {', '.join(missing)}")
    for key, allowed in _CHOICES.items():
        if raw[key] not in allowed:
            raise PresetError(f"{path}: {key} = {raw[key]!r}, expected one of {list(allowed)}")
    absent = [k for k in ERROR_KINDS if k != "no_action" and k not in raw["errors"]] + \
        [k for k in ("unreadable_video",) if k not in raw["errors"]]
    if absent:
        raise PresetError(f"{path}: errors lacks message(s) for {', '.join(absent)}")
    if raw["frame_space"] == "pool" and int(raw.get("pool_per_video", 0)) < 1:
        raise PresetError(f"{path}: frame_space pool needs pool_per_video >= 1")
    call, answer = raw["tool_call"], raw["answer"]
    try:
        syntax = AnswerSyntax(style=answer["style"], open_tags=tuple(answer["open_tags"]),
                              close_tags=tuple(answer["close_tags"]), keys=dict(answer["keys"]),
                              codes={k: str(v) for k, v in answer["codes"].items()},
                              boxed_overall=bool(answer.get("boxed_overall", False)))
        return Preset(**{k: raw[k] for k in _SCALARS}, tool_open=call["open"],
                      tool_close=call["close"], video_required=bool(call["video_required"]),
                      answer=syntax, dimension_descriptions=dict(raw["dimension_descriptions"]),
                      errors=dict(raw["errors"]), pool_per_video=int(raw.get("pool_per_video", 0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise PresetError(f"{path}: malformed tool_call/answer section ({exc})") from None

