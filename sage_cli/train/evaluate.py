"""Validation during training: overall and many / medium / few top-1 of the classifier's logits."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from sage_cli.artifacts import GROUPS
from sage_cli.data import iterate_batches


def compute_group_top1(
    predictions: np.ndarray, labels: np.ndarray, groups: Sequence[str]
) -> dict[str, float | None]:
    """Top-1 over all samples, and over the samples of each group's classes (LIFT's convention).

    ``groups`` [C] is each class's group; an empty group gives None, never a silent 0.
    """
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    out: dict[str, float | None] = {"top1": float((predictions == labels).mean()) if len(labels) else None}
    sample_groups = np.asarray(groups, dtype=object)[labels] if len(labels) else np.array([], dtype=object)
    for group in GROUPS:
        mask = sample_groups == group
        out[group] = float((predictions[mask] == labels[mask]).mean()) if mask.any() else None
    return out


@torch.no_grad()
def evaluate(
    classifier: nn.Module, loader: DataLoader, groups: Sequence[str], device: torch.device
) -> dict[str, Any]:
    """Top-1 (overall, many, medium, few) of ``classifier`` on ``loader``; the model is left as found."""
    was_training = classifier.training
    classifier.eval()
    predictions, labels = [], []
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())
    for images, batch_labels, _ in iterate_batches(loader):
        with autocast:
            logits = classifier(images.to(device, non_blocking=True))  # [B, C]
        predictions.append(logits.argmax(dim=-1))
        labels.append(batch_labels)
    classifier.train(was_training)
    if not labels:
        return {"samples": 0, **compute_group_top1(np.array([]), np.array([], dtype=np.int64), groups)}
    pred = torch.cat(predictions).cpu().numpy()
    true = torch.cat(labels).numpy()
    return {"samples": int(len(true)), **compute_group_top1(pred, true, groups)}
