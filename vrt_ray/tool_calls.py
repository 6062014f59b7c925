"""Parse and check `select_frames` calls in model text; never raise on what the model wrote.

A call is JSON between the preset's open and close tags:
`<tool_call>{"name": "select_frames", "arguments": {"video": "A", "target_frames": [40, 44]}}</tool_call>`.
`parse_tool_call` returns either a `FrameRequest` to execute or a `ToolCallError` whose `kind`
and `details` the protocol preset turns into the tool message the model reads (the wording lives
in the preset, not here). Frame numbers are 1-based.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Collection, Dict, Mapping, Optional, Tuple, Union

TOOL_NAME = "select_frames"

ERROR_KINDS = ("no_action", "bad_json", "unknown_tool", "unknown_video", "bad_frames",
               "empty_frames", "too_many_frames", "out_of_range", "duplicate_call")


@dataclass(frozen=True)
class FrameRequest:
    """A valid call: the frames (1-based, as asked, duplicates removed in order) of one video."""

    video: str
    frames: Tuple[int, ...]


@dataclass(frozen=True)
class ToolCallError:
    """A call the model got wrong; `kind` is one of ERROR_KINDS, `details` fill the message."""

    kind: str
    details: Dict[str, Any] = field(default_factory=dict)


ParsedCall = Union[FrameRequest, ToolCallError]


def extract_call_text(text: str, open_tag: str = "<tool_call>",
                      close_tag: str = "</tool_call>") -> Optional[str]:
    """The body of the first tool call in `text`, or None when there is none.

    An opening tag without a closing one (generation cut at a budget) still yields its body, so
    the model hears what was wrong with it.
    """
    start = text.find(open_tag)
    if start < 0:
        return None
    body_start = start + len(open_tag)
    end = text.find(close_tag, body_start)
    return text[body_start:] if end < 0 else text[body_start:end]


def parse_tool_call(body: str, videos: Mapping[str, int], max_frames: int,
                    previous: Collection[FrameRequest] = (),
                    video_required: bool = True) -> ParsedCall:
    """Check a call body against the videos (name -> frame count) and the per-call limit.

    `previous` holds the episode's earlier valid requests: asking for exactly the same frames
    of the same video again is a `duplicate_call`. With `video_required=False` (a preset whose
    frames live in one pool) the only video name in `videos` is used when the call names none.
    """
    try:
        call = json.loads(body.strip())
    except (ValueError, RecursionError) as exc:
        return ToolCallError("bad_json", {"reason": str(exc).split(":")[0]})
    if not isinstance(call, dict):
        return ToolCallError("bad_json", {"reason": "the call must be a JSON object"})
    name = call.get("name")
    if name != TOOL_NAME:
        return ToolCallError("unknown_tool", {"name": str(name)[:80]})
    args = call.get("arguments", {})
    if isinstance(args, str):  # some models write the arguments as a JSON string
        try:
            args = json.loads(args)
        except ValueError:
            return ToolCallError("bad_json", {"reason": "arguments is not a JSON object"})
    if not isinstance(args, dict):
        return ToolCallError("bad_json", {"reason": "arguments is not a JSON object"})

    names = sorted(videos)
    video = args.get("video")
    if video is None and not video_required and len(names) == 1:
        video = names[0]
    if not isinstance(video, str) or video.strip() not in videos:
        return ToolCallError("unknown_video", {"video": str(video)[:80], "videos": names})
    video = video.strip()
    total = videos[video]

    frames = args.get("target_frames")
    if not isinstance(frames, list) or not all(_is_int(f) for f in frames):
        return ToolCallError("bad_frames", {"video": video, "total": total})
    if not frames:
        return ToolCallError("empty_frames", {"video": video, "total": total})
    frames = tuple(dict.fromkeys(int(f) for f in frames))
    if len(frames) > max_frames:
        return ToolCallError("too_many_frames", {"video": video, "count": len(frames),
                                                 "max_frames": max_frames, "total": total})
    outside = [f for f in frames if not 1 <= f <= total]
    if outside:
        return ToolCallError("out_of_range", {"video": video, "frames": outside[:8],
                                              "total": total})
    request = FrameRequest(video, frames)
    if any(p.video == video and set(p.frames) == set(frames) for p in previous):
        return ToolCallError("duplicate_call", {"video": video, "frames": list(frames),
                                                "total": total})
    return request


def _is_int(value: Any) -> bool:
    """JSON integers, and floats with an integral value (``40.0``); never bools."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer()
                                      and abs(value) < 2 ** 53)
