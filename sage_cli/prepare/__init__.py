"""`sage prepare`: long-tailed manifests and class-frequency priors for the generated datasets.

Sources here: ``synthetic`` (a small procedurally drawn long-tailed set) and ``shapes-lt`` (the
embedded shapes world, see ``sage_cli.world``). Both write PNGs under ``OUT/images``; the
manifest's paths are relative to it (``prepare.json``'s ``image_root``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sage_cli import artifacts
from sage_cli.errors import SageError

logger = logging.getLogger(__name__)

SOURCES = ("synthetic", "shapes-lt")
OUTPUTS = (artifacts.MANIFEST.filename, artifacts.CLASSES.filename)


@dataclass(frozen=True)
class PrepareConfig:
    dataset: str
    out: Path
    root: Path | None = None
    seed: int = 0
    imbalance_ratio: float | None = None  # None: the source's default
    many_threshold: int = 100
    few_threshold: int = 20
    force: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        if self.dataset not in SOURCES:
            raise SageError(f"unknown dataset {self.dataset!r}; choose from {', '.join(SOURCES)}")
        if self.imbalance_ratio is not None and self.imbalance_ratio <= 1:
            raise SageError(f"--imbalance-ratio must be > 1; got {self.imbalance_ratio}")
        if not 0 < self.few_threshold <= self.many_threshold:
            raise SageError("--few-threshold must be positive and at most --many-threshold")


@dataclass(frozen=True)
class PrepareResult:
    out: Path
    record: dict[str, Any]
    skipped: bool = False


def compute_class_table(names: list[str], train_labels: np.ndarray, many: int, few: int) -> pd.DataFrame:
    """class_id, name, train_count, prior and group (many > ``many``, few < ``few``, else medium)."""
    counts = np.bincount(train_labels, minlength=len(names)).astype(np.int64)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        raise SageError(f"class {int(empty[0])} ({names[empty[0]]!r}) has no training image")
    group = np.where(counts > many, "many", np.where(counts < few, "few", "medium"))
    return pd.DataFrame({
        "class_id": np.arange(len(names), dtype=np.int64), "name": names, "train_count": counts,
        "prior": counts / counts.sum(), "group": group,
    })


def run(config: PrepareConfig) -> PrepareResult:
    """Generate the dataset into ``config.out`` unless it already holds exactly this preparation."""
    inputs = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()
              if k not in ("out", "force")}
    fingerprint = artifacts.sha256_json(inputs)
    if artifacts.guard_output_dir(config.out, artifacts.PREPARE_RECORD, fingerprint, OUTPUTS, config.force):
        return PrepareResult(config.out, artifacts.read_record(config.out, artifacts.PREPARE_RECORD), True)
    (config.out / artifacts.PREPARE_RECORD).unlink(missing_ok=True)
    manifest, names = _generate(config)
    train = manifest[manifest["split"] == "train"]["label"].to_numpy()
    classes = compute_class_table(names, train, config.many_threshold, config.few_threshold)
    artifacts.write_table(config.out, artifacts.MANIFEST, manifest)
    artifacts.write_table(config.out, artifacts.CLASSES, classes)
    counts = {s: int((manifest["split"] == s).sum()) for s in artifacts.SPLITS}
    record = artifacts.build_record(
        "prepare", inputs, dataset=config.dataset, root=None, image_root=str(config.out.resolve()),
        options=inputs, counts=counts, num_classes=len(names),
        group_thresholds={"many": config.many_threshold, "few": config.few_threshold},
        group_counts={g: int((classes["group"] == g).sum()) for g in artifacts.GROUPS},
        max_count=int(classes["train_count"].max()), min_count=int(classes["train_count"].min()),
    )
    artifacts.write_record(config.out, artifacts.PREPARE_RECORD, record)
    return PrepareResult(config.out, record)


def _generate(config: PrepareConfig) -> tuple[pd.DataFrame, list[str]]:
    if config.dataset == "shapes-lt":
        from sage_cli.world.shapes_lt import prepare_shapes_lt

        return prepare_shapes_lt(config.out, imbalance_ratio=config.imbalance_ratio or 100.0, seed=config.seed)
    from sage_cli.prepare.synthetic import generate_synthetic

    return generate_synthetic(config.out, imbalance_ratio=config.imbalance_ratio or 30.0, seed=config.seed)
