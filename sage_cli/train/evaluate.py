"""Validation during training: overall and many / medium / few top-1 of the classifier's logits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sage_cli.artifacts import GROUPS
from sage_cli.data import build_loader, iterate_batches
from sage_cli.model.features import encode_tower
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
def predict(classifier: nn.Module, loader: DataLoader, device: torch.device,
            precision: str = "auto") -> tuple[np.ndarray, np.ndarray]:
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
        with autocast(device, precision):
            logits = classifier(images.to(device, non_blocking=True))  # [B, C]
        predictions.append(logits.argmax(dim=-1))
        labels.append(batch_labels)
    classifier.train(was_training)
    if not labels:
        return np.array([], dtype=np.int64), np.array([], dtype=np.int64)
    return torch.cat(predictions).cpu().numpy(), torch.cat(labels).numpy()


class FrozenFeatures(NamedTuple):
    """The frozen tower's features of a split, L2-normalised, in loader order."""

    features: torch.Tensor  # [N, E] v(x), CLIP's joint space (the zero-shot compensation's)
    labels: torch.Tensor  # [N]
    head: torch.Tensor  # [N, D] the head's feature space (= features for a projected head)


@torch.no_grad()
def compute_image_features(visual: nn.Module, loader: DataLoader, device: torch.device,
                           pre_projection: bool = False, precision: str = "auto") -> FrozenFeatures:
    """L2-normalised image features (float32, CPU) and labels of ``visual`` over ``loader``, in order:
    v(x) in the joint space and, for a ``pre_projection`` head, h(x) before ``proj`` too."""
    features, labels, heads = [], [], []
    for batch in iterate_batches(loader):
        images, batch_labels = batch[0], batch[1]
        if images is None:
            continue
        with autocast(device, precision):
            head, joint = encode_tower(visual, images.to(device, non_blocking=True), pre_projection)
        features.append(F.normalize(joint.float(), dim=-1).cpu())
        heads.append(F.normalize(head.float(), dim=-1).cpu() if pre_projection else features[-1])
        labels.append(batch_labels)
    if not labels:
        empty = torch.zeros(0, 0)
        return FrozenFeatures(empty, torch.zeros(0, dtype=torch.long), empty)
    return FrozenFeatures(torch.cat(features), torch.cat(labels), torch.cat(heads))


def compute_sharded_image_features(
    visual: nn.Module, dataset: Dataset, batch_size: int, num_workers: int | None, device: torch.device,
    dist_ctx: DistContext, pre_projection: bool = False, precision: str = "auto",
) -> FrozenFeatures:
    """:func:`compute_image_features` of ``visual`` over ``dataset``, the work split over the ranks.

    Each rank encodes its contiguous block (:meth:`DistContext.shard`) and the blocks are gathered
    in rank order, so every rank returns what one process encoding it all would (in dataset order,
    unreadable images left out).
    """
    loader = build_loader(dataset, batch_size, num_workers, device, sampler=dist_ctx.shard(len(dataset)))
    frozen = compute_image_features(visual, loader, device, pre_projection, precision)
    if not dist_ctx.enabled:
        return frozen
    blocks = [block for block in dist_ctx.gather_objects(tuple(frozen)) if len(block[1])]  # a rank may have none
    if not blocks:
        return frozen
    return FrozenFeatures(*(torch.cat(parts) for parts in zip(*blocks)))


def summarise_predictions(predictions: np.ndarray, labels: np.ndarray, groups: Sequence[str]) -> dict[str, Any]:
    """``samples`` and the top-1 figures of :func:`compute_group_top1`."""
    return {"samples": int(len(labels)), **compute_group_top1(predictions, labels, groups)}


def evaluate(
    classifier: nn.Module, loader: DataLoader, groups: Sequence[str], device: torch.device
) -> dict[str, Any]:
    """Top-1 (overall, many, medium, few) of ``classifier`` on ``loader``; the model is left as found."""
    return summarise_predictions(*predict(classifier, loader, device), groups)
