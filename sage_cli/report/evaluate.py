"""Batched, no-grad evaluation of a classifier over one split, and the per-run predictions cache.

The cache is ``predictions.parquet`` (sample_id, label, top-k classes and softmax scores, k =
min(5, C)) plus ``predictions.json``, a record whose fingerprint covers the checkpoint sha256, the
prepared dataset's fingerprint, the split's content hash and the TTE flag. A later report reuses
the cache only when that fingerprint matches; anything else is evaluated again.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sage_cli import artifacts
from sage_cli.artifacts import PREDICTIONS, PREDICTIONS_RECORD
from sage_cli.errors import SageError
from sage_cli.precision import autocast, describe_precision
from sage_cli.report.logits import LOGITS
from sage_cli.report.predictions import TOP_K, Predictions, compute_ranked_scores
from sage_cli.report.tte import compute_ensembled_logits

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class EvalStats:
    seconds: float
    images_per_second: float
    device: str
    precision: str


def evaluate_classifier(
    classifier: torch.nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    device: torch.device,
    total: int,
    progress: Progress | None = None,
    keep_logits: bool = False,
    precision: str = "auto",
) -> tuple[Predictions, EvalStats]:
    """Run ``classifier`` over ``batches`` of (images, labels, sample_ids) under ``precision``'s autocast
    (:mod:`sage_cli.precision`; the run's ``--precision``).

    Images are ``[B, 3, H, W]``, or ``[B, V, 3, H, W]`` for test-time ensembling (logits averaged).
    With ``keep_logits`` the predictions also hold every logit, as float16.
    """
    classifier.eval()
    parts: list[tuple[np.ndarray, ...]] = []
    kept: list[np.ndarray] = []
    done, start = 0, time.perf_counter()
    with torch.inference_mode(), autocast(device, precision):
        for images, labels, sample_ids in batches:
            logits = compute_ensembled_logits(classifier, images.to(device, non_blocking=True))
            top, scores = compute_ranked_scores(logits, TOP_K)
            parts.append((sample_ids.numpy(), labels.numpy(), top.cpu().numpy(), scores.cpu().numpy()))
            if keep_logits:
                kept.append(logits.float().cpu().numpy().astype(np.float16))
            done += len(labels)
            if progress is not None:
                progress("evaluate", done, total)
    seconds = time.perf_counter() - start
    if not parts:
        raise SageError("the split to evaluate has no samples")
    ids, labels, top, scores = (np.concatenate(cols) for cols in zip(*parts))
    predictions = Predictions(ids.astype(np.int64), labels.astype(np.int64), top.astype(np.int64),
                              scores.astype(np.float32), np.concatenate(kept) if kept else None)
    return predictions, EvalStats(seconds, done / max(seconds, 1e-9), str(device),
                                  describe_precision(device, precision))


def save_predictions(directory: Path, predictions: Predictions, record: dict[str, Any],
                     also: dict[str, str] | None = None) -> None:
    """Write the cache: the table first, the record last (a table without record is never reused).

    The record holds the sha256 of the very bytes written here (and ``also``: file name -> sha256
    of other files written with them, the logits; by default those found), never of what is on disk by then: a second
    report writing the same cache at the same moment cannot get its table vouched for by this record.
    """
    (directory / PREDICTIONS_RECORD).unlink(missing_ok=True)
    data = artifacts.serialize_table(artifacts.build_table(PREDICTIONS, {
        "sample_id": predictions.sample_ids,
        "label": predictions.labels,
        "top_classes": [row.tolist() for row in predictions.top_classes],
        "top_scores": [row.tolist() for row in predictions.top_scores],
    }))
    artifacts.write_bytes_atomic(directory / PREDICTIONS.filename, data)
    if also is None:  # logits an earlier --save-logits left: sealed as found (their metadata name their predictions)
        also = artifacts.seal_record(directory, {}, [LOGITS])[artifacts.FILES]
    hashes = {PREDICTIONS.filename: hashlib.sha256(data).hexdigest(), **also}
    artifacts.write_record(directory, PREDICTIONS_RECORD, artifacts.seal_record_hashes(record, hashes))


def load_cached_predictions(directory: Path, fingerprint: str) -> tuple[Predictions, dict[str, Any]] | None:
    """The cached predictions in ``directory`` if their record has ``fingerprint``, else None.

    The table is read once and parsed from the bytes whose sha256 was checked against the record."""
    record_path = directory / PREDICTIONS_RECORD
    path = directory / PREDICTIONS.filename
    if not record_path.is_file() or not path.is_file():
        return None
    try:
        record = artifacts.read_record(directory, PREDICTIONS_RECORD)
        if record.get("fingerprint") != fingerprint:
            return None
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != (record.get(artifacts.FILES) or {}).get(PREDICTIONS.filename):
            raise SageError(f"{path}: changed since {record_path} was written")
        table = artifacts.parse_table(data, PREDICTIONS, path)
    except (SageError, OSError) as exc:
        logger.warning("ignoring the predictions cache in %s: %s", directory, exc)
        return None
    top = np.asarray(table.column("top_classes").to_pylist(), dtype=np.int64)
    scores = np.asarray(table.column("top_scores").to_pylist(), dtype=np.float32)
    predictions = Predictions(
        table.column("sample_id").to_numpy().astype(np.int64),
        table.column("label").to_numpy().astype(np.int64),
        top.reshape(len(table), -1),
        scores.reshape(len(table), -1),
    )
    return predictions, record
