"""Loading a trained run back for evaluation: backbone, classifier and weights from train.json."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from sage_cli import artifacts
from sage_cli.backbone import LoadedClip
from sage_cli.encode_text import check_text_cache_matches, load_text_cache
from sage_cli.errors import SageError
from sage_cli.model import AdapterConfig, SageClassifier, build_classifier
from sage_cli.train import checkpoint as ckpt
from sage_cli.train.core import ADAPTER
from sage_cli.train.inputs import build_backbone, text_cache_dir


def load_trained_classifier(
    run_dir: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[SageClassifier, LoadedClip, dict[str, Any]]:
    """Rebuild a run's classifier in eval mode: (classifier, backbone, train.json record).

    The backbone comes from the record's model / weights, the class embeddings from the recorded
    text cache (which must be unchanged), the weights from ``RUN_DIR/adapter.safetensors`` or
    ``checkpoint`` (a ``.safetensors`` file or a checkpoint directory). A missing or damaged
    file is a one-line SageError naming it.
    """
    run_dir = Path(run_dir)
    record = artifacts.read_record(run_dir, artifacts.TRAIN_RECORD)
    weights_path = resolve_weights_path(run_dir, checkpoint)
    weights = ckpt.load_weights(weights_path)  # checked before the backbone is built
    cache = load_text_cache(text_cache_dir(record, run_dir))
    recorded = record.get("inputs", {}).get("text_cache", {}).get("fingerprint")
    if recorded and cache.record.get("fingerprint") != recorded:
        raise SageError(f"{cache.directory}: the text cache changed since {run_dir} was trained; re-train the run")
    model = record.get("model", {})
    clip = build_backbone(model["model"], model["pretrained"], device)
    check_text_cache_matches(cache, clip.record)
    adapter = build_adapter_config(record, run_dir)
    classifier = build_classifier(clip.model, cache.class_embeddings, adapter)
    try:
        classifier.load_trainable_state_dict(weights)
    except SageError as exc:
        raise SageError(f"{weights_path}: {exc}") from None
    return classifier.eval(), clip, record


def resolve_weights_path(run_dir: Path, checkpoint: str | os.PathLike[str] | None) -> Path:
    if checkpoint is None:
        return run_dir / ADAPTER
    path = Path(checkpoint)
    return path / ckpt.WEIGHTS if path.is_dir() else path


def build_adapter_config(record: dict[str, Any], run_dir: Path) -> AdapterConfig:
    """The AdapterConfig a run was trained with, from train.json's resolved config."""
    try:
        fields = dict(record["config"]["model"]["adapter"])
    except (KeyError, TypeError):
        raise SageError(f"{run_dir / artifacts.TRAIN_RECORD}: has no adapter config; was it written by sage train?") from None
    if fields.get("blocks") is not None:
        fields["blocks"] = tuple(fields["blocks"])
    return AdapterConfig(**fields)
