"""Shared fixtures. Tests never touch the network and write only under tmp_path."""

from __future__ import annotations

import os

import pytest
import torch

# No test may reach the network: open_clip / huggingface_hub must stay offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Keep tests deterministic and light on a 2-core machine. SAGE_TEST_THREADS overrides the count
# (1 is faster when other jobs share the cores).
torch.set_num_threads(int(os.environ.get("SAGE_TEST_THREADS") or max(1, min(2, os.cpu_count() or 1))))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # not keywords: a folder named gpu is one
            item.add_marker(skip_gpu)


# --------------------------------------------------------------------------------------------
# Shared data fixtures (session-scoped, read-only for tests): a tiny long-tailed image dataset in
# the shape of `sage prepare`'s output, and its sage-tiny text cache. Written by hand so that
# they do not depend on the prepare stage.

SYNTHETIC_NAMES = ("red square", "green circle", "blue triangle", "yellow star")
SYNTHETIC_TRAIN_COUNTS = (24, 12, 6, 3)
SYNTHETIC_GROUPS = ("many", "medium", "few", "few")
SYNTHETIC_COLOURS = ((220, 40, 40), (40, 200, 60), (50, 70, 230), (230, 210, 40))


def make_synthetic_prepared(directory, eval_per_class: int = 2, seed: int = 0):
    """manifest.parquet, classes.parquet, prepare.json and 32x32 PNGs: class = colour + noise."""
    import numpy as np
    from PIL import Image

    from sage_cli import artifacts

    rng = np.random.default_rng(seed)
    images = directory / "images"
    images.mkdir(parents=True)
    rows: dict[str, list] = {"sample_id": [], "path": [], "label": [], "split": []}
    plan = [("train", SYNTHETIC_TRAIN_COUNTS), ("val", (eval_per_class,) * 4), ("test", (eval_per_class,) * 4)]
    for split, counts in plan:
        for label, count in enumerate(counts):
            for _ in range(count):
                sample_id = len(rows["sample_id"])
                noise = rng.integers(-60, 60, size=(32, 32, 3))
                pixels = np.clip(np.array(SYNTHETIC_COLOURS[label]) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(images / f"{sample_id}.png")
                for key, value in zip(rows, (sample_id, f"{sample_id}.png", label, split)):
                    rows[key].append(value)
    artifacts.write_table(directory, artifacts.MANIFEST, rows)
    total = sum(SYNTHETIC_TRAIN_COUNTS)
    artifacts.write_table(directory, artifacts.CLASSES, {
        "class_id": list(range(4)), "name": list(SYNTHETIC_NAMES), "train_count": list(SYNTHETIC_TRAIN_COUNTS),
        "prior": [c / total for c in SYNTHETIC_TRAIN_COUNTS], "group": list(SYNTHETIC_GROUPS),
    })
    record = artifacts.build_record(
        "prepare", {"dataset": "synthetic-fixture", "seed": seed, "eval_per_class": eval_per_class},
        dataset="synthetic-fixture", image_root=str(images.resolve()),
        counts={"train": total, "val": 4 * eval_per_class, "test": 4 * eval_per_class},
        group_thresholds={"many": 20, "few": 10},
    )
    artifacts.write_record(directory, artifacts.PREPARE_RECORD, record)
    return directory


def make_tiny_text_cache(prepared, out):
    """encode-text with sage-tiny (random init from torch seed 0) and the single template."""
    from sage_cli.encode_text import EncodeTextConfig, run

    torch.manual_seed(0)
    run(EncodeTextConfig(prepared=prepared, out=out, model="sage-tiny", pretrained="none",
                         templates="single", device="cpu"))
    return out


@pytest.fixture(scope="session")
def synthetic_prepared(tmp_path_factory: pytest.TempPathFactory):
    """A prepared dataset dir: 4 classes, 24/12/6/3 train images, 2 val and 2 test per class."""
    return make_synthetic_prepared(tmp_path_factory.mktemp("synthetic") / "prepared")


@pytest.fixture(scope="session")
def synthetic_text_cache(synthetic_prepared, tmp_path_factory: pytest.TempPathFactory):
    """The sage-tiny text cache of :func:`synthetic_prepared`."""
    return make_tiny_text_cache(synthetic_prepared, tmp_path_factory.mktemp("synthetic-text") / "text")


@pytest.fixture(scope="session")
def train_only_prepared(tmp_path_factory: pytest.TempPathFactory):
    """(prepared dir, text cache dir) of :func:`synthetic_prepared`'s training images with no val or test split."""
    root = tmp_path_factory.mktemp("train-only")
    prepared = make_synthetic_prepared(root / "prepared", eval_per_class=0)
    return prepared, make_tiny_text_cache(prepared, root / "text")
