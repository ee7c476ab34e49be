"""Batches of (images, labels, sample_ids) over a test set, in sample-id order, and the eval transform."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from sage_cli.errors import SageError
from sage_cli.imageio import open_image
from sage_cli.report.sources import TestSet


class _SplitImages(Dataset):
    """The images of a test set's rows with one transform (eval preprocess or five crops)."""

    def __init__(self, test_set: TestSet, transform: Callable[[Any], torch.Tensor]) -> None:
        self.paths = [test_set.image_path(p) for p in test_set.samples["path"]]
        self.labels = test_set.samples["label"].tolist()
        self.sample_ids = test_set.samples["sample_id"].tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        try:
            with open_image(self.paths[i]) as image:
                tensor = self.transform(image.convert("RGB"))
        except (OSError, SyntaxError) as exc:  # PIL raises both for missing or damaged files
            raise SageError(f"{self.paths[i]}: cannot read image ({exc})") from None
        return tensor, self.labels[i], self.sample_ids[i]


def build_eval_loader(
    test_set: TestSet,
    transform: Callable[[Any], torch.Tensor],
    batch_size: int,
    num_workers: int,
    device: torch.device,
) -> DataLoader:
    return DataLoader(
        _SplitImages(test_set, transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )


def build_eval_transform(backbone: dict[str, Any]) -> Callable[[Any], torch.Tensor]:
    """The eval preprocessing (resize + centre crop) of this backbone record (a run's choice of resize)."""
    from sage_cli.train.transforms import build_eval_transform as build

    return build(backbone)
