"""Schedule values, the seeded data order and the manifest dataset."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from sage_cli.data import ManifestDataset, compute_epoch_order, load_prepared_data
from sage_cli.errors import SageError
from sage_cli.train.config import OptimConfig
from sage_cli.train.evaluate import compute_group_top1
from sage_cli.train.optim import compute_lr_factor, compute_warmup_steps


def test_lr_factor_warmup_then_cosine() -> None:
    # 2 warm-up steps of 10: 1/2, 1, then cos from 1 to 0 over 8 steps
    assert compute_lr_factor(0, 2, 10) == pytest.approx(0.5)
    assert compute_lr_factor(1, 2, 10) == pytest.approx(1.0)
    assert compute_lr_factor(2, 2, 10) == pytest.approx(1.0)
    assert compute_lr_factor(6, 2, 10) == pytest.approx(0.5)
    assert compute_lr_factor(8, 2, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 6 / 8)))
    assert compute_lr_factor(0, 0, 4) == pytest.approx(1.0)


def test_warmup_steps() -> None:
    assert compute_warmup_steps(OptimConfig(warmup_epochs=0.5), steps_per_epoch=6, total_steps=100) == 3
    assert compute_warmup_steps(OptimConfig(warmup_steps=7), steps_per_epoch=6, total_steps=100) == 7
    assert compute_warmup_steps(OptimConfig(warmup_epochs=5), steps_per_epoch=6, total_steps=10) == 10


def test_epoch_order_is_a_function_of_seed_and_epoch() -> None:
    order, seeds = compute_epoch_order(10, seed=1, epoch=0)
    again, seeds_again = compute_epoch_order(10, seed=1, epoch=0)
    assert sorted(order.tolist()) == list(range(10))
    assert order.tolist() == again.tolist() and seeds.tolist() == seeds_again.tolist()
    assert order.tolist() != compute_epoch_order(10, seed=1, epoch=1)[0].tolist()
    assert order.tolist() != compute_epoch_order(10, seed=2, epoch=0)[0].tolist()
    assert compute_epoch_order(4, 0, 0, shuffle=False)[0].tolist() == [0, 1, 2, 3]


def _write_images(root: Path, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return pd.DataFrame({"sample_id": [10 + i for i in range(n)], "path": [f"{i}.png" for i in range(n)],
                         "label": [i % 2 for i in range(n)], "split": ["train"] * n})


def test_manifest_dataset_items_and_seeded_augmentation(tmp_path: Path) -> None:
    rows = _write_images(tmp_path, 3)
    augment = T.Compose([T.RandomResizedCrop(16), T.RandomHorizontalFlip(), T.ToTensor()])
    dataset = ManifestDataset(rows, tmp_path, augment)
    image, label, sample_id = dataset[(1, 1234)]
    assert image.shape == (3, 16, 16) and label == 1 and sample_id == 11
    assert torch.equal(dataset[(1, 1234)][0], image)  # same key, same crop
    state = torch.get_rng_state()
    dataset[(1, 99)]
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    plain = ManifestDataset(rows, tmp_path, T.ToTensor())
    expected = torch.from_numpy(np.array(Image.open(tmp_path / "2.png").convert("RGB"))).permute(2, 0, 1) / 255
    assert torch.allclose(plain[2][0], expected)


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    rows = _write_images(tmp_path, 2)
    (tmp_path / "1.png").write_bytes(b"not a png")
    dataset = ManifestDataset(rows, tmp_path, T.ToTensor())
    with pytest.raises(SageError, match="1.png: cannot read image"):
        dataset[1]


def test_load_prepared_data(synthetic_prepared: Path) -> None:
    data = load_prepared_data(synthetic_prepared)
    assert len(data.split("train")) == 45 and data.has_split("val")
    assert data.classes["train_count"].tolist() == [24, 12, 6, 3]


def test_group_top1_counts_samples() -> None:
    # classes 0 many, 1 medium, 2 few; 6 samples
    labels = np.array([0, 0, 0, 1, 1, 2])
    predictions = np.array([0, 0, 1, 1, 0, 2])
    result = compute_group_top1(predictions, labels, ["many", "medium", "few"])
    assert result == {"top1": pytest.approx(4 / 6), "many": pytest.approx(2 / 3), "medium": 0.5, "few": 1.0}
    assert compute_group_top1(np.array([0]), np.array([0]), ["many", "few"])["medium"] is None
