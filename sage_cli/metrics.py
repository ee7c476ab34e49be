"""Evaluation metrics for long-tailed recognition: pure functions on numpy arrays.

Conventions shared by every function here:

- ``labels`` [N] int: true class ids in ``0..C-1``; ``predictions`` [N] int: top-1 class ids.
- ``top_classes`` [N, k] int: ranked class ids per sample, best first.
- ``groups`` [C] str: the group (``many`` / ``medium`` / ``few``) of each class id.
- Ties in a ranking are broken by class id, lowest first (:func:`compute_top_classes` sorts
  stably), so a row of equal scores predicts class 0.
- A figure with no samples behind it is ``NaN`` (arrays) or ``None`` (dicts): never a silent 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sage_cli.artifacts import GROUPS

ECE_BINS = 15


def compute_top_classes(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best classes per row of ``scores`` [N, C] and their scores, best first.

    Equal scores rank by class id, lowest first (a stable sort of the negated scores).
    """
    scores = np.asarray(scores)
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # [N, k]
    return order, np.take_along_axis(scores, order, axis=1)


def compute_topk_accuracy(top_classes: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of samples whose label is among the first ``k`` columns of ``top_classes``."""
    top_classes, labels = np.asarray(top_classes), np.asarray(labels)
    if top_classes.ndim != 2 or top_classes.shape[1] < k:
        raise ValueError(f"top-{k} accuracy needs at least {k} ranked classes per sample")
    if len(labels) == 0:
        return float("nan")
    hits = (top_classes[:, :k] == labels[:, None]).any(axis=1)
    return float(hits.mean())


def compute_per_class_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Top-1 accuracy of each class [C]; ``NaN`` for a class with no sample."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    n = np.bincount(labels, minlength=num_classes).astype(float)
    correct = np.bincount(labels[predictions == labels], minlength=num_classes).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, correct / np.maximum(n, 1), np.nan)


def compute_macro_f1(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Mean over the classes present in ``labels`` of F1 = 2 TP / (2 TP + FP + FN).

    LIFT's definition (scikit-learn's ``f1_score(average="macro", labels=np.unique(labels))``): a
    class with no true positive scores 0; a class absent from ``labels`` is not averaged, though
    predicting it still counts as a false positive of nothing averaged. ``NaN`` with no samples.
    """
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if len(labels) == 0:
        return float("nan")
    tp = np.bincount(labels[predictions == labels], minlength=num_classes).astype(float)
    predicted = np.bincount(predictions, minlength=num_classes).astype(float)  # TP + FP
    actual = np.bincount(labels, minlength=num_classes).astype(float)  # TP + FN
    present = actual > 0
    return float(np.mean(2 * tp[present] / (predicted[present] + actual[present])))


# LIFT floors a class accuracy at 0.001 % in the harmonic mean, so one class at 0 does not make it 0.
HMEAN_FLOOR = 1e-5


def compute_class_accuracy_summaries(per_class: np.ndarray) -> dict[str, float | None]:
    """Worst-class, harmonic-mean and geometric-mean accuracy over the classes with samples.

    LIFT's definitions (``utils/evaluator.py``): the harmonic mean floors each accuracy at
    :data:`HMEAN_FLOOR`; the geometric mean is 0 when any class is at 0. The geometric mean is
    computed as ``exp(mean(log a))``, equal to LIFT's ``prod(a) ** (1 / C)`` except where that
    product underflows to 0 (thousands of classes, e.g. iNaturalist 2018's 8,142). ``None`` when
    no class has samples.
    """
    accuracies = np.asarray(per_class, dtype=float)
    accuracies = accuracies[np.isfinite(accuracies)]
    if len(accuracies) == 0:
        return {"worst_class_accuracy": None, "hmean_class_accuracy": None, "gmean_class_accuracy": None}
    with np.errstate(divide="ignore"):
        gmean = 0.0 if (accuracies == 0).any() else float(np.exp(np.mean(np.log(accuracies))))
    return {
        "worst_class_accuracy": float(accuracies.min()),
        "hmean_class_accuracy": float(1.0 / np.mean(1.0 / np.maximum(accuracies, HMEAN_FLOOR))),
        "gmean_class_accuracy": gmean,
    }


def compute_sample_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Samples per class [C]."""
    return np.bincount(np.asarray(labels), minlength=num_classes)


def compute_group_accuracy(
    predictions: np.ndarray, labels: np.ndarray, groups: Sequence[str]
) -> dict[str, float | None]:
    """Top-1 accuracy over the samples whose class is in each group; ``None`` for an empty group.

    Per sample, not a mean of class accuracies (the two agree on a balanced test split).
    """
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    sample_group = np.asarray(groups, dtype=object)[labels] if len(labels) else np.array([], dtype=object)
    out: dict[str, float | None] = {}
    for group in GROUPS:
        mask = sample_group == group
        out[group] = float((predictions[mask] == labels[mask]).mean()) if mask.any() else None
    return out


def compute_prediction_share(
    predictions: np.ndarray, labels: np.ndarray, groups: Sequence[str]
) -> dict[str, dict[str, float | None]]:
    """Per group: the share of predictions that fall in it and the share of labels that do.

    ``predicted > true`` for ``many`` and ``< true`` for ``few`` is the head bias that logit
    adjustment and the compensation factor are meant to remove. ``None`` when there are no samples.
    """
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    names = np.asarray(groups, dtype=object)
    n = len(labels)
    out: dict[str, dict[str, float | None]] = {}
    for group in GROUPS:
        if n == 0:
            out[group] = {"predicted": None, "true": None}
            continue
        out[group] = {
            "predicted": float((names[predictions] == group).mean()),
            "true": float((names[labels] == group).mean()),
        }
    return out


def compute_ece(confidences: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error over ``n_bins`` equal-width bins of the max softmax probability.

    Bin ``i`` holds confidences in ``(i/n, (i+1)/n]`` (a confidence of exactly 0 goes to bin 0).
    ECE = sum over bins of (bin size / N) * |accuracy in bin - mean confidence in bin|.
    """
    confidences = np.asarray(confidences, dtype=float)
    correct = np.asarray(correct, dtype=float)
    if len(confidences) == 0:
        return float("nan")
    bins = np.clip(np.ceil(confidences * n_bins).astype(int) - 1, 0, n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        mask = bins == b
        total += mask.sum() * abs(correct[mask].mean() - confidences[mask].mean())
    return float(total / len(confidences))


def compute_confusion_counts(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix [C, C]: row = true class, column = predicted class."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    flat = np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def compute_confused_pairs(
    predictions: np.ndarray, labels: np.ndarray, num_classes: int, top_n: int = 10
) -> list[tuple[int, int, int]]:
    """The ``top_n`` most frequent mistakes as ``(true class, predicted class, count)``.

    Ordered by count (highest first), then true class id, then predicted class id.
    """
    confusion = compute_confusion_counts(predictions, labels, num_classes)
    np.fill_diagonal(confusion, 0)
    true_ids, pred_ids = np.nonzero(confusion)  # row-major: already by (true, predicted)
    counts = confusion[true_ids, pred_ids]
    order = np.argsort(-counts, kind="stable")[:top_n]
    return [(int(true_ids[i]), int(pred_ids[i]), int(counts[i])) for i in order]


def compute_reliability(
    confidences: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS
) -> dict[str, list[float | int | None]]:
    """Per confidence bin (the bins of :func:`compute_ece`): sample count, mean confidence, accuracy.

    An empty bin has count 0 and ``None`` confidence and accuracy. ECE is the count-weighted mean of
    ``|accuracy - confidence|`` over these bins.
    """
    confidences = np.asarray(confidences, dtype=float)
    correct = np.asarray(correct, dtype=float)
    bins = np.clip(np.ceil(confidences * n_bins).astype(int) - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    conf_sum = np.bincount(bins, weights=confidences, minlength=n_bins)
    hit_sum = np.bincount(bins, weights=correct, minlength=n_bins)
    return {
        "bins": n_bins,
        "count": [int(c) for c in count],
        "confidence": [float(s / c) if c else None for s, c in zip(conf_sum, count)],
        "accuracy": [float(h / c) if c else None for h, c in zip(hit_sum, count)],
    }


def compute_group_confusion(predictions: np.ndarray, labels: np.ndarray, groups: Sequence[str]) -> np.ndarray:
    """Counts [3, 3] of (true group, predicted group) in the order many, medium, few."""
    index = {g: i for i, g in enumerate(GROUPS)}
    class_group = np.asarray([index[g] for g in groups], dtype=np.int64)
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    flat = np.bincount(class_group[labels] * len(GROUPS) + class_group[predictions], minlength=len(GROUPS) ** 2)
    return flat.reshape(len(GROUPS), len(GROUPS))
