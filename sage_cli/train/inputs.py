"""The train stage's inputs, read and cross-checked before any work, and the backbone they name.

:func:`resolve_inputs` reads the prepared dataset and the text cache and refuses a cache of another
class set, prepared dataset or backbone before a model is built or a file written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from sage_cli import artifacts
from sage_cli.backbone import (backbone_identity, check_model_name, classify_pretrained,
                               compute_weights_sha256)
from sage_cli.data import PreparedData, load_prepared_data
from sage_cli.encode_text import TextCache, check_text_cache_matches, load_text_cache
from sage_cli.errors import SageError
from sage_cli.image_cache import check_image_cache_source
from sage_cli.train.config import TrainConfig

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class TrainInputs:
    """What a run trains on: the prepared data, the text cache and the resolved backbone name."""

    data: PreparedData
    cache: TextCache
    model: str
    pretrained: str
    eval_split: str | None
    image_cache: dict[str, Any] | None = None  # path and fingerprint of the image cache the run reads

    def record(self, run_dir: Path) -> dict[str, Any]:
        """Paths (relative to ``run_dir``) and content hashes of the inputs (the ``inputs`` of train.json)."""
        prep, text = self.data.directory.resolve(), self.cache.directory.resolve()
        return {
            "prepared": {
                "path": artifacts.relative_path(prep, run_dir),
                "fingerprint": self.data.record["fingerprint"],
                "classes_sha256": artifacts.sha256_file(prep / artifacts.CLASSES.filename),
            },
            "text_cache": {
                "path": artifacts.relative_path(text, run_dir),
                "fingerprint": self.cache.record["fingerprint"],
                "class_embeddings_sha256": artifacts.sha256_file(text / artifacts.CLASS_EMBEDDINGS.filename),
            },
            "backbone": backbone_identity(describe_backbone(self.model, self.pretrained)),
            **({"image_cache": self.image_cache} if self.image_cache else {}),
        }


def resolve_inputs(config: TrainConfig) -> TrainInputs:
    """Read and cross-check the prepared dataset and text cache; SageError on any mismatch."""
    data = load_prepared_data(config.data.prepared)
    cache = load_text_cache(config.data.text_cache, prepared=config.data.prepared)
    model = config.model.model or str(cache.record.get("model"))
    pretrained = config.model.pretrained or str(cache.record.get("pretrained"))
    check_text_cache_matches(cache, describe_backbone(model, pretrained))
    if cache.class_embeddings.shape[0] != len(data.classes):
        raise SageError(
            f"{cache.directory}: {cache.class_embeddings.shape[0]} class embeddings for "
            f"{len(data.classes)} classes in {data.directory}; re-run sage encode-text"
        )
    if not data.has_split("train"):
        raise SageError(f"{data.directory}: the manifest has no train split; nothing to train on")
    check_feature_cache_options(config)
    image_cache = None
    if config.data.image_cache is not None:
        record = check_image_cache_source(config.data.image_cache, data)
        image_cache = {"path": str(config.data.image_cache.resolve()), "fingerprint": record["fingerprint"]}
    eval_split = choose_eval_split(data, config)
    if eval_split is None and (config.run.keep == "best" or config.run.patience):
        raise SageError(f"--keep best and --patience follow evaluations: {data.directory} has neither a val nor a test "
                        "split (sage prepare --val-fraction makes one)")
    return TrainInputs(data, cache, check_model_name(model), pretrained, eval_split, image_cache)


def check_feature_cache_options(config: TrainConfig) -> None:
    """Cached features are the frozen tower's output for un-augmented images: head-only, no augmentation."""
    if config.data.feature_cache is None:
        return
    if config.model.peft is not None or not config.model.head.train:
        raise SageError(f"--feature-cache: only --method linear trains on cached frozen features; got {config.method}")
    if config.data.augment:
        raise SageError("--feature-cache needs --no-augment: the cached features are of the un-augmented eval crops")


def choose_eval_split(data: PreparedData, config: TrainConfig) -> str | None:
    """``--eval-split`` if given (it must exist), else val if present, else test, else None."""
    wanted = config.data.eval_split
    if wanted is not None:
        if not data.has_split(wanted):
            raise SageError(f"--eval-split {wanted}: {data.directory} has no {wanted} split")
        return wanted
    for split in ("val", "test"):
        if data.has_split(split):
            return split
    logger.warning("%s has neither a val nor a test split: the run is not evaluated and sage report cannot "
                   "score it; sage prepare splits a flat ROOT/<class>/ folder or a CSV without a split column "
                   "(--val-fraction, --test-fraction; docs/datasets.md)", data.directory)
    return None


def describe_backbone(model: str, pretrained: str) -> dict[str, Any]:
    """The identity fields of a backbone record (name, weights, file hash) without loading it."""
    name = check_model_name(model)
    kind, weights = classify_pretrained(name, pretrained)
    return {
        "model": name,
        "pretrained": "none" if kind == "none" else weights,
        "pretrained_sha256": compute_weights_sha256(name, kind, weights),
    }
