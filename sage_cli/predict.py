"""The predict stage: classify image files with a trained run or an export of one
(``sage predict RUN|EXPORT IMAGE...|DIR``).

Public API: :class:`PredictConfig`, :func:`run` -> :class:`PredictResult`. A run's classifier is
rebuilt with :func:`sage_cli.train.load_trained_classifier`; an export directory (``sage export``)
is read with :func:`sage_cli.export.load_export`, with no run, text cache or backbone download.
Images get open_clip's eval preprocessing for the run's backbone (the report's single centre
crop; an export records it) and go through in batches. Each image gets its top-k classes with
softmax scores, best first (ties: lower class id first).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from sage_cli.config import check_batch_size
from sage_cli.errors import SageError
from sage_cli.imageio import open_image
from sage_cli.precision import autocast

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class PredictConfig:
    """A run (or export) directory and the images (files or directories, searched recursively) to classify."""

    run: Path
    images: tuple[Path, ...]
    top_k: int = 5
    batch_size: int = 32
    num_workers: int = 0
    device: str = "auto"
    checkpoint: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "run", Path(self.run))
        object.__setattr__(self, "images", tuple(Path(p) for p in self.images))
        if not self.images:
            raise SageError("nothing to classify: pass IMAGE files or a DIR of images after RUN_DIR")
        if self.top_k < 1:
            raise SageError(f"--top-k must be >= 1; got {self.top_k}")
        check_batch_size("--batch-size", self.batch_size)
        if self.num_workers < 0:
            raise SageError(f"--workers must be >= 0; got {self.num_workers}")


@dataclass(frozen=True)
class PredictResult:
    run: Path
    predictions: list[dict[str, Any]]  # per image: {"image", "top": [{"class_id", "name", "score"}]}
    seconds: float
    weights: dict[str, Any] | None = None  # which weights classified them (sage_cli.train.restore.describe_weights)


def find_images(paths: tuple[Path, ...]) -> list[Path]:
    """Image files named directly (any suffix) and those under named directories (by suffix, sorted)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not inside:
                raise SageError(f"{path}: holds no image file ({', '.join(IMAGE_SUFFIXES)})")
            found += inside
        elif path.is_file():
            found.append(path)
        else:
            raise SageError(f"{path}: no such file or directory")
    return found


class _Images(Dataset):
    def __init__(self, paths: list[Path], transform: Callable[[Any], torch.Tensor]) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        try:
            with open_image(self.paths[i]) as image:
                return self.transform(image.convert("RGB"))
        except (OSError, SyntaxError) as exc:  # PIL raises both for missing, damaged or non-image files
            raise SageError(f"{self.paths[i]}: cannot read image ({exc})") from None


def run(config: PredictConfig, progress: Progress | None = None) -> PredictResult:
    """Top-k classes and scores for every image of ``config``, in the order found."""
    from sage_cli.report.predictions import compute_ranked_scores

    paths = find_images(config.images)
    model, transform, names, device, weights, precision = load_model(config)
    loader = DataLoader(_Images(paths, transform), batch_size=config.batch_size, shuffle=False,
                        num_workers=config.num_workers)
    predictions, done, start = [], 0, time.perf_counter()
    # the run's autocast, as sage report evaluates it: the same image gets the report's scores.
    with torch.inference_mode(), autocast(device, precision):
        for images in loader:
            top, scores = compute_ranked_scores(model(images.to(device)), config.top_k)
            for row_top, row_scores in zip(top.tolist(), scores.tolist()):
                predictions.append({"image": str(paths[done]), "top": [
                    {"class_id": c, "name": names[c], "score": s} for c, s in zip(row_top, row_scores)]})
                done += 1
            if progress is not None:
                progress(done, len(paths))
    return PredictResult(config.run, predictions, time.perf_counter() - start, weights)


def load_model(config: PredictConfig) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[Any], torch.Tensor],
                                               tuple[str, ...], torch.device, dict[str, Any] | None, str]:
    """(images -> logits, PIL image -> tensor, class names, device, which weights, precision) of the run or
    export ``config.run``; the precision is the run's ``--precision`` (fp32 for an export: no autocast)."""
    from sage_cli.backbone import resolve_device
    from sage_cli.export import is_export, load_export
    from sage_cli.report.loader import build_eval_transform
    from sage_cli.train import load_trained_classifier
    from sage_cli.train.restore import describe_weights, resolve_weights_path

    if is_export(config.run):
        if config.checkpoint is not None:
            raise SageError(f"--checkpoint applies to a run directory; {config.run} is an export (sage export "
                            "the checkpoint instead)")
        export = load_export(config.run, config.device)
        return (export.predict, export.transform, export.class_names, export.device, export.record.get("weights"),
                "fp32")  # an export runs as it was exported
    device = resolve_device(config.device)
    trained = load_trained_classifier(config.run, checkpoint=config.checkpoint, device=device)
    weights = describe_weights(resolve_weights_path(config.run, config.checkpoint, trained.record), trained.record,
                               config.run)
    return (trained.classifier, build_eval_transform(trained.clip.record), trained.class_names, device, weights,
            trained.precision)


__all__ = ["PredictConfig", "PredictResult", "find_images", "run"]
