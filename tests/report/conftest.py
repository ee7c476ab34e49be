"""Fixtures for report tests: a tiny prepared dataset with real images, its text cache (sage-tiny)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sage_cli import artifacts

NAMES = ("apple", "bear", "cat", "dog")
TRAIN_COUNTS = (150, 40, 30, 5)  # many, medium, medium, few
GROUPS = ("many", "medium", "medium", "few")
TEST_PER_CLASS = 3


def make_prepared(directory: Path, test_per_class: int = TEST_PER_CLASS, seed: int = 0,
                  names: tuple[str, ...] = NAMES) -> Path:
    """A prepared dir in the shape of sage prepare's output: tables, images, prepare.json."""
    rng = np.random.default_rng(seed)
    images = directory / "images"
    images.mkdir(parents=True)
    rows = {"sample_id": [], "path": [], "label": [], "split": []}
    sample_id = 0
    for split, per_class in (("train", 2), ("test", test_per_class), ("val", 1)):
        for label in range(len(names)):
            for _ in range(per_class):
                name = f"{split}_{sample_id}.png"
                pixels = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(images / name)
                for key, value in zip(rows, (sample_id, name, label, split)):
                    rows[key].append(value)
                sample_id += 1
    artifacts.write_table(directory, artifacts.MANIFEST, rows)
    total = sum(TRAIN_COUNTS)
    artifacts.write_table(directory, artifacts.CLASSES, {
        "class_id": list(range(len(names))), "name": list(names), "train_count": list(TRAIN_COUNTS),
        "prior": [c / total for c in TRAIN_COUNTS], "group": list(GROUPS),
    })
    inputs = {"dataset": "tiny", "seed": seed, "test_per_class": test_per_class, "names": list(names)}
    record = artifacts.build_record("prepare", inputs, dataset="tiny", image_root="images",
                                    counts={"train": 8}, group_thresholds={"many": 100, "few": 20})
    artifacts.write_record(directory, artifacts.PREPARE_RECORD, record)
    return directory


def make_text_cache(prepared: Path, out: Path) -> Path:
    from sage_cli.encode_text import EncodeTextConfig, run

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    run(EncodeTextConfig(prepared=prepared, out=out, model="sage-tiny", pretrained="none",
                         templates="single", device="cpu"))
    return out


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(prepared dir, text cache dir), built once per session (read-only for tests)."""
    root = tmp_path_factory.mktemp("report-data")
    prepared = make_prepared(root / "prepared")
    return prepared, make_text_cache(prepared, root / "text")
