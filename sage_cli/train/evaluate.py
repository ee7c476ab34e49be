"""Validation during training: overall and many / medium / few top-1 of the classifier's logits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sage_cli.artifacts import GROUPS
from sage_cli.data import build_loader, iterate_batches
from sage_cli.precision import autocast
from sage_cli.train.distributed import DistContext


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
def predict(classifier: nn.Module, loader: DataLoader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Arg-max predictions [N] and labels [N] of ``classifier`` over ``loader``; the model is left as found.

    Batches may be ``(images, labels, ...)`` tuples or :class:`~sage_cli.data.MicroBatch` es (an
    all-skipped batch, images None, is passed over).
    """
    was_training = classifier.training
    classifier.eval()
    predictions, labels = [], []
    for batch in iterate_batches(loader):
        images, batch_labels = batch[0], batch[1]
        if images is None:
            continue
        with autocast(device):
            logits = classifier(images.to(device, non_blocking=True))  # [B, C]
        predictions.append(logits.argmax(dim=-1))
        labels.append(batch_labels)
    classifier.train(was_training)
    if not labels:
        return np.array([], dtype=np.int64), np.array([], dtype=np.int64)
    return torch.cat(predictions).cpu().numpy(), torch.cat(labels).numpy()


@torch.no_grad()
def compute_image_features(visual: nn.Module, loader: DataLoader, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised image features [N, E] (float32, CPU) and labels [N] of ``visual`` over ``loader``, in order."""
    features, labels = [], []
    for batch in iterate_batches(loader):
        images, batch_labels = batch[0], batch[1]
        if images is None:
            continue
        with autocast(device):
            out = visual(images.to(device, non_blocking=True))
        out = out[0] if isinstance(out, tuple) else out
        features.append(torch.nn.functional.normalize(out.float(), dim=-1).cpu())
        labels.append(batch_labels)
    if not labels:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    return torch.cat(features), torch.cat(labels)


def compute_sharded_image_features(
    visual: nn.Module, dataset: Dataset, batch_size: int, num_workers: int | None, device: torch.device,
    dist_ctx: DistContext,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`compute_image_features` of ``visual`` over ``dataset``, the work split over the ranks.

    Each rank encodes its contiguous block (:meth:`DistContext.shard`) and the blocks are gathered
    in rank order, so every rank returns what one process encoding it all would (in dataset order,
    unreadable images left out).
    """
    loader = build_loader(dataset, batch_size, num_workers, device, sampler=dist_ctx.shard(len(dataset)))
    features, labels = compute_image_features(visual, loader, device)
    if not dist_ctx.enabled:
        return features, labels
    blocks = [(f, y) for f, y in dist_ctx.gather_objects((features, labels)) if len(y)]  # a rank may have none
    if not blocks:
        return features, labels
    return torch.cat([f for f, _ in blocks]), torch.cat([y for _, y in blocks])


def summarise_predictions(predictions: np.ndarray, labels: np.ndarray, groups: Sequence[str]) -> dict[str, Any]:
    """``samples`` and the top-1 figures of :func:`compute_group_top1`."""
    return {"samples": int(len(labels)), **compute_group_top1(predictions, labels, groups)}


def evaluate(
    classifier: nn.Module, loader: DataLoader, groups: Sequence[str], device: torch.device
) -> dict[str, Any]:
    """Top-1 (overall, many, medium, few) of ``classifier`` on ``loader``; the model is left as found."""
    return summarise_predictions(*predict(classifier, loader, device), groups)
