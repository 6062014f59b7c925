"""The episode protocol: initial view, tool execution, errors, memory window, budgets, presets."""
import json

import pytest

from vrt_ray.errors import VrtError
from vrt_ray.preset import PresetError, load_preset
from vrt_ray.protocol import Budgets, Episode, EpisodeInput, FrameRef, apply_window, render
from vrt_ray.video import uniform_indices

INPUT = EpisodeInput("p1", "a red circle moving right", {"A": "a.mp4", "B": "b.mp4"},
                     {"A": 120, "B": 48})


def call(video="A", frames=(40, 44, 48)):
    args = {"video": video, "target_frames": list(frames)} if video else {"target_frames": list(frames)}
    return f'<think>look closer</think><tool_call>{json.dumps({"name": "select_frames", "arguments": args})}</tool_call>'


class Fetch:
    """Records what the episode asked to decode; fails for the videos in `broken`."""

    def __init__(self, broken=()):
        self.calls, self.broken = [], set(broken)

    def __call__(self, refs):
        if any(r.video in self.broken for r in refs):
            raise VrtError("b.mp4: corrupt stream (codec h264)")
        self.calls.append(list(refs))


def episode(preset="vrt", **budgets):
    return Episode(INPUT, load_preset(preset), Budgets(**budgets))


def texts(message):
    content = message["content"]
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)


def test_initial_view_is_labelled_uniform_frames_of_each_video():
    ep = episode(initial_frames=4)
    system, user = ep.messages
    assert "select_frames" in system["content"] and "TA, text alignment" in system["content"]
    assert "At most 8 frames per call and 6 calls" in system["content"]
    _, visuals = render(ep.context())
    assert [v[1][0] for v in visuals] == [FrameRef("A", i) for i in uniform_indices(120, 4)] + \
        [FrameRef("B", i) for i in uniform_indices(48, 4)]
    assert "Video A, frame 1 of 120" in texts(user) and "Video B, frame 48 of 48" in texts(user)
    assert texts(user).startswith("Prompt: a red circle moving right")


def test_valid_call_brings_labelled_frames_as_a_tool_turn():
    ep, fetch = episode(), Fetch()
    ep.step(call("A", [40, 44, 48]), fetch)
    assert fetch.calls == [[FrameRef("A", 40), FrameRef("A", 44), FrameRef("A", 48)]]
    result = ep.messages[-1]
    assert result["role"] == "tool" and result["kind"] == "tool_result"
    assert "Video A, frame 44 of 120" in texts(result)
    assert ep.valid_calls == 1 and ep.frames_fetched == 3 and not ep.done


def test_text_after_the_first_call_is_cut():
    ep = episode()
    ep.step(call() + " and then I imagine the frames show", Fetch())
    assert ep.messages[-2]["content"].endswith("</tool_call>")


@pytest.mark.parametrize("text,expected", [
    ("<tool_call>{oops</tool_call>", "not valid JSON"),
    ('<tool_call>{"name": "zoom", "arguments": {}}</tool_call>', "unknown tool 'zoom'"),
    (call("C"), "unknown video 'C'. Choose one of ['A', 'B']"),
    (call("B", [0, 49]), "frame(s) [0, 49] do not exist. Video B has frames 1 to 48"),
    (call("A", range(1, 10)), "9 frames asked for; at most 8 per call. Video A has frames 1 to 120"),
    (call("A", []), "target_frames is empty. Give between 1 and 8 frame numbers from 1 to 120"),
    ('<tool_call>{"name": "select_frames", "arguments": {"video": "A", "target_frames": "1-5"}}</tool_call>',
     "integers from 1 to 120"),
])
def test_malformed_call_becomes_a_tool_message_and_the_episode_goes_on(text, expected):
    ep, fetch = episode(), Fetch()
    ep.step(text, fetch)
    assert not ep.done and ep.invalid_calls == 1 and fetch.calls == []
    assert ep.messages[-1]["role"] == "tool" and expected in texts(ep.messages[-1])


def test_duplicate_call_and_unreadable_video():
    ep = episode()
    ep.step(call("A", [5, 6]), Fetch())
    ep.step(call("A", [6, 5]), Fetch())
    assert "already looked at frames [6, 5] of video A" in texts(ep.messages[-1])
    ep.step(call("B", [3]), Fetch(broken={"B"}))
    assert "video B could not be read (b.mp4: corrupt stream (codec h264))" in texts(ep.messages[-1])
    assert ep.valid_calls == 1 and not ep.done


def test_no_action_is_answered_then_the_answer_ends_the_episode():
    ep = episode()
    ep.step("<think>hmm</think>", Fetch())
    assert "Neither a tool call nor an answer" in texts(ep.messages[-1]) and ep.invalid_calls == 1
    ep.step('<think>A is right.</think><answer>{"TA": "A", "VQ": "tie", "MQ": "B", "overall": "A"}</answer>', Fetch())
    assert ep.done and ep.end_reason == "answer" and ep.answer.complete
    assert ep.answer.verdicts == {"TA": "A", "VQ": "tie", "MQ": "B", "overall": "A"}
    with pytest.raises(RuntimeError):
        ep.step("more", Fetch())


def test_window_keeps_last_w_tool_results_and_stubs_the_rest():
    ep = episode(memory_window=2)
    for i in range(4):
        ep.step(call("A", [10 * i + 1, 10 * i + 2]), Fetch())
    context = ep.context()
    results = [m for m in context if m["kind"] == "tool_result"]
    assert [sum(p["type"] == "image" for p in m["content"]) for m in results] == [0, 0, 2, 2]
    assert "[Video A, frames 1, 2: no longer in view]" in texts(results[0])
    assert "frame 1 of 120" not in texts(results[0])  # labels go with their images
    assert "Video A, 2 selected frames:" in texts(results[0])  # the text stays
    assert sum(p["type"] == "image" for p in context[1]["content"]) == 8  # initial view pinned
    assert ep.messages[3]["content"] != context[3]["content"]  # the episode's record is intact
    unpinned = apply_window(ep.messages, ep.preset, 2, pin_initial=False)
    assert not any(p["type"] == "image" for p in unpinned[1]["content"])


def test_images_in_context_stay_bounded_as_turns_grow():
    ep = episode(memory_window=1, max_turns=20)
    counts = []
    for i in range(12):
        ep.step(call("A", [i * 8 + j for j in range(1, 9)]), Fetch())
        counts.append(len(render(ep.context())[1]))
    assert max(counts) == 8 + 8 and counts[-1] == counts[1]


def test_budget_tells_the_model_once_then_ends():
    ep = episode(max_turns=2)
    ep.step(call("A", [1]), Fetch())
    ep.step(call("A", [2]), Fetch())
    assert "The tool budget is used up" in texts(ep.messages[-1])
    ep.step(call("A", [3]), Fetch())
    assert ep.done and ep.end_reason == "budget" and ep.answer is None
    assert ep.turns_over_budget == 1


def test_each_turn_records_what_it_came_to():
    ep = episode(max_turns=6)
    for text, fetch in [(call("A", [5, 6]), Fetch()), (call("A", [500]), Fetch()),
                        ("<think>hmm</think><tool_call>{oops</tool_call>", Fetch()),
                        ("<think>hmm</think>", Fetch()), (call("B", [3]), Fetch(broken={"B"})),
                        ('<answer>{"TA": "A"}</answer>', Fetch())]:
        ep.step(text, fetch)
    assert ep.outcomes == ["valid", "out_of_range", "bad_json", "no_call", "unreadable_video",
                           "incomplete_answer"]
    over = episode(max_turns=1)
    for text in (call("A", [1]), call("A", [2])):
        over.step(text, Fetch())
    assert over.outcomes == ["valid", "over_budget"]


def test_answer_before_a_call_counts_but_a_call_before_an_answer_is_executed():
    ep = episode()
    ep.step(call("A", [1]) + '<answer>{"TA": "A"}</answer>', Fetch())
    assert not ep.done and ep.valid_calls == 1
    ep.step('<answer>{"TA": "A", "VQ": "A", "MQ": "A", "overall": "A"}</answer>' + call("A", [2]), Fetch())
    assert ep.done and ep.answer.complete


def test_render_through_the_tiny_processor_matches_visual_count(tiny_model_dir):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    ep = episode(memory_window=1)
    ep.step(call("A", [7, 8]), Fetch())
    ep.step(call("B", [9]), Fetch())
    messages, visuals = render(ep.context())
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert text.count("<|image_pad|>") == len(visuals) == 8 + 1
    assert "<|im_start|>tool\nVideo B, 1 selected frames:\nVideo B, frame 9 of 48<|vision_start|>" in text
    assert text.endswith("<|im_start|>assistant\n")


# ---- the official VR-Thinker preset -------------------------------------------------------

def test_official_preset_pools_both_videos_into_one_video_item():
    ep = episode("vr_thinker", max_turns=3)
    system, user = ep.messages
    assert system["content"].startswith("You are a helpful assistant.\n\n# Tools")
    assert '"description": "Frame index from 1 to 96."' in system["content"]
    assert user["content"][0]["type"] == "video" and user["content"][1]["type"] == "text"
    pool_a, pool_b = uniform_indices(120, 48), uniform_indices(48, 48)
    refs = [FrameRef(**r) for r in user["content"][0]["refs"]]
    assert refs == [FrameRef("A", pool_a[p - 1]) for p in (1, 13, 25, 37)] + \
        [FrameRef("B", pool_b[p - 49]) for p in (49, 61, 73, 85)]
    assert "The prompt is: a red circle moving right" in texts(user)


def test_official_preset_tool_turns_window_and_answer():
    ep, fetch = episode("vr_thinker", max_turns=3, memory_window=1), Fetch()
    ep.step(call(None, [12, 60]), fetch)
    assert fetch.calls[-1] == [FrameRef("A", uniform_indices(120, 48)[11]), FrameRef("B", 12)]
    result = ep.messages[-1]
    assert result["role"] == "user" and texts(result) == "\nAfter selecting frames: Here are the selected frames"
    ep.step(call(None, [97]), fetch)
    assert texts(ep.messages[-1]) == ("After selecting frames:\nThere are 96 frames numbered in "
                                      "range [1,96]. Your selection is out of range.")
    ep.step(call(None, [1, 2]), fetch)
    context = ep.context()
    first = [m for m in context if m["kind"] == "tool_result"][0]
    assert first["content"] == [{"type": "text", "text": "\nAfter selecting frames: Here are the selected frames"}]
    ep.step("<final answer>TA = 1, MQ = 0, VQ = 2, OA = 1</final answer>\n\\boxed{1}", fetch)
    assert ep.done and ep.answer.verdicts == {"TA": "A", "VQ": "B", "MQ": "tie", "overall": "A"}


def test_official_preset_ends_on_a_turn_without_call_or_answer():
    ep = episode("vr_thinker")
    ep.step("<synthesis>nothing</synthesis>", Fetch())
    assert ep.done and ep.end_reason == "no_action" and ep.answer is None


def test_preset_errors(tmp_path):
    with pytest.raises(PresetError, match="presets: vr_thinker, vrt"):
        load_preset("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    with pytest.raises(PresetError, match="missing key"):
        load_preset(str(bad))


def test_context_tokens_stay_bounded_with_the_window(tiny_model_dir):
    """With W=1 each new turn adds its text only; without a window it adds its images too."""
    import numpy as np
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    frame = np.zeros((56, 56, 3), np.uint8)  # 4 visual tokens at this budget

    def tokens(ep):
        messages, visuals = render(ep.context())
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
        out = processor(text=[text], images=[frame] * len(visuals) or None, return_tensors="pt")
        return out["input_ids"].shape[1]

    windowed, unbounded = episode(memory_window=1, max_turns=20), episode(memory_window=20, max_turns=20)
    sizes = {"windowed": [], "unbounded": []}
    for i in range(10):
        for name, ep in (("windowed", windowed), ("unbounded", unbounded)):
            ep.step(call("A", [i * 8 + j for j in range(1, 9)]), Fetch())
            sizes[name].append(tokens(ep))
    growth_w = [b - a for a, b in zip(sizes["windowed"][1:], sizes["windowed"][2:])]
    growth_u = [b - a for a, b in zip(sizes["unbounded"][1:], sizes["unbounded"][2:])]
    assert max(growth_w) < min(growth_u)  # the window saves the images of every older result
    assert min(growth_u) - max(growth_w) >= 8 * 4 - 8  # ~8 frames x 4 tokens, less stub text


@pytest.mark.parametrize("name,overall", [("vrt", "overall"), ("vr_thinker", "OA")])
def test_a_trace_answer_is_written_in_the_order_the_system_prompt_shows(name, overall):
    from vrt_ray.answers import parse_answer
    from vrt_ray.protocol import format_turn

    preset = load_preset(name)
    sorted_keys = {"MQ": "B", "TA": "A", "VQ": "tie", "overall": "A"}  # as traces.jsonl has it
    text = format_turn(preset, "TA: B off, A. VQ: both clean, tie. MQ: A jitters, B.",
                       answer=sorted_keys)
    body = text[text.index(preset.answer.open_tags[0]):]
    keys = [k for k in ("TA", "VQ", "MQ", overall) if k in body]
    assert sorted(keys, key=body.index) == ["TA", "VQ", "MQ", overall]
    episode = Episode(INPUT, preset, Budgets())
    assert list(json.loads(episode._answer_example())) == ["TA", "VQ", "MQ", overall]
    assert parse_answer(text, preset.answer, ("TA", "VQ", "MQ")).verdicts == sorted_keys
