"""The head-tail frontier on hand-built logits whose curves are known (docs/report.md#frontier)."""

from __future__ import annotations

import numpy as np
import pytest

from sage_cli.report.frontier import (
    FRONTIER_GRID,
    compute_at_many,
    compute_frontier,
    compute_frontier_comparison,
)

# Classes 0 (many), 1 (medium), 2 (few); log prior = [0, -1, -2], so z - t log pi = z + t [0, 1, 2].
GROUPS = ["many", "medium", "few"]
PRIOR = np.exp(np.array([0.0, -1.0, -2.0]))
LABELS = np.array([0, 2, 1])
# A (many): right while 1.02 > 2t, t <= 0.5 on the grid.  B (few): right once 2t > 1.03, t >= 0.55.
# C (medium): right while 1.01 + t > 2t and 1.01 + t > 0, every grid t up to 1.0.
REFERENCE = np.array([[1.02, 0.0, 0.0], [1.03, 0.0, 0.0], [0.0, 1.01, 0.0]])
# B's few logit raised: right once 0.9 + 2t > 1.03, t >= 0.1, while A still is: a gain.
BETTER = np.array([[1.02, 0.0, 0.0], [1.03, 0.0, 0.9], [0.0, 1.01, 0.0]])
# The reference's logits moved by 0.55 log-prior: its own curve, shifted by 0.55 in t. As trained it gains the few
# image and loses the many one: a trade.
SHIFTED = REFERENCE - 0.55 * np.log(PRIOR)
# A always predicted as the few class: the many accuracy 1 is never reached.
NEVER = np.array([[0.0, 0.0, 3.0], [1.03, 0.0, 0.0], [0.0, 1.01, 0.0]])


def _split(logits: np.ndarray) -> dict[str, np.ndarray]:
    return {"logits": logits.astype(np.float32), "labels": LABELS}


def _compare(run: np.ndarray) -> dict:
    return compute_frontier_comparison({"val": _split(run), "test": _split(run)},
                                       {"val": _split(REFERENCE), "test": _split(REFERENCE)}, PRIOR, GROUPS)


def test_curve_by_hand() -> None:
    curve = compute_frontier(REFERENCE.astype(np.float32), LABELS, GROUPS, PRIOR)
    t = np.array(curve["t"])
    assert curve["t"] == list(FRONTIER_GRID) and len(t) == 61 and t[0] == -1.0 and t[-1] == 2.0
    np.testing.assert_array_equal(curve["many"], (t <= 0.5).astype(float))
    np.testing.assert_array_equal(curve["few"], (t >= 0.55).astype(float))
    np.testing.assert_array_equal(curve["medium"], (t <= 1.0).astype(float))
    np.testing.assert_allclose(curve["overall"], ((t <= 0.5).astype(int) + (t >= 0.55) + (t <= 1.0)) / 3)


def test_best_point_at_a_many_accuracy() -> None:
    curve = compute_frontier(BETTER.astype(np.float32), LABELS, GROUPS, PRIOR)
    at = compute_at_many(curve, 1.0)  # many = 1 up to t = 0.5; few = 1 from t = 0.1: the least t there
    assert at == {"t": pytest.approx(0.1), "overall": 1.0, "many": 1.0, "medium": 1.0, "few": 1.0}
    half = compute_at_many(curve, 0.5)  # between t = 0.5 (many 1) and 0.55 (many 0): halfway
    assert half["t"] == pytest.approx(0.525) and half["overall"] == pytest.approx(5 / 6)


def test_a_gain_lies_above_the_reference() -> None:
    result = _compare(BETTER)
    assert result["val"]["t"] == pytest.approx(0.1) and result["val"]["reference_t"] == 0.0
    assert result["val"]["few_at_matched_many"] == pytest.approx(1.0)
    assert result["val"]["overall_at_matched_many"] == pytest.approx(1 / 3)
    assert result["test"] == {"overall": pytest.approx(1 / 3), "many": 0.0, "medium": 0.0, "few": 1.0}


def test_a_threshold_move_and_the_reference_itself_score_zero() -> None:
    for logits in (SHIFTED, REFERENCE):
        result = _compare(logits)
        assert result["val"]["few_at_matched_many"] == 0.0 and result["val"]["overall_at_matched_many"] == 0.0
        assert result["test"] == {"overall": 0.0, "many": 0.0, "medium": 0.0, "few": 0.0}
    # As trained (t = 0) the shifted run is the reference at t = 0.55: few 1 and many 0, a trade that the
    # comparison sees through (its t = -0.05 is the reference as trained).
    shifted = compute_frontier(SHIFTED.astype(np.float32), LABELS, GROUPS, PRIOR)
    assert shifted["few"][FRONTIER_GRID.index(0.0)] == 1.0 and shifted["many"][FRONTIER_GRID.index(0.0)] == 0.0
    assert _compare(SHIFTED)["val"]["t"] == pytest.approx(-0.05)


def test_a_curve_that_never_reaches_the_reference_many_has_no_comparison() -> None:
    result = _compare(NEVER)
    assert result["val"] == {"t": None, "reference_t": None, "few_at_matched_many": None,
                             "overall_at_matched_many": None}
    assert result["test"] is None
