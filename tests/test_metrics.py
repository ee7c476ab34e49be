"""Metric functions against hand-computed values (ties, empty groups, a class never predicted)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sage_cli import metrics


def test_top_classes_breaks_ties_by_lowest_class_id() -> None:
    scores = np.array([[0.2, 0.5, 0.5, 0.1], [0.25, 0.25, 0.25, 0.25], [0.0, 0.1, 0.3, 0.9]])
    top, top_scores = metrics.compute_top_classes(scores, k=3)
    assert top.tolist() == [[1, 2, 0], [0, 1, 2], [3, 2, 1]]
    np.testing.assert_allclose(top_scores, [[0.5, 0.5, 0.2], [0.25, 0.25, 0.25], [0.9, 0.3, 0.1]])


def test_top_classes_caps_k_at_class_count() -> None:
    top, _ = metrics.compute_top_classes(np.array([[1.0, 3.0]]), k=5)
    assert top.tolist() == [[1, 0]]


def test_topk_accuracy_hand_computed() -> None:
    top = np.array([[0, 1, 2], [1, 0, 2], [2, 1, 0], [1, 2, 0]])
    labels = np.array([0, 0, 0, 0])
    assert metrics.compute_topk_accuracy(top, labels, 1) == pytest.approx(1 / 4)
    assert metrics.compute_topk_accuracy(top, labels, 2) == pytest.approx(2 / 4)
    assert metrics.compute_topk_accuracy(top, labels, 3) == pytest.approx(4 / 4)
    with pytest.raises(ValueError, match="top-4"):
        metrics.compute_topk_accuracy(top, labels, 4)


def test_per_class_accuracy_nan_for_class_without_samples_and_zero_for_never_predicted() -> None:
    labels = np.array([0, 0, 0, 1, 1, 3])
    preds = np.array([0, 0, 1, 0, 0, 3])  # class 1 never predicted correctly; class 2 has no sample
    acc = metrics.compute_per_class_accuracy(preds, labels, num_classes=4)
    assert acc[0] == pytest.approx(2 / 3)
    assert acc[1] == 0.0
    assert math.isnan(acc[2])
    assert acc[3] == 1.0
    assert np.nanmean(acc) == pytest.approx((2 / 3 + 0 + 1) / 3)  # NaN excluded from means


def test_group_accuracy_per_sample_and_empty_group_is_none() -> None:
    groups = ["many", "many", "few"]  # no medium class
    labels = np.array([0, 0, 1, 2, 2, 2])
    preds = np.array([0, 1, 1, 2, 0, 0])
    acc = metrics.compute_group_accuracy(preds, labels, groups)
    assert acc["many"] == pytest.approx(2 / 3)  # samples 0,1,2: right, wrong, right
    assert acc["few"] == pytest.approx(1 / 3)
    assert acc["medium"] is None


def test_prediction_share_shows_head_bias() -> None:
    groups = ["many", "medium", "few", "few"]
    labels = np.array([0, 1, 2, 3])  # balanced: 1/4 many, 1/4 medium, 1/2 few
    preds = np.array([0, 0, 0, 3])  # class 1, 2 never predicted
    share = metrics.compute_prediction_share(preds, labels, groups)
    assert share["many"] == {"predicted": 0.75, "true": 0.25}
    assert share["medium"] == {"predicted": 0.0, "true": 0.25}
    assert share["few"] == {"predicted": 0.25, "true": 0.5}


def test_prediction_share_empty_is_none() -> None:
    share = metrics.compute_prediction_share(np.array([], int), np.array([], int), ["many"])
    assert share["many"] == {"predicted": None, "true": None}


def test_ece_hand_computed() -> None:
    # 15 bins of width 1/15. 0.95 and 0.99 share bin 14; 0.5 is bin 7 ((7/15, 8/15]); 0.3 bin 4.
    conf = np.array([0.95, 0.99, 0.5, 0.3])
    correct = np.array([1, 0, 1, 0])
    # bin 14: 2 samples, acc 0.5, conf 0.97 -> gap 0.47; bin 7: gap 0.5; bin 4: gap 0.3
    expected = (2 * 0.47 + 0.5 + 0.3) / 4
    assert metrics.compute_ece(conf, correct) == pytest.approx(expected)


def test_ece_bin_edges_are_right_closed() -> None:
    # 1/15 sits in bin 0 together with 0.05: |0.5 - mean(1/15, 0.05)|
    conf = np.array([1 / 15, 0.05])
    correct = np.array([1, 0])
    assert metrics.compute_ece(conf, correct) == pytest.approx(abs(0.5 - (1 / 15 + 0.05) / 2))
    assert metrics.compute_ece(np.array([1.0, 1.0]), np.array([1, 1])) == 0.0
    assert math.isnan(metrics.compute_ece(np.array([]), np.array([])))


def test_confused_pairs_ordered_by_count_then_ids() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3])
    preds = np.array([1, 1, 0, 0, 2, 0, 0, 1, 3])
    # off-diagonal counts: (0->1)=2, (2->0)=2, (1->0)=1, (1->2)=1, (2->1)=1
    pairs = metrics.compute_confused_pairs(preds, labels, num_classes=4, top_n=4)
    assert pairs == [(0, 1, 2), (2, 0, 2), (1, 0, 1), (1, 2, 1)]


def test_confused_pairs_none_when_all_correct() -> None:
    labels = np.array([0, 1, 2])
    assert metrics.compute_confused_pairs(labels, labels, num_classes=3) == []


def test_confusion_counts() -> None:
    counts = metrics.compute_confusion_counts(np.array([1, 1, 0]), np.array([0, 1, 0]), 2)
    assert counts.tolist() == [[1, 1], [0, 1]]


def test_reliability_bins_by_hand() -> None:
    from sage_cli.metrics import compute_ece, compute_reliability

    conf = np.array([0.1, 0.15, 0.9, 0.95, 1.0])
    correct = np.array([0, 1, 1, 1, 0])
    rel = compute_reliability(conf, correct, n_bins=2)  # bins (0, 0.5] and (0.5, 1]
    assert rel["count"] == [2, 3]
    assert rel["confidence"] == [pytest.approx(0.125), pytest.approx(0.95)]
    assert rel["accuracy"] == [pytest.approx(0.5), pytest.approx(2 / 3)]
    ece = (2 * abs(0.5 - 0.125) + 3 * abs(2 / 3 - 0.95)) / 5
    assert compute_ece(conf, correct, n_bins=2) == pytest.approx(ece)
    empty = compute_reliability(np.array([0.9]), np.array([1]), n_bins=3)
    assert empty["count"] == [0, 0, 1] and empty["accuracy"][:2] == [None, None]


def test_group_confusion_by_hand() -> None:
    from sage_cli.metrics import compute_group_confusion

    groups = ["many", "medium", "few", "few"]
    labels = np.array([0, 0, 1, 2, 3, 3])
    predictions = np.array([0, 2, 0, 3, 3, 1])
    expected = [[1, 0, 1],  # many: one right, one to a few class
                [1, 0, 0],  # medium: to many
                [0, 1, 2]]  # few: class 2 -> 3 (few), 3 -> 3 (few), 3 -> 1 (medium)
    assert compute_group_confusion(predictions, labels, groups).tolist() == expected


def test_macro_f1_averages_the_classes_present_as_lift_does() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2])
    predictions = np.array([0, 0, 1, 1, 3, 2])  # class 3 has no sample: predicted once, not averaged
    # class 0: TP 2, predicted 2, actual 3 -> 4/5; class 1: TP 1, predicted 2, actual 2 -> 2/4; class 2: 2/2
    assert metrics.compute_macro_f1(predictions, labels, 4) == pytest.approx((0.8 + 0.5 + 1.0) / 3)
    assert metrics.compute_macro_f1(np.array([1, 0]), np.array([0, 1]), 2) == 0.0  # no TP: F1 = 0, not NaN
    assert math.isnan(metrics.compute_macro_f1(np.array([], dtype=int), np.array([], dtype=int), 3))


def test_class_summaries_follow_lift_definitions() -> None:
    summary = metrics.compute_class_accuracy_summaries(np.array([2 / 3, 1 / 2, 1.0, np.nan]))  # NaN: no sample
    assert summary["worst_class_accuracy"] == pytest.approx(0.5)
    assert summary["hmean_class_accuracy"] == pytest.approx(1 / ((1.5 + 2.0 + 1.0) / 3))  # = 2/3
    assert summary["gmean_class_accuracy"] == pytest.approx((1 / 3) ** (1 / 3))
    zero = metrics.compute_class_accuracy_summaries(np.array([0.0, 1.0]))
    # LIFT: 100 / mean(1 / (max(acc %, 0.001) / 100)) -> a class at 0 counts as 0.001 %; gmean is 0.
    assert zero["hmean_class_accuracy"] == pytest.approx(2 / (1e5 + 1))
    assert zero["gmean_class_accuracy"] == 0.0 and zero["worst_class_accuracy"] == 0.0
    many = metrics.compute_class_accuracy_summaries(np.full(8142, 0.5))  # LIFT's product underflows to 0 here
    assert many["gmean_class_accuracy"] == pytest.approx(0.5)
    assert metrics.compute_class_accuracy_summaries(np.array([np.nan]))["worst_class_accuracy"] is None
