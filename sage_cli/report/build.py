"""The report as data: every figure of every run, computed from cached predictions.

:func:`compute_run_metrics` turns one run's :class:`Predictions` into a JSON-ready dict;
:func:`build_report` assembles report.json; :func:`build_per_class_table` the rows of
per_class.parquet. NaN never reaches JSON: a figure without samples is ``None``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sage_cli import metrics
from sage_cli.artifacts import GROUPS
from sage_cli.report import seeds
from sage_cli.report.predictions import Predictions
from sage_cli.report.sources import Source, TestSet

logger = logging.getLogger(__name__)

HEADLINE = ("top1", "top5", "many", "medium", "few")  # the figures of the summary tables
CONFUSED_PAIRS = 10  # in report.json, report.md and report.html alike
FULL_CONFUSION_MAX_CLASSES = 100  # report.json keeps the full confusion matrix up to this many classes
METRICS_LOG = "metrics.jsonl"  # what sage train writes beside its checkpoint
HISTORY_POINTS = 500  # training records kept per run for the curves (evenly thinned beyond this)
TRAIN_FIELDS = ("step", "epoch", "loss", "lr", "images_per_s")
EVAL_FIELDS = ("step", "epoch", "split", "top1", "many", "medium", "few")


def _clean(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def compute_run_metrics(predictions: Predictions, test_set: TestSet) -> dict[str, Any]:
    """Overall top-1/top-5, group top-1, per-class accuracy and LIFT's class summaries (worst, harmonic and
    geometric mean, macro-F1), prediction share, ECE, confusions."""
    labels, top1 = predictions.labels, predictions.top1
    classes = test_set.classes
    num_classes, groups = len(classes), classes["group"].tolist()
    per_class = metrics.compute_per_class_accuracy(top1, labels, num_classes)
    k = min(5, predictions.top_classes.shape[1])
    names = classes["name"].tolist()
    return {
        "num_samples": len(labels),
        "top1": metrics.compute_topk_accuracy(predictions.top_classes, labels, 1),
        "top5": metrics.compute_topk_accuracy(predictions.top_classes, labels, k),
        **metrics.compute_group_accuracy(top1, labels, groups),
        "mean_class_accuracy": _clean(float(np.nanmean(per_class)) if np.isfinite(per_class).any() else None),
        **metrics.compute_class_accuracy_summaries(per_class),
        "macro_f1": _clean(metrics.compute_macro_f1(top1, labels, num_classes)),
        "ece": _clean(metrics.compute_ece(predictions.confidence, top1 == labels)),
        "prediction_share": metrics.compute_prediction_share(top1, labels, groups),
        "never_predicted": int(num_classes - len(np.unique(top1))),
        "predicted_count": [int(c) for c in np.bincount(top1, minlength=num_classes)],
        "reliability": metrics.compute_reliability(predictions.confidence, top1 == labels),
        "confusion_groups": metrics.compute_group_confusion(top1, labels, groups).tolist(),
        "confusion": (metrics.compute_confusion_counts(top1, labels, num_classes).tolist()
                      if num_classes <= FULL_CONFUSION_MAX_CLASSES else None),
        "confused_pairs": [
            {"true": t, "true_name": names[t], "predicted": p, "predicted_name": names[p], "count": c}
            for t, p, c in metrics.compute_confused_pairs(top1, labels, num_classes, CONFUSED_PAIRS)
        ],
        "per_class_accuracy": [_clean(float(a)) for a in per_class],
    }


def check_predictions_fit(predictions: Predictions, test_set: TestSet, name: str) -> None:
    """Predictions must cover exactly the split's samples with its labels (guards a stale cache)."""
    expected = test_set.samples
    if not (np.array_equal(predictions.sample_ids, expected["sample_id"].to_numpy())
            and np.array_equal(predictions.labels, expected["label"].to_numpy())):
        raise ValueError(f"{name}: predictions do not match the {test_set.split} split's samples")


def compute_deltas(runs: list[dict[str, Any]]) -> list[dict[str, float | None]]:
    """Each run's headline figures minus the first run's (the first row's deltas are all None)."""
    base = runs[0]["metrics"]
    out = []
    for i, run in enumerate(runs):
        row: dict[str, Any] = {"name": run["name"]}
        for key in HEADLINE:
            a, b = run["metrics"].get(key), base.get(key)
            row[key] = None if i == 0 or a is None or b is None else a - b
        out.append(row)
    return out


def build_run_entry(source: Source, run_metrics: dict[str, Any], evaluation: dict[str, Any],
                    tau: float | None = None) -> dict[str, Any]:
    """One run's part of report.json; ``group`` is filled in by :func:`seeds.assign_groups`.

    ``tau``: the entry re-scores the source's saved logits with post-hoc logit adjustment.
    """
    return {
        "name": source.name,
        "kind": source.kind,
        "method": str(source.config.get("method") or source.kind),
        "seed": seeds.run_seed(source.config),
        "posthoc_tau": tau,
        "configuration": seeds.compute_configuration_key(source.config, source.kind, tau),
        "group": None,
        "location": str(source.location.resolve()),
        "identity": source.identity,
        "config": source.config,
        "weights": source.config.get("weights") if source.kind == "run" else None,  # which weights were evaluated
        "evaluation": evaluation,
        "metrics": run_metrics,
        "history": load_history(source.location / METRICS_LOG) if source.kind == "run" and tau is None else None,
    }


def build_dataset_entry(test_set: TestSet) -> dict[str, Any]:
    classes = test_set.classes
    n_test = metrics.compute_sample_counts(test_set.samples["label"].to_numpy(), len(classes))
    return {
        **test_set.summary(),
        "groups": {g: int((classes["group"] == g).sum()) for g in GROUPS},
        "classes": {
            "name": classes["name"].tolist(),
            "group": classes["group"].tolist(),
            "train_count": [int(c) for c in classes["train_count"]],
            "n_test": [int(c) for c in n_test],
        },
    }


def build_per_class_table(report: dict[str, Any]) -> pd.DataFrame:
    """One row per (run, class): run, method, seed, run_group, class_id, name, group, counts, accuracy.

    ``group`` is the class's many / medium / few group; ``run_group`` the run's seed group.
    """
    classes = report["dataset"]["classes"]
    frames = []
    for run in report["runs"]:
        accuracy = [np.nan if a is None else a for a in run["metrics"]["per_class_accuracy"]]
        frames.append(pd.DataFrame({
            "run": run["name"],
            "method": run.get("method"),
            "seed": pd.array([run.get("seed")] * len(accuracy), dtype="Int64"),
            "run_group": run.get("group"),
            "class_id": np.arange(len(accuracy), dtype=np.int64),
            "name": classes["name"],
            "group": classes["group"],
            "train_count": np.asarray(classes["train_count"], dtype=np.int64),
            "n_test": np.asarray(classes["n_test"], dtype=np.int64),
            "accuracy": np.asarray(accuracy, dtype=np.float64),
        }))
    return pd.concat(frames, ignore_index=True)


def load_history(metrics_path: Path) -> dict[str, list[dict[str, Any]]] | None:
    """A run's training and evaluation records from its metrics.jsonl (None when it has none).

    Training records beyond :data:`HISTORY_POINTS` are thinned evenly (the last one is kept); a
    line that is not a JSON object is skipped with a warning naming it.
    """
    if not metrics_path.is_file():
        return None
    train, evals = [], []
    for number, line in enumerate(metrics_path.read_text().splitlines(), start=1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            logger.warning("%s:%d: not a JSON line; left out of the curves", metrics_path, number)
            continue
        if not isinstance(entry, dict):
            continue
        if entry.get("kind") == "train":
            train.append({k: entry.get(k) for k in TRAIN_FIELDS})
        elif entry.get("kind") == "eval":
            evals.append({k: entry.get(k) for k in EVAL_FIELDS})
    if len(train) > HISTORY_POINTS:
        keep = np.unique(np.linspace(0, len(train) - 1, HISTORY_POINTS).round().astype(int))
        train = [train[i] for i in keep]
    return {"train": train, "eval": evals} if train or evals else None
