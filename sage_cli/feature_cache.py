"""Frozen image features: one no-augmentation pass of the frozen tower per split, kept on disk.

Head-only training (``--method linear``) never changes the image tower, and without augmentation
its output for an image never changes either; recomputing it every epoch is most of such a run's
cost. :func:`load_or_compute_features` runs the tower once per split and stores its output.

Layout: ``DIR/<key>/`` holds ``features.json`` (the key's inputs, the splits stored) and one
``<split>.safetensors`` per split: ``sample_id`` [N] int64 and ``features`` [N, D] float32 (the
feature the head reads, before L2 normalisation: the tower's output, or its class token before
``proj`` for a pre-proj head). The key is a hash of the backbone's identity (model and weights:
tag or file hash), the eval preprocessing (size, interpolation, resize mode and eval resize, mean,
std), the head's feature space when it is pre-proj,
the precision of the pass (the run's ``--precision``; auto: fp32 on CPU, bf16 autocast on CUDA)
and the prepared dataset's fingerprint; so one directory holds the features of many models side
by side and a lookup never returns features of another model, weights, preprocessing or dataset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

from sage_cli import artifacts
from sage_cli.backbone import backbone_identity
from sage_cli.data import Key, PreparedData, build_loader, iterate_batches
from sage_cli.errors import SageError
from sage_cli.locks import lock_output_dir
from sage_cli.precision import autocast, describe_precision

logger = logging.getLogger(__name__)

RECORD = "features.json"
STAGE = "features"
KEY_CHARS = 16


@dataclass(frozen=True)
class FeatureSet:
    """The frozen tower's output for the samples of one split, in split order."""

    sample_ids: torch.Tensor  # [N] int64
    features: torch.Tensor  # [N, E] float32, before L2 normalisation


def compute_key_inputs(backbone: dict[str, Any], data: PreparedData, device: torch.device,
                       head_feature: str = "projected", precision: str = "auto") -> dict[str, Any]:
    """What decides the features besides the images: the key's inputs (see the module doc). The
    keys of open_clip's eval resize and the projected feature are those of caches written before
    those choices existed, so such caches stay valid."""
    preprocessing = {k: backbone[k] for k in ("image_size", "interpolation", "resize_mode", "mean", "std")}
    if backbone.get("eval_resize", "clip") != "clip":
        preprocessing["eval_resize"] = backbone["eval_resize"]
    inputs = {
        "backbone": backbone_identity(backbone),
        "preprocessing": preprocessing,
        "precision": describe_precision(device, precision),
        "prepared": data.record["fingerprint"],
    }
    return {**inputs, "head_feature": head_feature} if head_feature != "projected" else inputs


def feature_dir(directory: Path, inputs: dict[str, Any]) -> Path:
    return Path(directory) / artifacts.sha256_json(inputs)[:KEY_CHARS]


@torch.no_grad()
def compute_features(encode: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[Any],
                     device: torch.device, precision: str = "auto") -> FeatureSet:
    """``encode``'s output [N, D] (a frozen tower's) over ``batches`` of ``(images, labels, sample_ids)``, in order."""
    ids, parts = [], []
    for batch in iterate_batches(batches):
        images, sample_ids = batch[0], batch[2]
        if images is None:
            raise SageError("an image of the split is unreadable; cached features need every image")
        with autocast(device, precision):
            out = encode(images.to(device, non_blocking=True))
        out = out[0] if isinstance(out, tuple) else out
        parts.append(out.float().cpu())
        ids.append(torch.as_tensor(sample_ids, dtype=torch.int64))
    if not parts:
        raise SageError("the split has no samples to compute features of")
    return FeatureSet(torch.cat(ids), torch.cat(parts))


def load_or_compute_features(
    directory: Path, inputs: dict[str, Any], split: str, encode: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset,
    expected_ids: np.ndarray, device: torch.device, batch_size: int, num_workers: int | None,
    precision: str = "auto",
) -> tuple[FeatureSet, bool]:
    """(the features of ``split``, whether they were read from disk); computed and saved if absent.

    ``dataset`` yields the split's un-augmented eval tensors in ``expected_ids`` order; ``encode``
    maps a batch of them to the features (the frozen classifier's h(x)).
    """
    where = feature_dir(directory, inputs)
    path = where / f"{split}.safetensors"
    if not path.is_file():
        with lock_output_dir(where, STAGE):  # one writer at a time; a second is refused, naming it
            if not path.is_file():
                logger.info("computing frozen features of the %s split (%d images) into %s", split, len(dataset), where)
                loader = build_loader(dataset, batch_size, num_workers, device)
                features = compute_features(encode, loader, device, precision)
                save_features(where, split, features, inputs)
                return check_ids(features, expected_ids, path, where), False
    check_record(where, inputs)
    return check_ids(load_features(path), expected_ids, path, where), True


def check_ids(features: FeatureSet, expected_ids: np.ndarray, path: Path, where: Path) -> FeatureSet:
    if not np.array_equal(features.sample_ids.numpy(), expected_ids):
        raise SageError(f"{path}: holds other samples than the split; delete {where} to recompute")
    return features


def check_record(where: Path, inputs: dict[str, Any]) -> dict[str, Any]:
    record = artifacts.read_record(where, RECORD)
    if record.get("inputs") != inputs:
        raise SageError(f"{where / RECORD}: features of other inputs under this key; delete {where} to recompute")
    return record


def load_features(path: Path) -> FeatureSet:
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise SageError(f"{path}: not a readable features file ({exc}); delete it to recompute") from None
    if set(tensors) != {"sample_id", "features"} or tensors["features"].ndim != 2:
        raise SageError(f"{path}: not a features file (expected sample_id [N] and features [N, E])")
    return FeatureSet(tensors["sample_id"], tensors["features"])


def save_features(where: Path, split: str, features: FeatureSet, inputs: dict[str, Any]) -> None:
    """Write ``<split>.safetensors`` atomically, then the record listing it."""
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{split}.safetensors"
    with artifacts.atomic_path(path) as tmp:
        save_file({"sample_id": features.sample_ids.contiguous(), "features": features.features.contiguous()}, str(tmp))
    splits = {}
    if (where / RECORD).is_file():
        splits = check_record(where, inputs).get("splits", {})
    splits[split] = {"samples": len(features.sample_ids), "dim": int(features.features.shape[1]),
                     "sha256": artifacts.sha256_file(path)}
    artifacts.write_record(where, RECORD, artifacts.build_record(STAGE, inputs, splits=splits))


class FeatureDataset(Dataset):
    """``(feature [E], label, sample_id)`` of one split; keys as :class:`~sage_cli.data.ManifestDataset`'s
    (a seed is accepted and unused: features have no augmentation)."""

    def __init__(self, features: FeatureSet, labels: np.ndarray) -> None:
        self.features = features.features
        self.sample_ids = features.sample_ids.numpy()
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, int, int]:
        index = key[0] if isinstance(key, tuple) else key
        return self.features[index], int(self.labels[index]), int(self.sample_ids[index])
