"""SFT samples: labels only on assistant tokens; a turn after a window drop is trained under the
context the episode runner builds for it."""

import numpy as np
import pytest
from scripted import ScriptedTurns
from video_samples import encode

from vrt_ray.data import PreferencePair
from vrt_ray.engines.base import SamplingParams
from vrt_ray.engines.hf import HFEngine
from vrt_ray.episodes import EpisodeJob, run_episodes
from vrt_ray.frame_cache import FrameCache
from vrt_ray.model_inputs import PixelBudget
from vrt_ray.models import load_policy, load_processor
from vrt_ray.preset import load_preset
from vrt_ray.protocol import Budgets, EpisodeInput
from vrt_ray.sft import (IGNORE, RANGE_RETRY_THINK, RETRY_THINK, add_slip, frame_label_positions,
                         frame_label_sequence, labels, trace_texts, trace_trajectory)
from vrt_ray.trajectory import to_sequences

PIXELS = PixelBudget(784, 3136)
TRACE = {"pair_id": "p", "turns": [
    {"think": "A 1: red square.", "tool_call": {"video": "A", "target_frames": [3, 4]}},
    {"think": "A 3: red square, noisy.", "tool_call": {"video": "B", "target_frames": [5]}},
    {"think": "B 5: clean.", "answer": {"TA": "tie", "VQ": "B", "MQ": "tie", "overall": "B"}}]}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("sft_videos")
    videos = {"A": str(encode(folder / "a.mp4", "libx264", 30)),
              "B": str(encode(folder / "b.mp4", "libx264", 20))}
    pair = PreferencePair("p", "a red square", "a.mp4", "b.mp4", {"overall": "B"})
    return load_processor(tiny_model_dir), pair, videos


def test_only_assistant_tokens_carry_labels(setup):
    processor, pair, videos = setup
    budgets = Budgets(initial_frames=2, memory_window=1)
    trajectory = trace_trajectory(processor, pair, videos, {"A": 30, "B": 20}, TRACE,
                                  load_preset("vrt"), budgets, PIXELS, FrameCache(1 << 26))
    assert trajectory.answer_complete and trajectory.invalid_calls == 0
    tok = processor.tokenizer
    vision = {tok.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|vision_start|>", "<|vision_end|>")}
    im_start = tok.convert_tokens_to_ids("<|im_start|>")
    for seq in to_sequences(trajectory.turns):
        lab = labels(seq)
        assert len(lab) == len(seq.input_ids)
        labelled = [t for t in lab if t != IGNORE]
        assert labelled and not vision & set(labelled) and im_start not in labelled
        text = tok.decode(labelled)
        assert "select_frames" in text or "<answer>" in text
        assert "Video A, frame" not in text and "no longer in view" not in text  # tool text
    all_labelled = tok.decode([t for s in to_sequences(trajectory.turns, pack=False)
                               for t in labels(s) if t != IGNORE])
    for text in trace_texts(TRACE, load_preset("vrt")):
        assert text in all_labelled


def test_sample_after_a_window_drop_is_the_runner_context(setup, tiny_model_dir):
    """The runner, made to write the same turns, saw exactly the SFT contexts."""
    processor, pair, videos = setup
    preset, budgets = load_preset("vrt"), Budgets(initial_frames=2, memory_window=1)
    sft = trace_trajectory(processor, pair, videos, {"A": 30, "B": 20}, TRACE, preset, budgets,
                           PIXELS, FrameCache(1 << 26))
    engine = HFEngine(load_policy(tiny_model_dir), processor,
                      logits_processors=[ScriptedTurns(processor.tokenizer, trace_texts(TRACE, preset))])
    job = EpisodeJob(EpisodeInput("p", "a red square", videos, {"A": 30, "B": 20}))
    (ran,) = run_episodes(engine, [job], preset, budgets, SamplingParams(0.0, max_new_tokens=96),
                          PIXELS, cache=FrameCache(1 << 26))
    assert len(ran.turns) == len(sft.turns) == 3
    assert len(sft.turns[2].visuals) < len(sft.turns[1].visuals) + 1  # turn 3: the window dropped
    for a, b in zip(ran.turns, sft.turns):
        assert a.prompt_ids == b.prompt_ids and a.visuals == b.visuals and a.token_ids == b.token_ids


def test_a_slip_is_replayed_for_its_error_but_only_the_retry_is_trained(setup):
    processor, pair, videos = setup
    preset, budgets = load_preset("vrt"), Budgets(initial_frames=2, memory_window=1)
    slipped = add_slip(TRACE, np.random.default_rng(0), budgets.max_turns)
    slip = next(i for i, t in enumerate(slipped["turns"]) if "slip" in t)
    assert len(slipped["turns"]) == 4 and slipped["turns"][slip + 1]["think"] == RETRY_THINK
    assert slipped["turns"][slip + 1]["tool_call"] == slipped["turns"][slip]["tool_call"]
    texts = trace_texts(slipped, preset)
    assert texts[slip].endswith("</tool_call>") and texts[slip] not in trace_texts(TRACE, preset)

    trajectory = trace_trajectory(processor, pair, videos, {"A": 30, "B": 20}, slipped, preset,
                                  budgets, PIXELS, FrameCache(1 << 26))
    assert (trajectory.invalid_calls, trajectory.valid_calls) == (1, 2)
    assert trajectory.answer_complete and len(trajectory.turns) == 3  # the slip has no turn
    tok = processor.tokenizer
    retry = trajectory.turns[slip]
    assert "not valid JSON" in tok.decode(retry.prompt_ids)  # trained under the tool's error
    assert tok.decode(retry.token_ids).startswith(f"<think>{RETRY_THINK}</think>")
    labelled = tok.decode([t for s in to_sequences(trajectory.turns) for t in labels(s)
                           if t != IGNORE])
    assert texts[slip] not in labelled and texts[slip + 1] in labelled
    assert all(text in labelled for i, text in enumerate(texts) if i not in (slip, slip + 1))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_range_slip_asks_past_the_end_and_its_retry_is_trained_under_the_error(setup, seed):
    processor, pair, videos = setup
    preset, budgets = load_preset("vrt"), Budgets(initial_frames=2, memory_window=1)
    counts = {"A": 30, "B": 20}
    slipped = add_slip(TRACE, np.random.default_rng(seed), budgets.max_turns, "range", counts)
    slip = next(i for i, t in enumerate(slipped["turns"]) if "slip" in t)
    call = slipped["turns"][slip]["tool_call"]
    asked = slipped["turns"][slip]["slip_frames"]
    assert max(asked) > counts[call["video"]] and len(asked) <= len(call["target_frames"])
    assert slipped["turns"][slip + 1] == {
        "think": RANGE_RETRY_THINK.format(video=call["video"], last=counts[call["video"]]),
        "tool_call": call}
    texts = trace_texts(slipped, preset)
    assert texts[slip].endswith("}}</tool_call>")  # whole JSON, wrong frames

    trajectory = trace_trajectory(processor, pair, videos, counts, slipped, preset, budgets,
                                  PIXELS, FrameCache(1 << 26))
    assert (trajectory.invalid_calls, trajectory.valid_calls) == (1, 2)
    assert trajectory.answer_complete and len(trajectory.turns) == 3
    context = processor.tokenizer.decode(trajectory.turns[slip].prompt_ids)
    assert "do not exist" in context and f"frames 1 to {counts[call['video']]}" in context
    labelled = processor.tokenizer.decode([t for s in to_sequences(trajectory.turns)
                                           for t in labels(s) if t != IGNORE])
    assert texts[slip] not in labelled and texts[slip + 1] in labelled


def test_a_range_slip_needs_frame_counts_and_kinds_are_checked():
    with pytest.raises(ValueError, match="frame counts"):
        add_slip(TRACE, np.random.default_rng(0), 6, "range")
    with pytest.raises(ValueError, match="slip kind 'typo'"):
        add_slip(TRACE, np.random.default_rng(0), 6, "typo")


def test_a_trace_using_every_turn_gets_no_slip():
    full = {"pair_id": "p", "turns": TRACE["turns"][:2] + TRACE["turns"][1:]}  # 3 calls
    assert add_slip(full, np.random.default_rng(0), max_turns=3) is full
    assert len(add_slip(full, np.random.default_rng(0), max_turns=4)["turns"]) == 5


def test_frame_labels_are_the_digits_heading_each_note(setup):
    tok = setup[0].tokenizer
    text = ("A 19: red square (57,30) clean, 12.4 down since 1. B 108: no object, blocky. "
            "A: from frame 90 to 144 it moves 33.0 px up; frames 123-130. Overall: B wins 2, A.")
    ids = tok(text)["input_ids"]
    found = frame_label_positions(tok, ids, range(len(ids)))
    assert tok.decode([ids[p] for p in found]) == "19108"


@pytest.mark.parametrize("window", [1, 8])  # turn 3 in a sequence of its own, or packed
def test_a_copy_turn_labels_the_frame_labels_after_the_first_turn_alone(setup, window):
    processor, pair, videos = setup
    trajectory = trace_trajectory(processor, pair, videos, {"A": 30, "B": 20}, TRACE,
                                  load_preset("vrt"), Budgets(initial_frames=2,
                                                              memory_window=window),
                                  PIXELS, FrameCache(1 << 26))
    sequences = to_sequences(trajectory.turns)
    assert len(sequences) == (2 if window == 1 else 1)
    copies = [frame_label_sequence(seq, processor.tokenizer) for seq in sequences]
    assert all(c is not None for c in copies)  # turn 1's `A 1:` alone would give None
    labelled = [[t for t in labels(c) if t != IGNORE] for c in copies]
    # turn 2 notes frame 3 (asked for in turn 1), turn 3 frame 5; turn 1's `A 1:` is no copy
    assert processor.tokenizer.decode([t for ids in labelled for t in ids]) == "35"
    for seq, copy in zip(sequences, copies):
        assert copy.input_ids == seq.input_ids and copy.visuals == seq.visuals
        assert set(labels(copy)) - {IGNORE} <= set(labels(seq))
    first = to_sequences(trajectory.turns[:1])[0]
    assert frame_label_sequence(first, processor.tokenizer) is None
