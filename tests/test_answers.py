"""Final-answer parsing in both preset styles; nothing raises on model text."""
from hypothesis import given, strategies as st

from vrt_ray.answers import AnswerSyntax, has_answer, parse_answer

DIMS = ["TA", "VQ", "MQ"]
OURS = AnswerSyntax()
OFFICIAL = AnswerSyntax(style="key_value", open_tags=("<final answer>", "<answer>"),
                        close_tags=("</final answer>", "</answer>"),
                        keys={"TA": "TA", "VQ": "VQ", "MQ": "MQ", "overall": "OA"},
                        codes={"A": "1", "B": "2", "tie": "0"}, boxed_overall=True)


def test_json_answer():
    text = '<think>A is sharper.</think><answer>{"TA": "A", "VQ": "B", "MQ": "tie", "overall": "A"}</answer>'
    parsed = parse_answer(text, OURS, DIMS)
    assert parsed.complete and parsed.error is None
    assert parsed.verdicts == {"TA": "A", "VQ": "B", "MQ": "tie", "overall": "A"}


def test_last_answer_wins_and_case_is_normalised():
    text = ('<answer>{"TA": "B", "VQ": "B", "MQ": "B", "overall": "B"}</answer> wait '
            '<ANSWER>{"TA": "a", "VQ": "Tie", "MQ": "b", "overall": "A"}</ANSWER>')
    assert parse_answer(text, OURS, DIMS).verdicts == {"TA": "A", "VQ": "tie", "MQ": "B", "overall": "A"}


def test_incomplete_and_invalid_json_answers():
    partial = parse_answer('<answer>{"TA": "A", "overall": "maybe"}</answer>', OURS, DIMS)
    assert not partial.complete and partial.verdicts == {"TA": "A"}
    assert "VQ" in partial.error and "overall" in partial.error
    broken = parse_answer('<answer>{"TA": "A",}</answer>', OURS, DIMS)
    assert not broken.complete and broken.error == "answer is not valid JSON"
    none = parse_answer("I think A is better.", OURS, DIMS)
    assert none.verdicts == {} and none.error == "no answer" and not has_answer("x", OURS)


def test_unclosed_answer_still_parses():
    text = '<answer>{"TA": "A", "VQ": "A", "MQ": "A", "overall": "A"}'
    assert parse_answer(text, OURS, DIMS).complete


def test_official_key_value_answer_in_any_order_and_spacing():
    text = "<synthesis>..</synthesis><think>..</think><final answer>TA = 1, MQ = 0, VQ=2, OA = 1</final answer>"
    parsed = parse_answer(text, OFFICIAL, DIMS)
    assert parsed.complete
    assert parsed.verdicts == {"TA": "A", "VQ": "B", "MQ": "tie", "overall": "A"}


def test_official_overall_from_boxed():
    text = "<final answer>TA = 2, MQ = 2, VQ = 0</final answer>\n\\boxed{2}"
    parsed = parse_answer(text, OFFICIAL, DIMS)
    assert parsed.complete and parsed.verdicts["overall"] == "B"
    only_boxed = parse_answer("so the answer is \\boxed{1}", OFFICIAL, [])
    assert only_boxed.complete and only_boxed.verdicts == {"overall": "A"}
    assert has_answer("\\boxed{1}", OFFICIAL)


@given(st.text(), st.sampled_from([OURS, OFFICIAL]))
def test_never_raises_and_verdicts_are_valid(text, syntax):
    parsed = parse_answer(text, syntax, DIMS)
    assert set(parsed.verdicts) <= set(DIMS) | {"overall"}
    assert set(parsed.verdicts.values()) <= {"A", "B", "tie"}
    assert parsed.complete == (len(parsed.verdicts) == 4)


@given(st.dictionaries(st.sampled_from(DIMS + ["overall"]), st.sampled_from(["A", "B", "tie"]),
                       min_size=4), st.text(alphabet=st.characters(blacklist_characters="<"), max_size=30))
def test_round_trip_of_well_formed_json_answers(verdicts, prefix):
    import json
    text = f"{prefix}<answer>{json.dumps(verdicts)}</answer>"
    assert parse_answer(text, OURS, DIMS).verdicts == verdicts
