"""The verifier: hand cases and a property test."""
import pytest
from hypothesis import given, strategies as st

from vrt_ray.rewards import RewardWeights, score

DIMS = ["TA", "VQ", "MQ"]
LABELS = {"TA": "A", "VQ": "B", "MQ": "tie", "overall": "A"}


def test_all_right_gets_full_reward_and_passes_the_rft_filter():
    s = score(dict(LABELS), LABELS, DIMS)
    assert (s.format, s.dimension_accuracy, s.overall, s.all_correct) == (1.0, 1.0, 1.0, True)
    assert s.reward == pytest.approx(1.0)


def test_tie_label_is_matched_only_by_tie():
    s = score({**LABELS, "MQ": "A"}, LABELS, DIMS)
    assert s.dimension_accuracy == pytest.approx(2 / 3) and not s.all_correct
    assert s.reward == pytest.approx(0.2 + 0.4 * 2 / 3 + 0.4)
    assert s.correct == {"TA": True, "VQ": True, "MQ": False, "overall": True}


def test_missing_key_or_invalid_call_costs_format_only():
    partial = score({"TA": "A", "VQ": "B", "overall": "A"}, LABELS, DIMS)
    assert partial.format == 0.0 and partial.dimension_accuracy == pytest.approx(2 / 3)
    assert partial.reward == pytest.approx(0.4 * 2 / 3 + 0.4)
    bad_call = score(dict(LABELS), LABELS, DIMS, invalid_calls=1)
    assert bad_call.format == 0.0 and not bad_call.all_correct
    assert bad_call.reward == pytest.approx(0.8)


def test_no_answer_scores_zero():
    s = score(None, LABELS, DIMS)
    assert (s.reward, s.format, s.all_correct) == (0.0, 0.0, False)


def test_only_labelled_dimensions_count():
    labels = {"overall": "B"}  # e.g. GenAI-Bench: overall only
    s = score({"TA": "A", "VQ": "A", "MQ": "A", "overall": "B"}, labels, DIMS)
    assert s.dimension_accuracy == 1.0 and s.all_correct and s.correct == {"overall": True}
    extra = score(dict(LABELS), {**LABELS, "Safety": "B"}, DIMS)  # not asked for: ignored
    assert extra.all_correct


def test_penalties_and_weights():
    w = RewardWeights(w_format=1, w_dims=0, w_overall=0, invalid_call_penalty=0.25,
                      over_budget_penalty=0.5)
    s = score(dict(LABELS), LABELS, DIMS, weights=w, invalid_calls=2, turns_over_budget=1)
    assert s.reward == pytest.approx(0 - 0.5 - 0.5)


def test_an_early_broken_answer_costs_more_than_calls_until_the_budget():
    w = RewardWeights(invalid_call_penalty=0.1, incomplete_answer_penalty=0.6)
    broken = score({"TA": "B"}, LABELS, DIMS, weights=w, invalid_calls=1, incomplete_answer=True)
    budget_spent = score(None, LABELS, DIMS, weights=w, invalid_calls=6)
    assert broken.reward == pytest.approx(-0.7) and budget_spent.reward == pytest.approx(-0.6)
    unpenalised = score({"TA": "B"}, LABELS, DIMS, weights=RewardWeights(invalid_call_penalty=0.1),
                        invalid_calls=1, incomplete_answer=True)
    assert unpenalised.reward > budget_spent.reward  # the shortcut the penalty closes


verdict = st.one_of(st.sampled_from(["A", "B", "tie"]), st.text(max_size=5), st.none())


@given(st.dictionaries(st.sampled_from(DIMS + ["overall", "x"]), verdict),
       st.dictionaries(st.sampled_from(DIMS + ["overall"]), st.sampled_from(["A", "B", "tie"])),
       st.integers(0, 5))
def test_reward_stays_in_range_and_never_raises(verdicts, labels, invalid):
    s = score(verdicts, labels, DIMS, invalid_calls=invalid)
    assert 0.0 <= s.reward <= 1.0
    assert s.all_correct <= bool(s.format)
