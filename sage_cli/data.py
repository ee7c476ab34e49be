"""Images of a prepared dataset as torch batches, in a seeded data order that can resume mid-epoch.

:class:`ManifestDataset` reads the manifest rows of one split (PIL -> RGB -> transform) and yields
``(image, label, sample_id)``. :class:`SeededEpochSampler` derives epoch ``e``'s order, and one
seed per sample for the random augmentation, from ``(seed, e)`` alone; so the images a step sees
depend only on the seed, the epoch and the position in it, whatever the number of workers, and a
run can restart at any step. :func:`build_loader` wires them into a DataLoader.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from sage_cli import artifacts
from sage_cli.errors import SageError

Transform = Callable[[Image.Image], torch.Tensor]
# A sampler key: a plain index (deterministic transform), or (index, seed) for a seeded augmentation.
Key = int | tuple[int, int]


@dataclass(frozen=True)
class PreparedData:
    """The tables and record of a prepared dataset directory."""

    directory: Path
    manifest: pd.DataFrame
    classes: pd.DataFrame
    record: dict[str, Any]
    image_root: Path

    def split(self, name: str) -> pd.DataFrame:
        """The manifest rows of split ``name`` in manifest order."""
        return self.manifest[self.manifest["split"] == name].reset_index(drop=True)

    def has_split(self, name: str) -> bool:
        return bool((self.manifest["split"] == name).any())


def load_prepared_data(prep_dir: str | os.PathLike[str]) -> PreparedData:
    """Read and validate ``prep_dir`` (the output of ``sage prepare``); SageError naming the file."""
    directory = Path(prep_dir)
    record = artifacts.read_record(directory, artifacts.PREPARE_RECORD)
    manifest = artifacts.read_table(directory, artifacts.MANIFEST).to_pandas()
    classes = artifacts.read_table(directory, artifacts.CLASSES).to_pandas().sort_values("class_id")
    classes = classes.reset_index(drop=True)
    if classes["class_id"].tolist() != list(range(len(classes))):
        raise SageError(f"{directory / artifacts.CLASSES.filename}: class_id must run 0..C-1 without gaps")
    bad = manifest[(manifest["label"] < 0) | (manifest["label"] >= len(classes))]
    if len(bad):
        raise SageError(
            f"{directory / artifacts.MANIFEST.filename}: sample {int(bad['sample_id'].iloc[0])} has label "
            f"{int(bad['label'].iloc[0])}, outside 0..{len(classes) - 1}"
        )
    image_root = Path(record.get("image_root") or directory)
    return PreparedData(directory, manifest, classes, record, image_root)


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image as RGB; a SageError naming the file if it is missing or unreadable."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise SageError(f"{path}: cannot read image ({exc.__class__.__name__}: {exc})") from None


class ManifestDataset(Dataset):
    """Samples of one split: ``(image [3, H, W], label, sample_id)``.

    A key may be an index, or ``(index, seed)``: the transform then runs under that torch seed,
    so random crops and flips are a function of the key alone (reproducible, resumable).
    """

    def __init__(self, samples: pd.DataFrame, image_root: str | os.PathLike[str], transform: Transform) -> None:
        root = Path(image_root)
        self.paths = [str(root / p) for p in samples["path"]]  # an absolute `path` stays as it is
        self.labels = samples["label"].to_numpy(dtype=np.int64)
        self.sample_ids = samples["sample_id"].to_numpy(dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, int, int]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        image = load_image(self.paths[index])
        if seed is None:
            pixels = self.transform(image)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                pixels = self.transform(image)
        return pixels, int(self.labels[index]), int(self.sample_ids[index])


def compute_epoch_order(num_samples: int, seed: int, epoch: int, shuffle: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Epoch ``epoch``'s sample order [N] and one augmentation seed per position [N].

    A pure function of its arguments (numpy's SeedSequence of ``(seed, epoch)``).
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(num_samples) if shuffle else np.arange(num_samples)
    seeds = rng.integers(0, 2**62, size=num_samples, dtype=np.int64)
    return order, seeds


class SeededEpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, seed)`` keys in the order of :func:`compute_epoch_order`.

    Call :meth:`set_epoch` before each epoch; ``start`` skips the first positions (resume).
    """

    def __init__(self, num_samples: int, seed: int, shuffle: bool = True) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"start {start} outside 0..{self.num_samples}")
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order, seeds = compute_epoch_order(self.num_samples, self.seed, self.epoch, self.shuffle)
        for position in range(self.start, self.num_samples):
            yield int(order[position]), int(seeds[position])

    def __len__(self) -> int:
        return self.num_samples - self.start


def build_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    sampler: Sampler | None = None,
) -> DataLoader:
    """A DataLoader in ``sampler``'s order (or the dataset's), pinned memory on CUDA, workers kept alive.

    Workers are capped at the CPUs this process may use (more only thrash); the data a step sees
    does not depend on their number.
    """
    num_workers = min(num_workers, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0,
        drop_last=False,
    )


def iterate_batches(loader: Iterable[Any]) -> Iterator[Any]:
    """Iterate ``loader``; a SageError raised in a worker comes back as its own one-line message."""
    try:
        yield from loader
    except SageError as exc:
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        message = lines[-1] if lines else str(exc)
        raise SageError(message.split("SageError: ", 1)[-1]) from None
