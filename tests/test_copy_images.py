"""Copying sequences over real frames (vrt_ray/copy_images.py): the tool result is the
protocol's, the labels are the note heads' frame numbers, and the learner scores them with
their frames decoded."""
import numpy as np
import pytest
import torch

from vrt_ray.copy_batches import CopySource, held_out_copying
from vrt_ray.copy_corpus import random_pieces
from vrt_ray.copy_images import FrameImageCopies, tool_result
from vrt_ray.data.synth import SynthSettings, generate
from vrt_ray.errors import VrtError
from vrt_ray.frame_cache import FrameCache
from vrt_ray.learner_core import sequence_logprobs
from vrt_ray.model_inputs import PixelBudget
from vrt_ray.models import load_policy, load_processor
from vrt_ray.preset import load_preset
from vrt_ray.protocol import Budgets, Episode, EpisodeInput, format_turn

BUDGET = PixelBudget(784, 3136)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("copy_images")
    generate(root, SynthSettings(pairs=2, min_frames=16, max_frames=40, seed=4), progress=False,
             workers=1)
    return sorted(str(p) for p in root.rglob("*.mp4"))


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    return load_processor(tiny_model_dir, BUDGET.min_pixels, BUDGET.max_pixels)


@pytest.fixture(scope="module")
def copies(processor, videos):
    return FrameImageCopies(processor, load_preset("vrt"), BUDGET, videos, FrameCache(1 << 26))


def test_the_tool_result_is_an_episodes_after_the_same_call(videos):
    preset = load_preset("vrt")
    episode = Episode(EpisodeInput("p", "a red circle moving up", {"A": videos[0], "B": videos[1]},
                                   {"A": 30, "B": 30}), preset, Budgets())
    episode.step(format_turn(preset, "look", {"video": "B", "target_frames": [3, 9, 21]}),
                 lambda refs: None)
    assert tool_result(preset, videos[1], 30, "B", [3, 9, 21])["content"] == \
        episode.messages[-1]["content"]


def test_labels_are_the_note_heads_frame_numbers_in_the_order_shown(copies, processor):
    tokenizer, rng = processor.tokenizer, np.random.default_rng(0)
    for _ in range(6):
        item = copies.sequence(rng)
        shown = [ref for _, refs in item.seq.visuals for ref in refs]
        assert 2 <= len(shown) <= 8
        labelled = [p for p, a in enumerate(item.seq.action_mask) if a]
        heads = tokenizer.decode([item.seq.input_ids[p] for p in labelled])
        assert heads == "".join(str(r.index) for r in shown)  # digits alone, nothing else
        text = tokenizer.decode(item.seq.input_ids)
        for ref in shown:  # each number copied is in the tool result above, on its label
            assert f"Video {ref.video}, frame {ref.index} of " in text
        assert text.count("<|image_pad|>") > len(shown)  # image tokens, not a placeholder each


def test_the_learner_scores_them_with_their_frames(copies, processor, tiny_model_dir):
    model = load_policy(tiny_model_dir)
    item = copies.sequence(np.random.default_rng(1))
    with torch.no_grad():
        logprobs = sequence_logprobs(model, processor, item, cache=FrameCache(1 << 26),
                                     action_only=True)
    scored = [float(logprobs[p]) for p, a in enumerate(item.seq.action_mask) if a]
    assert scored and all(v < 0 for v in scored)
    assert sum(float(v) != 0 for v in logprobs) == len(scored)


def test_a_copy_source_mixes_them_with_the_text_kinds(copies, processor):
    source = CopySource(processor.tokenizer, random_pieces(processor.tokenizer),
                        load_preset("vrt"), BUDGET, copies)
    items, labels = held_out_copying(source, ["frame_images", "prompt"], 4,
                                     np.random.default_rng(2))
    assert [set(l.values()) for l in labels] == [{"copy_frame_images"}, {"copy_prompt"}] * 2
    assert [bool(it.seq.visuals) for it in items] == [True, False] * 2
    with pytest.raises(VrtError, match="draws no frames"):
        CopySource(processor.tokenizer, source.pieces, source.preset, BUDGET).items(
            ["frame_images"], 1, np.random.default_rng(0))


def test_a_preset_without_frame_numbers_is_refused(processor, videos):
    with pytest.raises(VrtError, match="frame_label"):
        FrameImageCopies(processor, load_preset("vr_thinker"), BUDGET, videos, FrameCache(1 << 20))
