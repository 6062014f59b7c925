"""Requests to the served judge checked without Ray or a web server: JSON and multipart bodies,
media-root paths (hypothesis: never a path outside the root, never an unexpected exception),
options, prompts, the decode check; trace summaries and the trace page store."""
import json
import os
import time

import pytest
from data_helpers import write_tiny_mp4
from hypothesis import given
from hypothesis import strategies as st
from urllib3 import encode_multipart_formdata

from vrt_ray.serve_requests import (Limits, MultipartReader, Options, RequestError,
                                    check_videos, media_path, parse_form, parse_json_body,
                                    parse_options)
from vrt_ray.serve_results import TracePages, trace_summary
from vrt_ray.trajectory import Trajectory


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A media root with two videos, a text file named .mp4, a link inside and a link out."""
    base = tmp_path_factory.mktemp("media")
    root = base / "root"
    write_tiny_mp4(root / "a.mp4")
    write_tiny_mp4(root / "sub" / "b.mp4")
    (root / "notes.mp4").write_text("not a video")
    write_tiny_mp4(base / "outside.mp4")
    (root / "inner_link.mp4").symlink_to(root / "a.mp4")
    (root / "escape.mp4").symlink_to(base / "outside.mp4")
    (root / "escape_dir").symlink_to(base)
    return root


def limits(root, **kw):
    values = dict(media_root=root, max_video_bytes=2**20, max_prompt_chars=50, max_turns=3)
    return Limits(**{**values, **kw})


def body(**fields):
    data = {"prompt": "a red ball", "video_a": "a.mp4", "video_b": "sub/b.mp4", **fields}
    return json.dumps({k: v for k, v in data.items() if v is not ...}).encode()


def refused(status, fragment, call, *args):
    with pytest.raises(RequestError) as caught:
        call(*args)
    assert caught.value.status == status
    assert fragment in str(caught.value)
    return str(caught.value)


def test_a_json_request_names_videos_under_the_media_root(media):
    request = parse_json_body(body(options={"temperature": 0.5, "max_turns": 2}), limits(media))
    assert request.prompt == "a red ball"
    assert request.videos == {"A": str(media.resolve() / "a.mp4"),
                              "B": str(media.resolve() / "sub" / "b.mp4")}
    assert request.options == Options(0.5, 2)
    checked = check_videos(request, "pyav")
    assert checked.num_frames == {"A": 2, "B": 2} and checked.videos == request.videos
    assert parse_json_body(body(), limits(media)).options == Options(0.0, None)


@pytest.mark.parametrize("raw, status, fragment", [
    (b"{not json", 400, "malformed JSON"),
    (b"\xff\xfe", 400, "malformed JSON"),
    (b"[1, 2]", 400, "must be a JSON object, got list"),
    (body(video_b=...), 400, "missing field(s) in the JSON body: video_b"),
    (body(prompt=..., video_a=...), 400, "missing field(s) in the JSON body: prompt, video_a"),
    (body(extra=1), 400, "unknown field(s) in the JSON body: extra"),
    (body(prompt=5), 400, "prompt: must be a string, got int"),
    (body(prompt="  \n"), 400, "prompt: is empty"),
    (body(prompt="x" * 51), 400, "prompt: 51 characters, over the limit of 50"),
    (body(options=[1]), 400, "options: must be a JSON object, got list"),
    (body(options={"beam": 4}), 400, "options: unknown option(s) 'beam'; known: temperature"),
    (body(options={"temperature": "hot"}), 400, "options.temperature: must be a number"),
    (body(options={"temperature": True}), 400, "options.temperature"),
    (body(options={"temperature": 2.5}), 400, "options.temperature"),
    (body(options={"max_turns": 4}), 400, "options.max_turns: must be an integer from 1 to 3"),
    (body(options={"max_turns": 1.0}), 400, "options.max_turns"),
    (body(video_a=None), 400, "video_a: must be a path (string) under the media root, got null"),
    (body(video_a=""), 400, "video_a: must be a non-empty path"),
    (body(video_b="sub/../a.mp4"), 403, "video_b: '..' is not allowed"),
    (body(video_a="escape.mp4"), 403, "video_a: 'escape.mp4' is outside the media root"),
    (body(video_a="escape_dir/outside.mp4"), 403, "outside the media root"),
    (body(video_a="/etc/hostname"), 403, "outside the media root"),
    (body(video_a="gone.mp4"), 404, "video_a: no such file under the media root: 'gone.mp4'"),
    (body(video_a="sub"), 404, "no such file"),
])
def test_bad_json_requests_are_refused_with_their_status(media, raw, status, fragment):
    refused(status, fragment, parse_json_body, raw, limits(media))


def test_size_limit_and_decode_check(media):
    small = limits(media, max_video_bytes=100)
    size = (media / "a.mp4").stat().st_size
    refused(413, f"video_a: {size} bytes, over the limit of 100 bytes", parse_json_body,
            body(), small)
    request = parse_json_body(body(video_b="notes.mp4"), limits(media))
    refused(422, "video_b: not a readable video (", check_videos, request, "pyav")
    absolute = parse_json_body(body(video_a=str(media / "inner_link.mp4")), limits(media))
    assert absolute.videos["A"] == str(media.resolve() / "a.mp4")  # inside, link resolved


SEGMENTS = st.sampled_from(["a.mp4", "sub", "b.mp4", "..", ".", "", "escape_dir", "escape.mp4",
                            "inner_link.mp4", "outside.mp4", "notes.mp4", "x" * 300, "\x00"])


@given(st.one_of(st.lists(SEGMENTS, max_size=5).map("/".join),
                 st.lists(SEGMENTS, max_size=4).map(lambda s: "/" + "/".join(s)), st.text()))
def test_a_media_path_is_a_file_inside_the_root_or_a_clear_refusal(media, name):
    try:
        path = media_path(name, media)
    except RequestError as exc:
        assert exc.status in (400, 403, 404) and str(exc).startswith("video: ")
        return
    assert path.is_file() and path.is_relative_to(media.resolve())
    assert ".." not in name.split("/") and path == path.resolve()


def test_options_defaults_and_bounds():
    lim = limits(".")
    assert parse_options(None, lim) == Options()
    assert parse_options({}, lim) == Options(0.0, None)
    assert parse_options({"temperature": 1, "max_turns": 3}, lim) == Options(1.0, 3)
    refused(400, "options.temperature", parse_options, {"temperature": float("nan")}, lim)
    refused(400, "options.max_turns", parse_options, {"max_turns": 0}, lim)


def form(fields):
    return encode_multipart_formdata(fields, boundary="b0undary")


def read_form(tmp_path, raw, content_type, chunk=7, **kw):
    reader = MultipartReader(content_type, tmp_path / "up", limits(tmp_path, **kw))
    for i in range(0, len(raw), chunk):
        reader.feed(raw[i:i + chunk])
    return reader.close()


def test_a_multipart_request_streams_its_uploads_to_disk(tmp_path, media):
    video = (media / "a.mp4").read_bytes()
    raw, kind = form([("prompt", "a red ball"), ("options", '{"max_turns": 1}'),
                      ("video_a", ("clip.MP4", video, "video/mp4")),
                      ("video_b", ("../../evil name.mkv", video, "video/mp4"))])
    fields, files = read_form(tmp_path, raw, kind)
    assert fields == {"prompt": "a red ball", "options": '{"max_turns": 1}'}
    assert files == {"video_a": tmp_path / "up" / "video_a.MP4",
                     "video_b": tmp_path / "up" / "video_b.mkv"}
    assert files["video_b"].read_bytes() == video
    request = parse_form(fields, files, limits(tmp_path))
    assert request.options == Options(0.0, 1)
    assert check_videos(request, "pyav").num_frames == {"A": 2, "B": 2}


def test_an_upload_over_the_limit_stops_at_the_limit(tmp_path):
    raw, kind = form([("prompt", "p"), ("video_a", ("a.mp4", b"\0" * 5000, "video/mp4"))])
    reader = MultipartReader(kind, tmp_path / "up", limits(tmp_path, max_video_bytes=1000))
    fed = 0
    with pytest.raises(RequestError) as caught:
        for i in range(0, len(raw), 100):
            reader.feed(raw[i:i + 100])
            fed = i + 100
    assert caught.value.status == 413 and "video_a: upload over the limit" in str(caught.value)
    assert fed < 1300 and (tmp_path / "up" / "video_a.mp4").stat().st_size <= 1000


@pytest.mark.parametrize("parts, status, fragment", [
    ([("colour", "red")], 400, "unknown field in the form: 'colour'"),
    ([("prompt", "a"), ("prompt", "b")], 400, "field 'prompt' appears twice"),
    ([("prompt", ("p.txt", b"a red ball", "text/plain"))], 400, "prompt: must be a text field"),
    ([("prompt", "x" * 5000)], 413, "prompt: field over 4296 bytes"),
])
def test_bad_forms_are_refused_while_reading(tmp_path, parts, status, fragment):
    raw, kind = form(parts)
    refused(status, fragment, read_form, tmp_path, raw, kind)


def test_bad_forms_are_refused_after_reading(tmp_path):
    raw, kind = form([("prompt", "p"), ("video_a", "a.mp4"),
                      ("video_b", ("b.mp4", b"x", "video/mp4"))])
    refused(400, "video_a: must be an uploaded file", parse_form,
            *read_form(tmp_path, raw, kind), limits(tmp_path))
    raw, kind = form([("prompt", "p"), ("options", "{oops"),
                      ("video_a", ("a.mp4", b"x", "video/mp4")),
                      ("video_b", ("b.mp4", b"x", "video/mp4"))])
    refused(400, "options: malformed JSON", parse_form, *read_form(tmp_path, raw, kind),
            limits(tmp_path))
    refused(400, "missing field(s) in the form: video_a, video_b", parse_form,
            {"prompt": "p"}, {}, limits(tmp_path))
    refused(400, "ends before its closing boundary", read_form, tmp_path, raw[:-20], kind)
    refused(400, "without a boundary", read_form, tmp_path, raw, "multipart/form-data")
    refused(400, "malformed multipart body", read_form, tmp_path, b"--b0undary\r\nbad\x00",
            kind)


def test_trace_summary_lists_turns_calls_and_frames():
    frame = lambda v, i: {"type": "image", "ref": {"video": v, "index": i}}  # noqa: E731
    call = '<tool_call>{"name": "select_frames", "arguments": {"video": "B"}}</tool_call>'
    messages = [
        {"role": "system", "kind": "system", "content": "judge"},
        {"role": "user", "kind": "initial",
         "content": [{"type": "text", "text": "Video A"}, frame("A", 1), frame("B", 1)]},
        {"role": "assistant", "kind": "assistant", "content": "look " + call},
        {"role": "tool", "kind": "tool_result",
         "content": [{"type": "text", "text": "frames"}, frame("B", 4)]},
        {"role": "assistant", "kind": "assistant", "content": "no call"},
        {"role": "tool", "kind": "error", "content": "call the tool"},
    ]
    t = Trajectory("p", 0, 0, "vrt", {}, {}, messages=messages, valid_calls=1,
                   invalid_calls=1, frames_fetched=1)
    assert trace_summary(t) == {
        "initial_frames": [{"video": "A", "index": 1}, {"video": "B", "index": 1}],
        "turns": [{"text": "look " + call, "reply": "frames",
                   "frames": [{"video": "B", "index": 4}],
                   "tool_call": '{"name": "select_frames", "arguments": {"video": "B"}}'},
                  {"text": "no call", "tool_call": None, "reply": "call the tool", "frames": []}],
        "tool_calls": {"valid": 1, "invalid": 1, "failed": 0}, "frames_fetched": 1}


def test_trace_pages_keep_the_newest_and_refuse_unknown_ids(tmp_path):
    pages = TracePages(tmp_path / "traces", keep=2)
    ids = [f"{i:032x}" for i in range(3)]
    for i, trace_id in enumerate(ids):
        path = pages.save(trace_id, f"<p>{i}</p>")
        os.utime(path, ns=(time.time_ns(), 10**18 + i))  # distinct, ordered modification times
    assert pages.load(ids[2]) == "<p>2</p>" and pages.load(ids[1]) == "<p>1</p>"
    refused(404, f"no trace '{ids[0]}'", pages.load, ids[0])
    refused(404, "no trace '../traces/x'", pages.load, "../traces/x")
    assert sorted(p.name for p in (tmp_path / "traces").iterdir()) == [
        f"{ids[1]}.html", f"{ids[2]}.html"]
