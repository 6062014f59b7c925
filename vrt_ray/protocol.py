"""The thinking-with-image protocol (DESIGN.md §6): one episode's conversation, tool execution,
visual memory window and budgets, with all wording taken from a `Preset`.

Messages are plain dicts in the chat-template format whose image parts carry frame references
(`{"type": "image", "ref": {"video": "A", "index": 44}}`), never pixels; `render` turns the
windowed message list into template-ready messages plus the ordered list of visuals to decode.
The window is applied to the message list, never to rendered text, so the engine's prompt, the
learner's sample and a served request are built by the same code.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from vrt_ray.answers import ParsedAnswer, has_answer, parse_answer
from vrt_ray.preset import Preset
from vrt_ray.tool_calls import (FrameRequest, ToolCallError, extract_call_text, parse_tool_call)
from vrt_ray.video import uniform_indices

POOL = "pool"


@dataclass(frozen=True)
class FrameRef:
    """Frame `index` (1-based, of the video file) of video `video` (`A` or `B`)."""

    video: str
    index: int

    def to_dict(self) -> Dict[str, Union[str, int]]:
        return {"video": self.video, "index": self.index}


@dataclass(frozen=True)
class EpisodeInput:
    """What an episode judges: the prompt and the two videos with their frame counts."""

    pair_id: str
    prompt: str
    videos: Mapping[str, str]  # A / B -> path
    num_frames: Mapping[str, int]  # A / B -> frame count


@dataclass(frozen=True)
class Budgets:
    dimensions: Tuple[str, ...] = ("TA", "VQ", "MQ")
    initial_frames: int = 4
    pin_initial: bool = True
    memory_window: int = 2
    max_turns: int = 6  # assistant turns without an answer (tool calls, valid or not)
    max_frames_per_call: int = 8

    @classmethod
    def from_config(cls, protocol_cfg) -> "Budgets":
        return cls(dimensions=tuple(protocol_cfg.dimensions),
                   initial_frames=int(protocol_cfg.initial_frames),
                   pin_initial=bool(protocol_cfg.pin_initial),
                   memory_window=int(protocol_cfg.memory_window),
                   max_turns=int(protocol_cfg.max_turns),
                   max_frames_per_call=int(protocol_cfg.max_frames_per_call))


# A visual the engine must decode, in text order: one image, or one video item of frames.
Visual = Tuple[str, Tuple[FrameRef, ...]]
FetchFrames = Callable[[Sequence[FrameRef]], None]  # raises VrtError when frames cannot be read


# outcomes that are not invalid calls (Episode.invalid_calls counts the rest)
NOT_INVALID = frozenset({"valid", "unreadable_video", "over_budget", "answer",
                         "incomplete_answer"})


@dataclass
class Episode:
    """One judging conversation. Feed it each assistant turn with `step` until `done`."""

    inp: EpisodeInput
    preset: Preset
    budgets: Budgets
    messages: List[dict] = field(default_factory=list)
    requests: List[FrameRequest] = field(default_factory=list)
    frames_fetched: int = 0
    # what each assistant turn came to: valid (a call that fetched), the tool-call error's kind
    # (bad_json, out_of_range, ...), unreadable_video, no_call, over_budget, answer or
    # incomplete_answer; the call counts below are read from it
    outcomes: List[str] = field(default_factory=list)
    done: bool = False
    answer: Optional[ParsedAnswer] = None
    end_reason: str = ""
    _budget_warned: bool = False

    def __post_init__(self):
        if not self.messages:
            self.messages = [{"role": "system", "kind": "system", "content": self._system_text()},
                             {"role": "user", "kind": "initial", "content": self._initial_content()}]

    @property
    def valid_calls(self) -> int:
        return self.outcomes.count("valid")

    @property
    def tool_failures(self) -> int:
        """Valid calls whose frames could not be decoded."""
        return self.outcomes.count("unreadable_video")

    @property
    def turns_over_budget(self) -> int:
        return self.outcomes.count("over_budget")

    @property
    def invalid_calls(self) -> int:
        """Turns with a broken call or none (an error's kind, or `no_call`)."""
        return sum(o not in NOT_INVALID for o in self.outcomes)

    @property
    def actions(self) -> int:
        """Assistant turns so far that did not answer: what the turn budget counts."""
        return self.valid_calls + self.invalid_calls + self.tool_failures

    # ---- what the engine sees -------------------------------------------------------------
    def context(self) -> List[dict]:
        """The message list after the visual memory window, as the engine sees it now."""
        return apply_window(self.messages, self.preset, self.budgets.memory_window,
                            self.budgets.pin_initial)

    # ---- one assistant turn ---------------------------------------------------------------
    def step(self, text: str, fetch: FetchFrames) -> None:
        """Record the assistant's `text`; answer a tool call, an error or end the episode.

        `fetch` decodes the frames of a valid call (warming the frame cache); a video that
        cannot be read becomes an `unreadable_video` tool message, never an exception.
        """
        if self.done:
            raise RuntimeError("step() on a finished episode")
        call_text = extract_call_text(text, self.preset.tool_open, self.preset.tool_close)
        if call_text is not None:  # keep the turn up to its first call, as the model meant it
            end = text.find(self.preset.tool_close, text.find(self.preset.tool_open))
            text = text if end < 0 else text[:end + len(self.preset.tool_close)]
        self.messages.append({"role": "assistant", "kind": "assistant", "content": text})
        if has_answer(text, self.preset.answer) and (call_text is None or _answer_first(
                text, self.preset)):
            answer = parse_answer(text, self.preset.answer, self.budgets.dimensions)
            self.outcomes.append("answer" if answer.complete else "incomplete_answer")
            return self._finish("answer", answer)
        if self.actions >= self.budgets.max_turns:
            self.outcomes.append("over_budget")
            if self._budget_warned or not self.preset.budget_exhausted:
                return self._finish("budget")
            self._budget_warned = True
            return self._reply_text(self.preset.budget_exhausted, kind="budget")
        if call_text is None:
            self.outcomes.append("no_call")
            if self.preset.on_no_action == "end" or not self.preset.no_action:
                return self._finish("no_action")
            self._reply_text(self.preset.no_action, kind="error")
        else:
            self._execute(call_text, fetch)
        if self.actions >= self.budgets.max_turns \
                and self.preset.budget_exhausted and not self._budget_warned:
            self._budget_warned = True
            self.messages[-1]["content"].append(
                {"type": "text", "text": "\n" + self.preset.budget_exhausted})

    def _execute(self, call_text: str, fetch: FetchFrames) -> None:
        result = parse_tool_call(call_text, self._call_space(), self.budgets.max_frames_per_call,
                                 self.requests if self.preset.reject_duplicate_calls else (),
                                 video_required=self.preset.video_required)
        if isinstance(result, ToolCallError):
            self.outcomes.append(result.kind)
            return self._reply_text(self._error_text(result.kind, result.details), kind="error")
        refs = self._resolve(result)
        try:
            fetch(refs)
        except Exception as exc:  # a video that fails to decode is the tool's failure
            self.outcomes.append("unreadable_video")
            reason = " ".join(str(exc).split())[:300]
            details = {"video": result.video, "reason": reason}
            return self._reply_text(self._error_text("unreadable_video", details), kind="error")
        self.requests.append(result)
        self.outcomes.append("valid")
        self.frames_fetched += len(refs)
        self.messages.append({"role": self.preset.tool_result_role, "kind": "tool_result",
                              "content": self._frames_content(refs, self.preset.tool_result_intro,
                                                              video=result.video)})

    def _finish(self, reason: str, answer: Optional[ParsedAnswer] = None) -> None:
        self.done, self.end_reason, self.answer = True, reason, answer

    def end_for_budget(self, reason: str) -> None:
        """End the episode from outside (token budget hit, context full)."""
        if not self.done:
            self._finish(reason)

    # ---- text from the preset -------------------------------------------------------------
    def _fill(self, template: str, **extra) -> str:
        b, p = self.budgets, self.preset
        values = dict(
            prompt=self.inp.prompt, frames_a=self.inp.num_frames["A"],
            frames_b=self.inp.num_frames["B"], initial_frames=b.initial_frames,
            initial_total=len(self._initial_refs()), max_frames_per_call=b.max_frames_per_call,
            max_turns=b.max_turns, memory_window=b.memory_window,
            pool_size=2 * p.pool_per_video, dimension_lines=self._dimension_lines(),
            tool_schema=json.dumps(_tool_schema(p, b)), answer_example=self._answer_example())
        values.update(extra)
        return template.format(**values)

    def _system_text(self) -> str:
        return self._fill(self.preset.system)

    def _dimension_lines(self) -> str:
        return "\n".join(self.preset.dimension_line.format(
            number=i + 1, dim=d, description=self.preset.dimension_descriptions[d])
            for i, d in enumerate(self.budgets.dimensions))

    def _answer_example(self) -> str:
        keys = self.preset.answer.keys
        return json.dumps({keys[d]: "A" for d in (*self.budgets.dimensions, "overall")})

    def _error_text(self, kind: str, details: Mapping) -> str:
        return self._fill(self.preset.errors[kind], **details)

    def _reply_text(self, text: str, kind: str) -> None:
        self.messages.append({"role": self.preset.tool_result_role, "kind": kind,
                              "content": [{"type": "text", "text": text}]})

    # ---- frames ---------------------------------------------------------------------------
    def _call_space(self) -> Dict[str, int]:
        if self.preset.frame_space == "pool":
            return {POOL: 2 * self.preset.pool_per_video}
        return dict(self.inp.num_frames)

    def _pool(self, video: str) -> List[int]:
        return uniform_indices(self.inp.num_frames[video], self.preset.pool_per_video)

    def _resolve(self, request: FrameRequest) -> List[FrameRef]:
        """File frames of a request; pool indices map to (video, frame) through each pool."""
        if request.video != POOL:
            return [FrameRef(request.video, i) for i in request.frames]
        per = self.preset.pool_per_video
        pools = {"A": self._pool("A"), "B": self._pool("B")}
        refs = []
        for p in request.frames:
            video, q = ("A", p) if p <= per else ("B", p - per)
            pool = pools[video]
            refs.append(FrameRef(video, pool[min(q, len(pool)) - 1]))
        return refs

    def _initial_refs(self) -> List[FrameRef]:
        if self.preset.frame_space == "pool":
            size = 2 * self.preset.pool_per_video
            step = max(1, size // (2 * self.budgets.initial_frames))
            picks = list(range(1, size + 1, step))[:2 * self.budgets.initial_frames]
            return self._resolve(FrameRequest(POOL, tuple(picks)))
        return [FrameRef(v, i) for v in ("A", "B")
                for i in uniform_indices(self.inp.num_frames[v], self.budgets.initial_frames)]

    def _initial_content(self) -> List[dict]:
        text = {"type": "text", "text": self._fill(self.preset.user)}
        refs = self._initial_refs()
        if self.preset.initial_view == "pool_video":
            view = [{"type": "video", "refs": [r.to_dict() for r in refs]}]
        else:
            view = []
            for video in ("A", "B"):
                mine = [r for r in refs if r.video == video]
                intro = self._fill(self.preset.initial_video_intro, video=video, count=len(mine),
                                   total=self.inp.num_frames[video])
                view += self._frames_content(mine, "\n" + intro if intro else "", video=video)
        return view + [text] if self.preset.initial_view_first else [text] + view

    def _frames_content(self, refs: Sequence[FrameRef], intro: str, video: str) -> List[dict]:
        content = [{"type": "text", "text": self._fill(intro, video=video, count=len(refs))}] \
            if intro else []
        for ref in refs:
            label = self._fill(self.preset.frame_label, video=ref.video, index=ref.index,
                               total=self.inp.num_frames[ref.video])
            if label:
                content.append({"type": "text", "text": f"\n{label}", "label_of": ref.to_dict()})
            content.append({"type": "image", "ref": ref.to_dict()})
        return content


def format_turn(preset: Preset, think: str, tool_call: Optional[Mapping] = None,
                answer: Optional[Mapping[str, str]] = None) -> str:
    """An assistant turn in the preset's syntax, from a protocol-neutral trace step: reasoning,
    then either a `select_frames` call ({"video", "target_frames"}) or the verdicts, in the
    order of the preset's answer keys (the system prompt's example, and the order the
    reasoning goes in), whatever the order of `answer` (traces.jsonl sorts its keys)."""
    text = f"<think>{think}</think>"
    if tool_call is not None:
        args = {"target_frames": list(tool_call["target_frames"])}
        if preset.frame_space == "per_video":
            args = {"video": tool_call["video"], **args}
        call = {"name": "select_frames", "arguments": args}
        return f"{text}{preset.tool_open}{json.dumps(call)}{preset.tool_close}"
    syntax = preset.answer
    order = list(syntax.keys)
    answer = {d: answer[d] for d in sorted(answer, key=order.index)}
    if syntax.style == "json":
        body = json.dumps({syntax.keys[d]: syntax.codes[v] for d, v in answer.items()})
    else:
        body = ", ".join(f"{syntax.keys[d]} = {syntax.codes[v]}" for d, v in answer.items())
    return f"{text}{syntax.open_tags[0]}{body}{syntax.close_tags[0]}"


def _answer_first(text: str, preset: Preset) -> bool:
    """Whether the answer in `text` comes before its first tool call (then the answer counts)."""
    lowered = text.lower()
    answer_at = min((i for i in (lowered.find(t.lower()) for t in preset.answer.open_tags)
                     if i >= 0), default=len(text))
    return answer_at < text.find(preset.tool_open)


def _tool_schema(preset: Preset, budgets: Budgets) -> dict:
    properties = {"target_frames": {
        "type": "array", "items": {"type": "integer"},
        "description": f"1-based frame numbers, at most {budgets.max_frames_per_call}"}}
    required = ["target_frames"]
    if preset.frame_space == "per_video":
        properties = {"video": {"type": "string", "enum": ["A", "B"]}, **properties}
        required = ["video"] + required
    return {"name": "select_frames", "description": "Bring frames of a video into view.",
            "parameters": {"type": "object", "properties": properties, "required": required}}


def apply_window(messages: Sequence[dict], preset: Preset, memory_window: int,
                 pin_initial: bool) -> List[dict]:
    """Keep the images of the last `memory_window` image-bearing tool results (and of the
    initial view when pinned); older ones lose their images and frame labels, which become one
    stub per message naming the frames (or nothing, when the preset's stub is empty)."""
    holders = [i for i, m in enumerate(messages) if _has_images(m)
               and (m["kind"] == "tool_result" or (m["kind"] == "initial" and not pin_initial))]
    keep = set(holders[-memory_window:])
    out = []
    for i, message in enumerate(messages):
        if i in holders and i not in keep:
            out.append(_drop_images(message, preset))
        else:
            out.append(message)
    return out


def _has_images(message: dict) -> bool:
    content = message.get("content")
    return isinstance(content, list) and any(p.get("type") in ("image", "video") for p in content)


def _drop_images(message: dict, preset: Preset) -> dict:
    content, dropped = [], []
    for part in message["content"]:
        if part.get("type") == "image":
            dropped.append(part["ref"])
        elif part.get("type") == "video":
            dropped.extend(part["refs"])
        elif "label_of" not in part:
            content.append(part)
    if preset.dropped_stub:
        for video in ("A", "B"):
            frames = [r["index"] for r in dropped if r["video"] == video]
            if frames:
                stub = preset.dropped_stub.format(video=video,
                                                  frames=", ".join(map(str, frames)))
                content.append({"type": "text", "text": f"\n{stub}", "stub": True})
    return {**message, "content": content, "dropped": dropped}


def render(messages: Sequence[dict]) -> Tuple[List[dict], List[Visual]]:
    """Template-ready messages (image/video placeholders) and the visuals in text order."""
    rendered, visuals = [], []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            rendered.append({"role": message["role"], "content": content})
            continue
        parts = []
        for part in content:
            if part["type"] == "image":
                parts.append({"type": "image"})
                visuals.append(("image", (FrameRef(**part["ref"]),)))
            elif part["type"] == "video":
                parts.append({"type": "video"})
                visuals.append(("video", tuple(FrameRef(**r) for r in part["refs"])))
            else:
                parts.append({"type": "text", "text": part["text"]})
        rendered.append({"role": message["role"], "content": parts})
    return rendered, visuals
