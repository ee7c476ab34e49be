"""What a report evaluates: trained runs and the zero-shot baseline, each on a prepared test set.

A :class:`Source` knows its test set, the hashes that decide its predictions (its cache key) and
how to build its classifier; the classifier is built only when the cache cannot be reused.
:func:`check_same_test_set` refuses a comparison of runs prepared on different test sets.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from sage_cli import artifacts
from sage_cli.errors import SageError

ZERO_SHOT = "zero-shot"
_CLASS_COLUMNS = ["class_id", "name", "train_count", "group"]


@dataclass(frozen=True)
class TestSet:
    """The split of a prepared dataset that a source is evaluated on."""

    prepared: Path
    dataset: str
    prepare_fingerprint: str
    split: str
    split_sha256: str  # content hash of (sample_id, path, label) of the split's rows
    classes_sha256: str  # content hash of (class_id, name, train_count, group)
    samples: pd.DataFrame  # sample_id, path, label of the split, by sample_id
    classes: pd.DataFrame  # class_id, name, train_count, group, by class_id
    image_root: Path
    group_thresholds: dict[str, Any]

    def image_path(self, path: str) -> Path:
        return self.image_root / path

    def summary(self) -> dict[str, Any]:
        return {
            "prepared": str(self.prepared), "dataset": self.dataset, "split": self.split,
            "prepare_fingerprint": self.prepare_fingerprint, "split_sha256": self.split_sha256,
            "classes_sha256": self.classes_sha256, "num_samples": len(self.samples),
            "num_classes": len(self.classes), "group_thresholds": self.group_thresholds,
        }


# A built classifier (eval mode, on the device) and its backbone record (image size, mean, std ...).
Loader = Callable[[torch.device], tuple[torch.nn.Module, dict[str, Any]]]


@dataclass(frozen=True)
class Source:
    """One row of the report: a trained run or the zero-shot baseline."""

    name: str
    kind: str  # "run" | "zero-shot"
    location: Path  # the run directory, or the text cache for zero-shot
    test_set: TestSet
    identity: dict[str, Any]  # what decides the predictions: checkpoint / weights / text hashes
    config: dict[str, Any]  # the run's resolved config (train.json) or the zero-shot settings
    cache_dir: Path  # where predictions.parquet is cached
    build: Loader
    precision: str = "auto"  # the run's --precision: the autocast it is evaluated under


def load_test_set(prepared: str | os.PathLike[str], split: str) -> TestSet:
    """Read the split ``split`` and the class table of the prepared dataset ``prepared``."""
    prepared = Path(prepared)
    record = artifacts.read_record(prepared, artifacts.PREPARE_RECORD)
    manifest = artifacts.read_table(prepared, artifacts.MANIFEST).to_pandas()
    classes = artifacts.read_table(prepared, artifacts.CLASSES).to_pandas()
    classes = classes.sort_values("class_id", ignore_index=True)[_CLASS_COLUMNS]
    samples = manifest[manifest["split"] == split].sort_values("sample_id", ignore_index=True)
    samples = samples[["sample_id", "path", "label"]]
    if samples.empty:
        raise SageError(f"{prepared}: the {split} split has no samples; choose another --split")
    return TestSet(
        prepared=prepared.resolve(),
        dataset=str(record.get("dataset", prepared.name)),
        prepare_fingerprint=record["fingerprint"],
        split=split,
        split_sha256=artifacts.sha256_json(samples.values.tolist()),
        classes_sha256=artifacts.sha256_json(classes.values.tolist()),
        samples=samples,
        classes=classes,
        image_root=prepared / record.get("image_root", "."),  # relative to the prepared dir (or absolute)
        group_thresholds=dict(record.get("group_thresholds") or {}),
    )


def check_same_test_set(sources: list[Source]) -> None:
    """Refuse to compare sources evaluated on different test sets, naming the first difference."""
    first = sources[0]
    for other in sources[1:]:
        difference = _describe_difference(first.test_set, other.test_set)
        if difference:
            raise SageError(
                f"cannot compare {first.name} ({first.test_set.prepared}) with {other.name} "
                f"({other.test_set.prepared}): {difference}; report runs prepared on the same test set"
            )


def _describe_difference(a: TestSet, b: TestSet) -> str | None:
    if a.split_sha256 != b.split_sha256:
        return (f"their {a.split} splits differ ({len(a.samples)} vs {len(b.samples)} samples, "
                f"sha256 {a.split_sha256[:12]} vs {b.split_sha256[:12]})")
    if len(a.classes) != len(b.classes):
        return f"their class tables differ ({len(a.classes)} vs {len(b.classes)} classes)"
    for column in ("name", "train_count", "group"):
        mismatch = (a.classes[column] != b.classes[column]).to_numpy().nonzero()[0]
        if len(mismatch):
            i = int(mismatch[0])
            return (f"their class tables differ in {column!r} ({len(mismatch)} classes; class {i}: "
                    f"{a.classes[column][i]!r} vs {b.classes[column][i]!r})")
    return None


def load_run_source(run_dir: str | os.PathLike[str], split: str, checkpoint: Path | None = None,
                    prepared: Path | None = None, text_cache: Path | None = None) -> Source:
    """A trained run: its train.json, its checkpoint (default: the weights train.json's ``kept`` names).

    Every input is verified against the run's record before anything is evaluated or reused from
    the predictions cache: the prepared dataset (fingerprint, ``classes.parquet``), the text cache
    (fingerprint, ``class_embeddings.parquet``) and the weights (sha256, and the fingerprint of the
    run in their metadata). ``prepared`` says where the moved dataset now is (it must be the run's);
    ``text_cache`` is looked at first for the run's cache (it is also the zero-shot row's, which
    may be another).
    """
    from sage_cli.train.config import read_config
    from sage_cli.train.restore import (PREPARED, TEXT_CACHE, check_weights_belong, describe_weights,
                                        kept_weights_name, locate_input)

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SageError(f"{run_dir}: not a directory; pass a run directory written by sage train")
    record = artifacts.read_record(run_dir, artifacts.TRAIN_RECORD)  # verifies the adapter's sha256
    ckpt = Path(checkpoint) if checkpoint is not None else run_dir / kept_weights_name(record)
    if not ckpt.is_file():
        where = f"--checkpoint {ckpt}" if checkpoint is not None else f"{run_dir}: no checkpoint {ckpt.name}"
        raise SageError(f"{where}: not found; is the run finished? pass --checkpoint FILE to pick one")
    check_checkpoint_readable(ckpt)
    check_weights_belong(ckpt, record, run_dir)
    text_dir = locate_input(run_dir, record, TEXT_CACHE, text_cache, strict=False)  # also zero-shot's cache
    test_set = load_test_set(locate_input(run_dir, record, PREPARED, prepared), split)
    identity = {
        "kind": "run",
        "checkpoint_sha256": artifacts.sha256_file(ckpt),
        "train_fingerprint": record["fingerprint"],
        "prepare_fingerprint": test_set.prepare_fingerprint,
        "split_sha256": test_set.split_sha256,
    }

    def build(device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
        from sage_cli.train import load_trained_classifier

        trained = load_trained_classifier(run_dir, checkpoint=ckpt, device=device, text_cache=text_dir)
        return trained.classifier, trained.clip.record

    config = {"checkpoint": str(ckpt.resolve()), **{k: v for k, v in record.items() if k != "versions"},
              "weights": describe_weights(ckpt, record, run_dir)}
    precision = read_config(record, run_dir / artifacts.TRAIN_RECORD).run.precision
    return Source(run_dir.name, "run", run_dir, test_set, identity, config, run_dir, build, precision)


def check_checkpoint_readable(path: Path) -> None:
    """Refuse a damaged safetensors file before any work (its header must parse)."""
    if path.suffix != ".safetensors":
        return  # other formats are checked by the trainer's loader
    from safetensors.torch import load_file

    try:
        load_file(str(path))  # adapter + head only: small, and every tensor's bytes are checked
    except Exception as exc:  # safetensors raises its own error type and OSError for bad files
        raise SageError(f"{path}: not a readable safetensors checkpoint ({exc}); is it damaged?") from None


def load_zero_shot_source(prepared: Path, text_dir: Path, split: str, cache_dir: Path) -> Source:
    """Frozen CLIP with the cached class embeddings as its head (no training)."""
    from sage_cli.encode_text import load_text_cache

    cache = load_text_cache(text_dir, prepared=prepared)  # refuses a cache of other classes / data
    test_set = load_test_set(prepared, split)
    record = cache.record
    embeddings_sha = artifacts.sha256_file(Path(text_dir) / artifacts.CLASS_EMBEDDINGS.filename)
    identity = {
        "kind": ZERO_SHOT,
        "model": record.get("model"),
        "weights": record.get("pretrained_sha256") or record.get("pretrained"),
        "class_embeddings_sha256": embeddings_sha,
        "prepare_fingerprint": test_set.prepare_fingerprint,
        "split_sha256": test_set.split_sha256,
    }

    def build(device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
        return build_zero_shot_classifier(cache, device)

    config = {"method": "zeroshot", "model": record.get("model"), "pretrained": record.get("pretrained"),
              "text_cache": str(Path(text_dir).resolve()), "text_cache_fingerprint": record.get("fingerprint")}
    return Source(ZERO_SHOT, ZERO_SHOT, Path(text_dir), test_set, identity, config, cache_dir, build)


def build_zero_shot_classifier(cache: Any, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    """CLIP's own zero-shot classifier: cosine head = class embeddings, CLIP's learned logit scale."""
    from sage_cli.backbone import build_backbone
    from sage_cli.encode_text import check_text_cache_matches
    from sage_cli.methods import METHODS
    from sage_cli.model import build_classifier

    record = cache.record
    # Random-init weights ("none", tests and smoke runs) come from the backbones' fixed seed, so the
    # baseline is reproducible and its cached predictions stay valid.
    clip = build_backbone(record["model"], record["pretrained"], device)
    check_text_cache_matches(cache, clip.record)
    scale = float(clip.model.logit_scale.exp()) if hasattr(clip.model, "logit_scale") else 100.0
    zeroshot = METHODS["zeroshot"].model
    model = dataclasses.replace(zeroshot, head=dataclasses.replace(zeroshot.head, scale=scale))
    classifier = build_classifier(clip.model, cache.class_embeddings, model)
    return classifier.eval(), clip.record
