"""Requests to the served judge (`POST /v1/judge`), checked before any model work.

A request is a prompt, two videos and options, sent as JSON (videos named by their path under
the media root) or as multipart/form-data (videos uploaded). Everything wrong with one becomes a
`RequestError` carrying the HTTP status and a one-line message; nothing here needs Ray or a web
framework. Statuses: 400 a malformed request (bad JSON or form, missing or unknown fields, wrong
types, bad options, empty or too long prompt), 403 a path outside the media root, 404 a video
not found, 413 a video or field over its size limit, 415 a body neither JSON nor multipart, 422
a file that is not a readable video.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Dict, Mapping, Optional, Tuple

from vrt_ray.errors import VrtError
from vrt_ray.video import open_video

VIDEO_FIELDS = {"video_a": "A", "video_b": "B"}
FIELDS = ("prompt", "video_a", "video_b", "options")
OPTIONS = ("temperature", "max_turns")
MAX_TEMPERATURE = 2.0
MAX_OPTIONS_BYTES = 4096


class RequestError(VrtError):
    """A request the judge refuses: `status` is the HTTP status, the message says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    media_root: Path
    max_video_bytes: int
    max_prompt_chars: int
    max_turns: int  # the config's turn budget: the most a request may ask for
    backend: str = "pyav"

    @classmethod
    def from_config(cls, cfg) -> "Limits":
        return cls(Path(cfg.serve.media_root), cfg.serve.max_video_mb * 2**20,
                   cfg.serve.max_prompt_chars, cfg.protocol.max_turns, cfg.video.backend)

    @property
    def max_text_bytes(self) -> int:
        """The largest text body or form field: a prompt at the limit, 4 bytes a character,
        plus the options."""
        return 4 * self.max_prompt_chars + MAX_OPTIONS_BYTES


@dataclass(frozen=True)
class Options:
    temperature: float = 0.0  # 0: greedy, the offline evaluation's setting
    max_turns: Optional[int] = None  # None: the config's protocol.max_turns


@dataclass(frozen=True)
class JudgeRequest:
    prompt: str
    videos: Dict[str, str]  # A / B -> a checked path
    num_frames: Dict[str, int] = field(default_factory=dict)  # filled by `check_videos`
    options: Options = Options()


def parse_json_body(body: bytes, limits: Limits) -> JudgeRequest:
    """A JSON request `{prompt, video_a, video_b, options}` with media-root paths; the videos
    are checked to be there, but not yet decoded (`check_videos`)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestError(400, f"the body must be a JSON object, got {type(data).__name__}")
    _check_fields(data, "JSON body")
    prompt = check_prompt(data["prompt"], limits)
    options = parse_options(data.get("options"), limits)
    videos = {}
    for name, video in VIDEO_FIELDS.items():
        path = media_path(data[name], limits.media_root, name)
        check_size(path, limits, name)
        videos[video] = str(path)
    return JudgeRequest(prompt, videos, options=options)


def parse_form(fields: Mapping[str, str], files: Mapping[str, Path],
               limits: Limits) -> JudgeRequest:
    """A multipart request: `prompt` and `options` (a JSON object) as text fields, `video_a`
    and `video_b` as uploaded files (see `MultipartReader`)."""
    _check_fields({**fields, **files}, "form")
    for name in VIDEO_FIELDS:
        if name not in files:
            raise RequestError(400, f"{name}: must be an uploaded file in a multipart request "
                                    "(send JSON to name a file under the media root)")
    options = fields.get("options")
    if options is not None:
        try:
            options = json.loads(options)
        except ValueError as exc:
            raise RequestError(400, f"options: malformed JSON: {exc}") from None
    return JudgeRequest(check_prompt(fields.get("prompt"), limits),
                        {VIDEO_FIELDS[name]: str(path) for name, path in files.items()},
                        options=parse_options(options, limits))


def _check_fields(data: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise RequestError(400, f"unknown field(s) in the {where}: {', '.join(unknown)}; "
                                f"known: {', '.join(FIELDS)}")
    missing = [name for name in FIELDS[:3] if name not in data]
    if missing:
        raise RequestError(400, f"missing field(s) in the {where}: {', '.join(missing)}")


def check_prompt(prompt: Any, limits: Limits) -> str:
    if not isinstance(prompt, str):
        raise RequestError(400, f"prompt: must be a string, got {_type(prompt)}")
    if not prompt.strip():
        raise RequestError(400, "prompt: is empty")
    if len(prompt) > limits.max_prompt_chars:
        raise RequestError(400, f"prompt: {len(prompt)} characters, over the limit of "
                                f"{limits.max_prompt_chars}")
    return prompt


def parse_options(options: Any, limits: Limits) -> Options:
    """`{"temperature": 0..2, "max_turns": 1..protocol.max_turns}`, both optional."""
    if options is None:
        return Options()
    if not isinstance(options, dict):
        raise RequestError(400, f"options: must be a JSON object, got {_type(options)}")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise RequestError(400, f"options: unknown option(s) {', '.join(map(repr, unknown))}; "
                                f"known: {', '.join(OPTIONS)}")
    temperature = options.get("temperature", 0.0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not math.isfinite(temperature) or not 0 <= temperature <= MAX_TEMPERATURE:
        raise RequestError(400, f"options.temperature: must be a number from 0 to "
                                f"{MAX_TEMPERATURE}, got {temperature!r}")
    max_turns = options.get("max_turns")
    if max_turns is not None and (isinstance(max_turns, bool) or not isinstance(max_turns, int)
                                  or not 1 <= max_turns <= limits.max_turns):
        raise RequestError(400, f"options.max_turns: must be an integer from 1 to "
                                f"{limits.max_turns}, got {max_turns!r}")
    return Options(float(temperature), max_turns)


def media_path(name: Any, root: Path, field_name: str = "video") -> Path:
    """The file `name` names under `root`, resolved (symlinks followed) and checked to stay
    inside it: relative to `root`, or absolute and inside it; never through `..`."""
    if not isinstance(name, str):
        raise RequestError(400, f"{field_name}: must be a path (string) under the media root, "
                                f"got {_type(name)}")
    if not name or "\x00" in name:
        raise RequestError(400, f"{field_name}: must be a non-empty path without NUL bytes")
    if ".." in PurePath(name).parts:
        raise RequestError(403, f"{field_name}: '..' is not allowed in a media path: {name!r}")
    try:
        name.encode("utf-8")
        base = root.resolve()
        path = (root / name).resolve()  # an absolute `name` replaces `root`
        inside = path.is_relative_to(base)
        found = inside and path.is_file()
    except (OSError, RuntimeError, UnicodeEncodeError) as exc:  # too long, a symlink loop
        raise RequestError(400, f"{field_name}: not a usable path: {exc}") from None
    if not inside:
        raise RequestError(403, f"{field_name}: {name!r} is outside the media root")
    if not found:
        raise RequestError(404, f"{field_name}: no such file under the media root: {name!r}")
    return path


def check_size(path: Path, limits: Limits, field_name: str) -> None:
    size = path.stat().st_size
    if size > limits.max_video_bytes:
        raise RequestError(413, f"{field_name}: {size} bytes, over the limit of "
                                f"{limits.max_video_bytes} bytes")


def check_videos(request: JudgeRequest, backend: str) -> JudgeRequest:
    """The request with each video's frame count, once its first frame decoded."""
    counts = {}
    for name, video in VIDEO_FIELDS.items():
        try:
            with open_video(request.videos[video], backend=backend) as reader:
                counts[video] = reader.info.num_frames
                if counts[video] < 1:
                    raise ValueError("no frames")
                reader.read([1])
        except Exception as exc:  # whatever the decoder says: not a video we can judge
            reason = " ".join(str(exc).split())[:200]
            raise RequestError(422, f"{name}: not a readable video ({reason})") from None
    return JudgeRequest(request.prompt, request.videos, counts, request.options)


class MultipartReader:
    """A multipart/form-data body read chunk by chunk (`feed`, then `close`): text fields kept
    in memory up to `Limits.max_text_bytes` each, files written into `folder` and counted as
    they arrive, so an upload over the limit is refused at the limit, not after."""

    def __init__(self, content_type: str, folder: Path, limits: Limits):
        from python_multipart.multipart import MultipartParser, parse_options_header

        self._parse_header = parse_options_header
        _, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if not boundary:
            raise RequestError(400, "multipart body without a boundary in its Content-Type")
        self.folder, self.limits = folder, limits
        self.fields: Dict[str, str] = {}
        self.files: Dict[str, Path] = {}
        self._headers: Dict[bytes, bytes] = {}
        self._header = [b"", b""]
        self._part: Optional[Tuple[str, Any]] = None  # (field name, open file or bytearray)
        self._size = 0
        self._ended = False
        callbacks = {"on_header_field": self._on_header_field,
                     "on_header_value": self._on_header_value,
                     "on_header_end": self._on_header_end,
                     "on_headers_finished": self._on_headers_finished,
                     "on_part_data": self._on_part_data, "on_part_end": self._on_part_end,
                     "on_end": self._on_end}
        self._parser = MultipartParser(boundary, callbacks)

    def feed(self, chunk: bytes) -> None:
        from python_multipart.exceptions import FormParserError

        try:
            self._parser.write(chunk)
        except FormParserError as exc:
            self._abort()
            raise RequestError(400, f"malformed multipart body: {exc}") from None
        except RequestError:
            self._abort()
            raise

    def close(self) -> Tuple[Dict[str, str], Dict[str, Path]]:
        """(text fields, uploaded files) once the whole body was read."""
        if not self._ended:
            self._abort()
            raise RequestError(400, "malformed multipart body: it ends before its closing "
                                    "boundary")
        return self.fields, self.files

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header[0] += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header[1] += data[start:end]

    def _on_header_end(self) -> None:
        self._headers[self._header[0].lower()] = self._header[1]
        self._header = [b"", b""]

    def _on_headers_finished(self) -> None:
        _, params = self._parse_header(self._headers.pop(b"content-disposition", b""))
        self._headers = {}
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if name not in FIELDS:
            raise RequestError(400, f"unknown field in the form: {name!r}; known: "
                                    f"{', '.join(FIELDS)}")
        if name in self.fields or name in self.files:
            raise RequestError(400, f"field {name!r} appears twice in the form")
        self._size = 0
        if b"filename" in params:
            if name not in VIDEO_FIELDS:
                raise RequestError(400, f"{name}: must be a text field, not a file")
            self.folder.mkdir(parents=True, exist_ok=True)
            suffix = "".join(c for c in PurePath(params[b"filename"].decode(
                "utf-8", "replace")).suffix if c.isalnum() or c == ".")[:8]
            self.files[name] = self.folder / f"{name}{suffix}"
            self._part = (name, open(self.files[name], "wb"))
        else:
            self._part = (name, bytearray())

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        name, sink = self._part
        self._size += end - start
        if isinstance(sink, bytearray):
            if self._size > self.limits.max_text_bytes:
                raise RequestError(413, f"{name}: field over {self.limits.max_text_bytes} bytes")
            sink += data[start:end]
        else:
            if self._size > self.limits.max_video_bytes:
                raise RequestError(413, f"{name}: upload over the limit of "
                                        f"{self.limits.max_video_bytes} bytes")
            sink.write(data[start:end])

    def _on_part_end(self) -> None:
        name, sink = self._part
        if isinstance(sink, bytearray):
            try:
                self.fields[name] = sink.decode("utf-8")
            except UnicodeDecodeError:
                raise RequestError(400, f"{name}: not UTF-8 text") from None
        else:
            sink.close()
        self._part = None

    def _on_end(self) -> None:
        self._ended = True

    def _abort(self) -> None:
        if self._part and not isinstance(self._part[1], bytearray):
            self._part[1].close()
        self._part = None


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__
