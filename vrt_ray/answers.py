"""Parse a final answer into verdicts; never raise on what the model wrote.

Two answer styles cover the presets:
- ``json`` (ours): ``<answer>{"TA": "A", "VQ": "B", "MQ": "tie", "overall": "A"}</answer>``;
- ``key_value`` (the official VR-Thinker checkpoint): ``<final answer>TA = 1, MQ = 0, VQ = 1,
  OA = 1</final answer>`` with codes 1 / 2 / 0, the overall falling back to the last ``\\boxed{}``.
`AnswerSyntax` says which tags, key names and verdict codes a preset uses; verdicts come back
in our terms (dimension -> ``A`` | ``B`` | ``tie``).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Sequence, Tuple

VERDICTS = ("A", "B", "tie")


@dataclass(frozen=True)
class AnswerSyntax:
    style: str = "json"  # json | key_value
    open_tags: Tuple[str, ...] = ("<answer>",)  # matched case-insensitively
    close_tags: Tuple[str, ...] = ("</answer>",)
    keys: Mapping[str, str] = field(default_factory=lambda: {  # our dimension -> model's key
        "TA": "TA", "VQ": "VQ", "MQ": "MQ", "overall": "overall"})
    codes: Mapping[str, str] = field(default_factory=lambda: {  # our verdict -> model's code
        "A": "A", "B": "B", "tie": "tie"})
    boxed_overall: bool = False  # read overall from the last \boxed{} when the tag lacks it


@dataclass(frozen=True)
class ParsedAnswer:
    verdicts: Dict[str, str]  # the dimensions that parsed, in our terms
    complete: bool  # every required dimension present with a valid verdict
    error: Optional[str] = None  # why not complete (for logs and reports)


def has_answer(text: str, syntax: AnswerSyntax) -> bool:
    return _last_tag_body(text, syntax) is not None or (
        syntax.boxed_overall and _last_boxed(text) is not None)


def parse_answer(text: str, syntax: AnswerSyntax, dimensions: Sequence[str]) -> ParsedAnswer:
    """Verdicts from the last answer in `text`, for `dimensions` plus overall."""
    required = list(dimensions) + ["overall"]
    body = _last_tag_body(text, syntax)
    raw: Dict[str, str] = {}
    error = None
    if body is None:
        error = "no answer"
    elif syntax.style == "json":
        raw, error = _json_pairs(body)
    else:
        raw = {k.strip().upper(): v for k, v in re.findall(r"([A-Za-z]{2,8})\s*[=:]\s*([\w]+)", body)}
    if syntax.boxed_overall and syntax.keys["overall"].upper() not in {k.upper() for k in raw}:
        boxed = _last_boxed(text)
        if boxed is not None:
            raw[syntax.keys["overall"]] = boxed
            error = None
    by_code = {str(code).strip().lower(): verdict for verdict, code in syntax.codes.items()}
    lookup = {str(k).strip().upper(): str(v).strip().lower() for k, v in raw.items()}
    verdicts = {}
    for dim in required:
        code = lookup.get(syntax.keys.get(dim, dim).upper())
        if code in by_code:
            verdicts[dim] = by_code[code]
    missing = [d for d in required if d not in verdicts]
    if missing and error is None:
        error = f"missing or invalid: {', '.join(missing)}"
    return ParsedAnswer(verdicts, not missing, None if not missing else error)


def _last_tag_body(text: str, syntax: AnswerSyntax) -> Optional[str]:
    lowered = text.lower()
    best = None
    for open_tag in syntax.open_tags:
        start = lowered.rfind(open_tag.lower())
        if start >= 0 and (best is None or start > best[0]):
            best = (start, start + len(open_tag))
    if best is None:
        return None
    ends = [e for e in (lowered.find(c.lower(), best[1]) for c in syntax.close_tags) if e >= 0]
    return text[best[1]:min(ends)] if ends else text[best[1]:]


def _json_pairs(body: str) -> Tuple[Dict[str, str], Optional[str]]:
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end < start:
        return {}, "answer is not a JSON object"
    try:
        obj = json.loads(body[start:end + 1])
    except (ValueError, RecursionError):
        return {}, "answer is not valid JSON"
    if not isinstance(obj, dict):
        return {}, "answer is not a JSON object"
    return {str(k): v for k, v in obj.items() if isinstance(v, (str, int))}, None


def _last_boxed(text: str) -> Optional[str]:
    found = re.findall(r"\\boxed\{\s*([^{}]*?)\s*\}", text)
    return found[-1] if found else None
