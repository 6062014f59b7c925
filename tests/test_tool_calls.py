"""select_frames call parsing: each malformed call gives its error kind; nothing raises."""
import json

import pytest
from hypothesis import given, strategies as st

from vrt_ray.tool_calls import (ERROR_KINDS, FrameRequest, ToolCallError, extract_call_text,
                                parse_tool_call)

VIDEOS = {"A": 120, "B": 48}


def call(video="A", frames=(40, 44, 48), name="select_frames"):
    return json.dumps({"name": name, "arguments": {"video": video, "target_frames": list(frames)}})


def test_valid_call():
    assert parse_tool_call(call(), VIDEOS, 8) == FrameRequest("A", (40, 44, 48))
    assert parse_tool_call(call("B", [48, 1, 1, 2.0]), VIDEOS, 8) == FrameRequest("B", (48, 1, 2))


def test_extract_first_call_and_unclosed_call():
    text = f"<think>look</think><tool_call>{call()}</tool_call> then <tool_call>x</tool_call>"
    assert extract_call_text(text) == call()
    assert extract_call_text("<tool_call>{\"name\": ") == "{\"name\": "
    assert extract_call_text("no call here <answer>{}</answer>") is None


@pytest.mark.parametrize("body,kind,detail", [
    ("{not json", "bad_json", {}),
    ("[1, 2]", "bad_json", {}),
    (call(name="crop_image"), "unknown_tool", {"name": "crop_image"}),
    (call(video="C"), "unknown_video", {"video": "C", "videos": ["A", "B"]}),
    (json.dumps({"name": "select_frames", "arguments": {"target_frames": [1]}}), "unknown_video", {}),
    (call(frames=["1", 2]), "bad_frames", {"total": 120}),
    (call(frames=[True]), "bad_frames", {}),
    (json.dumps({"name": "select_frames", "arguments": {"video": "A"}}), "bad_frames", {}),
    (call(frames=[]), "empty_frames", {}),
    (call(frames=range(1, 10)), "too_many_frames", {"count": 9, "max_frames": 8}),
    (call(frames=[0, 5, 121]), "out_of_range", {"frames": [0, 121], "total": 120}),
    (call("B", [49]), "out_of_range", {"frames": [49], "total": 48}),
])
def test_malformed_calls(body, kind, detail):
    result = parse_tool_call(body, VIDEOS, 8)
    assert isinstance(result, ToolCallError) and result.kind == kind
    assert result.kind in ERROR_KINDS
    for key, value in detail.items():
        assert result.details[key] == value


def test_duplicate_call_is_the_same_frame_set_of_the_same_video():
    previous = [FrameRequest("A", (40, 44, 48))]
    dup = parse_tool_call(call(frames=[48, 40, 44]), VIDEOS, 8, previous)
    assert isinstance(dup, ToolCallError) and dup.kind == "duplicate_call"
    assert parse_tool_call(call("B", [40, 44, 48]), VIDEOS, 8, previous) == FrameRequest("B", (40, 44, 48))
    assert parse_tool_call(call(frames=[40, 44]), VIDEOS, 8, previous) == FrameRequest("A", (40, 44))


def test_pool_preset_may_omit_the_video():
    body = json.dumps({"name": "select_frames", "arguments": {"target_frames": [12, 60]}})
    assert parse_tool_call(body, {"pool": 96}, 8, video_required=False) == FrameRequest("pool", (12, 60))


def test_arguments_as_json_string():
    body = json.dumps({"name": "select_frames",
                       "arguments": json.dumps({"video": "A", "target_frames": [3]})})
    assert parse_tool_call(body, VIDEOS, 8) == FrameRequest("A", (3,))


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                           lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
                           max_leaves=10)


@given(st.one_of(st.text(), json_values.map(json.dumps),
                 st.fixed_dictionaries({"name": st.just("select_frames"),
                                        "arguments": json_values}).map(json.dumps)))
def test_never_raises(body):
    result = parse_tool_call(body, VIDEOS, 8, [FrameRequest("A", (1,))])
    assert isinstance(result, (FrameRequest, ToolCallError))
    if isinstance(result, FrameRequest):
        call = json.loads(body)  # only a well-formed select_frames call gets this far
        asked = [int(f) for f in call["arguments"]["target_frames"]]
        assert len(result.frames) == len(dict.fromkeys(asked)) and len(result.frames) <= 8
        assert len(set(result.frames)) == len(result.frames)  # duplicates removed
        assert result.frames == tuple(dict.fromkeys(asked))
        assert all(1 <= f <= VIDEOS[result.video] for f in result.frames)
