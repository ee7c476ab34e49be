"""Full logits per run (``sage report --save-logits``) and post-hoc logit adjustment (``--tau``).

``RUN_DIR/logits.safetensors`` holds ``logits`` [N, C] float16, ``sample_id`` [N] and ``label`` [N]
int64 in sample order, with the fingerprint of the predictions they belong to in the file's
metadata: a later report reuses them only with that fingerprint. Post-hoc logit adjustment
(Menon et al., 2021) subtracts ``tau * log(prior)`` from the logits, the prior being each class's
share of the training images, and ranks again.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch

from sage_cli import artifacts
from sage_cli.errors import SageError
from sage_cli.report.predictions import TOP_K, Predictions, compute_ranked_scores

logger = logging.getLogger(__name__)

LOGITS = "logits.safetensors"


def save_logits(directory: Path, logits: np.ndarray, predictions: Predictions, fingerprint: str) -> str:
    """Write ``logits`` [N, C] as float16 with the predictions' sample ids and labels, atomically;
    returns the sha256 of the bytes written (for the predictions record)."""
    from sage_cli.train.checkpoint import serialize_weights  # same bytes every time; a full disk is an OSError

    tensors = {
        "logits": torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float16)),
        "sample_id": torch.from_numpy(np.ascontiguousarray(predictions.sample_ids, dtype=np.int64)),
        "label": torch.from_numpy(np.ascontiguousarray(predictions.labels, dtype=np.int64)),
    }
    data = serialize_weights(tensors, {"fingerprint": fingerprint, "dtype": "float16"})
    artifacts.write_bytes_atomic(Path(directory) / LOGITS, data)
    return hashlib.sha256(data).hexdigest()


def load_logits(directory: Path, fingerprint: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(logits [N, C] float16, sample ids, labels) of ``directory`` if saved for ``fingerprint``, else None."""
    from safetensors import safe_open

    path = Path(directory) / LOGITS
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("fingerprint") != fingerprint:
                return None
            return tuple(f.get_tensor(k).numpy() for k in ("logits", "sample_id", "label"))  # type: ignore[return-value]
    except Exception as exc:  # safetensors raises its own error type for damaged files
        logger.warning("ignoring %s: not a readable logits file (%s)", path, exc)
        return None


def compute_class_prior(train_counts: np.ndarray) -> np.ndarray:
    """Each class's share of the training images [C] (a class without images counts as one)."""
    counts = np.maximum(np.asarray(train_counts, dtype=np.float64), 1.0)
    return counts / counts.sum()


def compute_adjusted_logits(logits: np.ndarray, prior: np.ndarray, tau: float) -> np.ndarray:
    """Post-hoc logit adjustment: ``logits - tau * log(prior)`` [N, C], in float32."""
    return np.asarray(logits, dtype=np.float32) - np.float32(tau) * np.log(prior).astype(np.float32)[None, :]


def compute_adjusted_predictions(
    logits: np.ndarray, sample_ids: np.ndarray, labels: np.ndarray, prior: np.ndarray, tau: float
) -> Predictions:
    """The ranked predictions of the adjusted logits (softmax scores of the adjusted logits)."""
    if logits.shape[1] != len(prior):
        raise SageError(f"saved logits have {logits.shape[1]} classes but the dataset has {len(prior)}")
    top, scores = compute_ranked_scores(torch.from_numpy(compute_adjusted_logits(logits, prior, tau)), TOP_K)
    return Predictions(np.asarray(sample_ids, dtype=np.int64), np.asarray(labels, dtype=np.int64),
                       top.numpy().astype(np.int64), scores.numpy().astype(np.float32))
