"""Benchmark metrics on hand-computed cases (DESIGN.md §9)."""
import math

import numpy as np
import pytest

from vrt_ray.metrics import (accuracy_table, accuracy_with_ties, accuracy_with_ties_clean,
                             accuracy_without_ties, format_table, genai_bench_accuracy,
                             mjbench_accuracy, suff_stats)


def test_suff_stats_cells():
    h, m = [1, -1, 0, 1, 0], [0.5, 0.5, 0.1, 0.0, 2.0]
    assert suff_stats(h, m, 0.1) == {"C": 1, "D": 1, "Th": 1, "Tm": 1, "Thm": 1}


def test_without_ties_counts_a_model_tie_against_and_ignores_human_ties():
    # non-tie labels: C (1,1), Tm (1,0), C (-1,-1), D (-1,1); the human tie is left out
    assert accuracy_without_ties([1, 1, -1, -1, 0], ["A", "tie", "B", "A", "A"]) == 0.5
    assert math.isnan(accuracy_without_ties([0, 0], [1, -1]))


def test_reference_loop_is_optimistic_with_repeated_margins_and_order_dependent():
    # A judge that never says tie; the two human ties come first among equal |m| = 1.
    h, m = [0, 0, 1, -1], [1, -1, 1, -1]
    # Stable sort keeps input order; tying the first 2 pairs gives (C 2 + Thm 2) / 4, a state
    # no threshold produces (all four have |m| = 1).
    assert accuracy_with_ties(h, m) == 1.0
    # Real thresholds: none tied (C 2 / 4) or all tied (Thm 2 / 4).
    assert accuracy_with_ties_clean(h, m) == 0.5
    # The same pairs in another order: the loop now agrees with the clean sweep.
    assert accuracy_with_ties([1, -1, 0, 0], [1, -1, 1, -1]) == 0.5


def test_reference_loop_never_scores_the_no_tie_state():
    # Both correct without ties (1.0); the loop starts by tying the smallest margin.
    assert accuracy_with_ties([1, 1], [1.0, 2.0]) == 0.5
    assert accuracy_with_ties_clean([1, 1], [1.0, 2.0]) == 1.0


def test_generative_judge_with_ties_hand_computed():
    h = [1, 1, -1, 0, 0, -1]
    m = ["A", "tie", "B", "tie", "A", "tie"]
    # epsilon = 0 ties the three "tie" verdicts: C = 2 (pairs 1, 3), Thm = 1 (pair 4) -> 3 / 6;
    # no ties: C 2 / 6; all tied: Thm 2 / 6.
    assert accuracy_with_ties_clean(h, m) == 0.5
    assert accuracy_with_ties(h, m) == 0.5


def _oracle_reference(h, m):
    """The reference loop's states spelled out: tie the first k of a stable sort by |m|."""
    order = sorted(range(len(h)), key=lambda i: abs(m[i]))
    best = -1.0
    for k in range(1, len(h) + 1):
        tied = set(order[:k])
        right = sum((h[i] == 0) if i in tied else (h[i] * m[i] > 0) for i in range(len(h)))
        best = max(best, right / len(h))
    return best


def _oracle_clean(h, m):
    best = -1.0
    for eps in [-1.0] + sorted({abs(x) for x in m}):
        s = suff_stats(h, m, eps)
        best = max(best, (s["C"] + s["Thm"]) / len(h))
    return best


def test_both_versions_match_step_by_step_oracles_on_random_repeated_margins():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 12))
        h = rng.integers(-1, 2, n).tolist()
        m = rng.choice([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0], n).tolist()
        assert accuracy_with_ties(h, m) == pytest.approx(_oracle_reference(h, m))
        assert accuracy_with_ties_clean(h, m) == pytest.approx(_oracle_clean(h, m))


def test_bad_inputs_raise_value_error():
    with pytest.raises(ValueError, match="human labels"):
        accuracy_with_ties([2], [1.0])
    with pytest.raises(ValueError, match="finite"):
        accuracy_with_ties_clean([1], [float("nan")])
    with pytest.raises(ValueError, match="verdict 'C'"):
        accuracy_without_ties(["C"], [1.0])
    assert math.isnan(accuracy_with_ties([], []))


def test_accuracy_table_per_dimension_and_length_bucket():
    human = {"TA": ["A", "B", "tie", None], "overall": ["A", "A", "B", "tie"]}
    model = {"TA": ["A", "A", "tie", "B"], "overall": ["A", None, "B", "A"]}
    table = accuracy_table(human, model, lengths=[16, 100.0, 300, None], edges=[0, 64, 256])
    assert table["protocol"] == "videogen-rewardbench"
    ta = table["dimensions"]["TA"]
    assert (ta["n"], ta["n_without_ties"], ta["missing"]) == (3, 2, 0)
    assert ta["without_ties"] == 0.5
    assert ta["with_ties"] == pytest.approx(2 / 3) and ta["with_ties_clean"] == pytest.approx(2 / 3)
    overall = table["dimensions"]["overall"]
    assert (overall["n"], overall["missing"], overall["without_ties"]) == (3, 1, 1.0)
    assert list(table["by_length"]) == ["0-63", "64-255", "256+", "unknown"]
    assert table["by_length"]["0-63"]["TA"]["without_ties"] == 1.0
    assert table["by_length"]["64-255"]["TA"]["without_ties"] == 0.0
    assert table["by_length"]["64-255"]["overall"]["missing"] == 1
    assert "TA" not in table["by_length"]["unknown"]
    text = format_table(table)
    assert "frames 64-255" in text and "overall" in text and " 50.0" in text


def test_genai_bench_protocols():
    votes = ["leftvote", "rightvote", "tievote", "bothbad_vote", "leftvote"]
    model = ["A", "tie", "tie", "tie", None]
    no_ties = genai_bench_accuracy(votes, model, "without-ties")
    assert no_ties == {"protocol": "genai-bench:without-ties", "n": 3, "correct": 1,
                       "accuracy": pytest.approx(1 / 3)}
    four = genai_bench_accuracy(votes, model, "four-class")
    assert (four["protocol"], four["n"], four["correct"]) == ("genai-bench:four-class", 5, 3)
    with pytest.raises(ValueError, match="protocol"):
        genai_bench_accuracy(votes, model, "official")


def test_mjbench_protocols():
    human = ["A", "B", "tie", None, "A"]            # Same and Hard to judge are skipped
    model = ["A", "tie", "A", "B", "B"]
    assert mjbench_accuracy(human, model, "strict") == {
        "protocol": "mjbench-video:strict", "n": 3, "accuracy": pytest.approx(1 / 3)}
    assert mjbench_accuracy(human, model, "tie-aware")["accuracy"] == 0.5
