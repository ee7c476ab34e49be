"""A tiny prepared dataset written by hand, so these tests do not depend on `sage prepare`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from sage_cli import artifacts

NAMES = ("cat", "dog", "great_white_shark")


def make_prepared(directory: Path, names: Sequence[str] = NAMES, dataset: str = "tiny") -> Path:
    """manifest.parquet, classes.parquet and prepare.json for ``names`` (2 train images each)."""
    count = len(names)
    labels = [c for c in range(count) for _ in range(2)]
    artifacts.write_table(directory, artifacts.MANIFEST, {
        "sample_id": list(range(len(labels))),
        "path": [f"img_{i}.png" for i in range(len(labels))],
        "label": labels,
        "split": ["train"] * len(labels),
    })
    artifacts.write_table(directory, artifacts.CLASSES, {
        "class_id": list(range(count)),
        "name": list(names),
        "train_count": [2] * count,
        "prior": [1.0 / count] * count,
        "group": ["few"] * count,
    })
    record = artifacts.build_record(
        "prepare", {"dataset": dataset, "classes": list(names)},
        image_root=str(directory.resolve()), dataset=dataset, counts={"train": len(labels)},
        group_thresholds={"many": 100, "few": 20},
    )
    artifacts.write_record(directory, artifacts.PREPARE_RECORD, record)
    return directory


@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    return make_prepared(tmp_path / "prep")
