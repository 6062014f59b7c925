"""The copying sequences (vrt_ray/copy_corpus.py) and their batches (vrt_ray/copy_batches.py):
what is labelled, what counts as copied, and that the copied text is there to copy."""
import re

import numpy as np
import pytest
import torch

from vrt_ray.copy_batches import (IGNORE, CopySource, copy_measure, copying_mixer, draw,
                                  encode, held_out_copying, train_sequences, with_share)
from vrt_ray.copy_corpus import GENERATORS, random_pieces
from vrt_ray.model_inputs import PixelBudget
from vrt_ray.models import load_processor
from vrt_ray.preset import load_preset


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_processor(tiny_model_dir).tokenizer


@pytest.fixture(scope="module")
def preset():
    return load_preset("vrt")


@pytest.fixture(scope="module")
def pieces(tokenizer):
    return random_pieces(tokenizer)


def test_random_pieces_are_single_ordinary_tokens(tokenizer, pieces):
    special = set(tokenizer.all_special_tokens) | {t.content for t in
                                                   tokenizer.added_tokens_decoder.values()}
    assert len(pieces) > 500
    assert not special & set(pieces)
    assert all(len(tokenizer.encode(p, add_special_tokens=False)) == 1 for p in pieces)


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_copied_spans_follow_the_labels_and_occur_before_them(kind, pieces, preset):
    rng = np.random.default_rng(7)
    for _ in range(50):
        seq = GENERATORS[kind](rng, pieces, preset)
        assert seq.kind == kind and 0 < seq.start < len(seq.text) and seq.copied
        for a, b in seq.copied:
            assert seq.start <= a < b <= len(seq.text)
            assert seq.text[a:b] in seq.text[:seq.start]


def test_frame_notes_copy_the_tool_results_labels_in_order(pieces, preset):
    seq = GENERATORS["frames"](np.random.default_rng(3), pieces, preset)
    listed = re.findall(r"frame (\d+) of", seq.text[:seq.start])
    assert [seq.text[a:b] for a, b in seq.copied] == listed
    assert listed == sorted(listed, key=int)
    heads = re.findall(r"([AB]) (\d+):", seq.text[seq.start:])
    assert [n for _, n in heads] == listed
    assert {v for v, _ in heads} == set(re.findall(r"Video ([AB]), \d+ selected", seq.text))


def test_encode_labels_the_tail_and_marks_copied_tokens(tokenizer, pieces, preset):
    seqs = draw(np.random.default_rng(0), pieces, sorted(GENERATORS), 6, preset)
    assert [s.kind for s in seqs] == sorted(GENERATORS) * 2
    enc = encode(tokenizer, seqs)
    for r, seq in enumerate(seqs):
        n = int(enc["attention_mask"][r].sum())
        labelled = (enc["labels"][r] != IGNORE).nonzero().flatten()
        assert labelled.numel() and int(labelled.max()) == n - 1  # the tail, to the last token
        assert torch.equal(enc["labels"][r, labelled], enc["input_ids"][r, labelled])
        tail = tokenizer.decode(enc["input_ids"][r, int(labelled.min()):n])
        assert seq.text[seq.start:].startswith(tail[:20])
        assert not (enc["copied"][r] & (enc["labels"][r] == IGNORE)).any()
        copied = tokenizer.decode(enc["input_ids"][r][enc["copied"][r]]).replace(" ", "")
        assert copied == "".join(seq.text[a:b] for a, b in seq.copied).replace(" ", "")


def test_copied_only_labels_exactly_the_copied_tokens(tokenizer, pieces, preset):
    seqs = draw(np.random.default_rng(2), pieces, sorted(GENERATORS), 3, preset)
    full, copied = encode(tokenizer, seqs), encode(tokenizer, seqs, copied_only=True)
    assert torch.equal(copied["copied"], full["copied"])
    assert torch.equal(copied["labels"] != IGNORE, full["copied"])
    assert (full["labels"] != IGNORE).sum() > (copied["labels"] != IGNORE).sum()


def test_copy_measure_reports_each_kind(tiny_model_dir, tokenizer, pieces, preset):
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model_dir,
                                                               dtype=torch.float32)
    seqs = draw(np.random.default_rng(1), pieces, sorted(GENERATORS), 6, preset)
    measure = copy_measure(model, tokenizer, seqs, batch_size=4)
    assert sorted(measure) == sorted(GENERATORS)
    for kind, m in measure.items():
        assert 0 <= m["agreement"] <= 1
        assert m["loss"] > 1.0  # a random model does not copy: near a guess over its tokens
    assert not model.training


def test_learner_items_label_the_copied_tokens_alone(tokenizer, pieces, preset):
    from vrt_ray.copy_batches import train_sequences
    from vrt_ray.model_inputs import PixelBudget

    seqs = draw(np.random.default_rng(4), pieces, sorted(GENERATORS), 3, preset)
    enc = encode(tokenizer, seqs, copied_only=True)
    for r, item in enumerate(train_sequences(tokenizer, seqs, PixelBudget(784, 3136))):
        n = len(item.seq.input_ids)
        assert item.seq.input_ids == enc["input_ids"][r, :n].tolist()
        assert item.seq.action_mask == enc["copied"][r, :n].tolist()
        assert item.seq.visuals == [] and item.videos == {}


def test_prompt_sequences_restate_the_user_turns_prompt_as_the_teacher_does(pieces, preset):
    from vrt_ray.data.scene import parse_prompt

    seq = GENERATORS["prompt"](np.random.default_rng(5), pieces, preset)
    prompt = re.search(r"Prompt: (.*)\n", seq.text[:seq.start]).group(1)
    colour, shape, direction, _ = parse_prompt(prompt)
    assert [seq.text[a:b] for a, b in seq.copied] == [colour, shape, direction]
    assert re.search(r"Video A has \d+ frames; video B has \d+ frames\.", seq.text)
    assert seq.text[seq.start:].startswith("<think>Prompt: ")


def test_a_preset_without_frame_numbers_is_refused_for_frame_copies(pieces):
    from vrt_ray.errors import VrtError

    with pytest.raises(VrtError, match="frame_label"):
        GENERATORS["frames"](np.random.default_rng(0), pieces, load_preset("vr_thinker"))


def weighted_tokens(items):
    return sum(sum(it.seq.action_mask) * it.loss_weight for it in items)


def test_mixed_in_copies_carry_their_share_of_the_loss(tokenizer, pieces, preset):
    budget = PixelBudget(3136, 12544)
    step = train_sequences(tokenizer, draw(np.random.default_rng(1), pieces, ["prompt"], 6,
                                           preset), budget)
    extra = train_sequences(tokenizer, draw(np.random.default_rng(2), pieces, ["frames"], 3,
                                            preset), budget)
    mixed = with_share(step, extra, 0.25)
    assert mixed[:6] == step and all(it.loss_weight == 1.0 for it in step)
    assert weighted_tokens(mixed[6:]) / weighted_tokens(mixed) == pytest.approx(0.25)
    assert with_share(step, extra, 0.0) == [*step, *extra]  # share 0: by their own tokens


def test_the_mixer_adds_fresh_copies_each_step_and_nothing_at_zero(tokenizer, pieces, preset):
    source = CopySource(tokenizer, pieces, preset, PixelBudget(3136, 12544))
    step = held_out_copying(source, ["prompt"], 4, np.random.default_rng(3))[0]
    assert copying_mixer(source, ["frames"], 0, 0.5, np.random.default_rng(0))(step) == step
    mix = copying_mixer(source, ["frames", "prompt"], 2, 0.3, np.random.default_rng(0))
    first, second = mix(step), mix(step)
    assert first[:4] == step and len(first) == len(second) == 6
    assert first[4].seq.input_ids != second[4].seq.input_ids
    assert weighted_tokens(first[4:]) / weighted_tokens(first) == pytest.approx(0.3)


def test_held_out_copies_label_each_copied_position_with_its_kind(tokenizer, pieces, preset):
    items, labels = held_out_copying(CopySource(tokenizer, pieces, preset,
                                                PixelBudget(3136, 12544)),
                                     ["frames", "prompt"], 4, np.random.default_rng(5))
    assert [set(l.values()) for l in labels] == [{"copy_frames"}, {"copy_prompt"}] * 2
    assert [sorted(l) for l in labels] == [[p for p, a in enumerate(it.seq.action_mask) if a]
                                           for it in items]
