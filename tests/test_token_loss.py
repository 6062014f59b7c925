import math

import pytest

from vrt_ray.token_loss import TokenClasses, loss_by_class, loss_by_label, turn_labels
from vrt_ray.trajectory import PackedSequence


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from vrt_ray.models import load_processor
    return load_processor(str(tiny_model_dir)).tokenizer


def _one(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) == 1, (text, ids)
    return ids[0]


def test_tokens_fall_in_the_class_their_text_says(tokenizer):
    classes = TokenClasses(tokenizer)
    assert classes(_one(tokenizer, "<think>")) == "markup"
    assert classes(_one(tokenizer, "<|im_end|>")) == "markup"
    assert classes(_one(tokenizer, "<tool_call>")) == "markup"
    assert classes(_one(tokenizer, "7")) == "number"
    assert classes(_one(tokenizer, " purple")) == "word"
    assert classes(_one(tokenizer, ",")) == "other"


def test_loss_by_class_averages_action_tokens_only(tokenizer):
    classes = TokenClasses(tokenizer)
    ids = [_one(tokenizer, t) for t in ("<|im_start|>", "<think>", "7", " purple", "3", ",")]
    seq = PackedSequence(input_ids=ids, visuals=[], action_mask=[True, True, True, True, True, False],
                         logprobs=[None] * 6, turn_indices=(0,))
    item = type("Item", (), {"seq": seq})()
    logprobs = [math.log(0.5), -1.0, -2.0, -0.5, -4.0, -9.0]  # position 0 and the non-action , skipped
    got = loss_by_class([item, item], [logprobs, None], classes)
    assert list(got) == ["all", "markup", "number", "word"]
    assert got["all"] == pytest.approx((1.0 + 2.0 + 0.5 + 4.0) / 4)
    assert got["markup"] == pytest.approx(1.0)
    assert got["number"] == pytest.approx(3.0)
    assert got["word"] == pytest.approx(0.5)


def test_loss_by_label_averages_the_labelled_action_tokens(tokenizer):
    ids = [_one(tokenizer, t) for t in ("<|im_start|>", " purple", "3", ",", "7")]
    seq = PackedSequence(input_ids=ids, visuals=[], action_mask=[True, True, True, True, False],
                         logprobs=[None] * 5, turn_indices=(0,))
    item = type("Item", (), {"seq": seq})()
    logprobs = [-9.0, -1.0, -2.0, -0.5, -4.0]
    labels = [{0: "colour", 1: "colour", 2: "position", 4: "position"}, {2: "position"}]
    got = loss_by_label([item, item], [logprobs, logprobs], labels)
    # position 0 has no prediction, 4 is not an action token, 3 has no label
    assert got == {"colour": pytest.approx(1.0), "position": pytest.approx(2.0)}


def test_turn_labels_name_each_run_of_action_tokens_by_its_turn():
    #                 turn 2 ----   tool  turn 3   tool  turn 4 (answers)
    mask = [False, True, True, False, True, False, True, True]
    seq = PackedSequence(input_ids=list(range(8)), visuals=[], action_mask=mask,
                         logprobs=[None] * 8, turn_indices=(1, 2, 3))
    assert turn_labels(seq, answer_turn=3) == {1: "turn_2", 2: "turn_2", 4: "turn_3",
                                               6: "answer", 7: "answer"}
    assert turn_labels(seq)[7] == "turn_4"
    with pytest.raises(ValueError, match="runs of action tokens"):
        turn_labels(PackedSequence(list(range(8)), [], mask, [None] * 8, (1, 2)))
