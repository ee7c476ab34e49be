"""Images of a prepared dataset as torch batches, in a seeded data order that can resume mid-epoch.

:class:`ManifestDataset` reads the manifest rows of one split (PIL -> RGB -> transform) and yields
``(image, label, sample_id)`` (with ``skip_bad``, a :class:`BadSample` marker for an unreadable
file, dropped by :func:`collate_samples`). :func:`compute_epoch_order` derives epoch ``e``'s order,
and one seed per sample for the random augmentation, from ``(seed, e)`` alone; so the images a step
sees depend only on the seed, the epoch and the position in it, whatever the number of workers or
processes, and a run can restart at any step. :class:`StepBatchSampler` cuts that order into
optimizer steps and micro-batches and, under DDP, gives each rank a disjoint strided slice of every
micro-batch. :func:`build_loader` wires them into a DataLoader.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from sage_cli import artifacts
from sage_cli.errors import SageError
from sage_cli.imageio import open_image
from sage_cli.pixels import DeviceBatches, device_normalizer

Transform = Callable[[Image.Image], torch.Tensor]
logger = logging.getLogger(__name__)

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
    image_root = directory / record.get("image_root", ".")  # relative to the prepared dir (absolute in older records)
    return PreparedData(directory, manifest, classes, record, image_root)


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image as RGB; a SageError naming the file if it is missing or unreadable."""
    try:
        with open_image(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as exc:
        raise SageError(f"{path}: cannot read image ({exc.__class__.__name__}: {exc})") from None


@dataclass(frozen=True)
class BadSample:
    """Returned in place of a sample whose image cannot be read (``skip_bad``); dropped in collate."""

    path: str
    reason: str


class MicroBatch(NamedTuple):
    """A collated batch: ``images`` [B, 3, H, W] (None when every image of it was bad), ``labels``
    [B], ``sample_ids`` [B], and the paths of the images skipped as unreadable."""

    images: torch.Tensor | None
    labels: torch.Tensor
    sample_ids: torch.Tensor
    skipped: tuple[str, ...] = ()


def collate_samples(samples: Sequence[Any]) -> MicroBatch:
    """Collate ``(image, label, sample_id)`` items, dropping :class:`BadSample` markers (and counting them)."""
    good = [s for s in samples if not isinstance(s, BadSample)]
    skipped = tuple(s.path for s in samples if isinstance(s, BadSample))
    if not good:
        empty = torch.zeros(0, dtype=torch.long)
        return MicroBatch(None, empty, empty.clone(), skipped)
    images, labels, sample_ids = default_collate(good)
    return MicroBatch(images, labels, sample_ids, skipped)


class ManifestDataset(Dataset):
    """Samples of one split: ``(image [3, H, W], label, sample_id)``.

    A key may be an index, or ``(index, seed)``: the transform then runs under that torch seed,
    so random crops and flips are a function of the key alone (reproducible, resumable). With
    ``skip_bad`` an unreadable image gives a :class:`BadSample` instead of a SageError.
    """

    def __init__(
        self, samples: pd.DataFrame, image_root: str | os.PathLike[str], transform: Transform, skip_bad: bool = False
    ) -> None:
        root = Path(image_root)
        self.paths = [str(root / p) for p in samples["path"]]  # an absolute `path` stays as it is
        self.labels = samples["label"].to_numpy(dtype=np.int64)
        self.sample_ids = samples["sample_id"].to_numpy(dtype=np.int64)
        self.transform = transform
        self.skip_bad = skip_bad

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, int, int] | BadSample:
        index, seed = key if isinstance(key, tuple) else (key, None)
        try:
            image = load_image(self.paths[index])
        except SageError as exc:
            if not self.skip_bad:
                raise
            logger.warning("skipping %s (--skip-bad)", exc)
            return BadSample(self.paths[index], str(exc))
        if seed is None:
            pixels = self.transform(image)
        else:
            with cpu_seeded(seed):
                pixels = self.transform(image)
        return pixels, int(self.labels[index]), int(self.sample_ids[index])


@contextlib.contextmanager
def cpu_seeded(seed: int) -> Iterator[None]:
    """Run the body with torch's CPU generator seeded to ``seed`` (as ``torch.manual_seed`` seeds it),
    then put its state back. The transforms draw only from that generator; seeding it alone costs
    microseconds where ``fork_rng`` + ``manual_seed`` cost ~0.5 ms an image."""
    generator = torch.default_generator
    state = generator.get_state()
    generator.manual_seed(seed)
    try:
        yield
    finally:
        generator.set_state(state)


def compute_epoch_order(num_samples: int, seed: int, epoch: int, shuffle: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Epoch ``epoch``'s sample order [N] and one augmentation seed per position [N].

    A pure function of its arguments (numpy's SeedSequence of ``(seed, epoch)``).
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(num_samples) if shuffle else np.arange(num_samples)
    seeds = rng.integers(0, 2**62, size=num_samples, dtype=np.int64)
    return order, seeds


def compute_class_aware_order(labels: np.ndarray, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """A class-aware (balanced) epoch of N = len(labels) draws: each position draws a class uniformly,
    then one of that class's samples uniformly; and one augmentation seed per position.

    A pure function of its arguments, like :func:`compute_epoch_order`, so it resumes and splits
    over ranks the same way.
    """
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng([seed, epoch, 1])  # another stream than the shuffled order's
    present = np.unique(labels)
    counts = np.bincount(labels, minlength=int(labels.max()) + 1)
    by_class = np.argsort(labels, kind="stable")  # sample indices grouped by class
    starts = np.cumsum(counts) - counts
    picks = present[rng.integers(0, len(present), size=len(labels))]  # [N] classes
    offsets = np.floor(rng.random(len(labels)) * counts[picks]).astype(np.int64)
    order = by_class[starts[picks] + offsets]
    seeds = rng.integers(0, 2**62, size=len(labels), dtype=np.int64)
    return order, seeds


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields this rank's micro-batches of ``(index, seed)`` keys, step after step, of one epoch.

    Step ``s`` covers positions ``[s * batch_size, min((s + 1) * batch_size, N))`` of
    :func:`compute_epoch_order`; it is cut into global micro-batches of ``micro_batch_size``
    consecutive positions, and rank ``r`` of ``world_size`` takes positions ``r, r + W, ...`` of
    each (possibly none). The ranks together see exactly the images one process sees, in the same
    micro-batches. Call :meth:`set_epoch` before each epoch; ``start_step`` skips steps (resume).
    With ``labels`` [N] the order is class-aware (:func:`compute_class_aware_order`) instead.
    """

    def __init__(
        self, num_samples: int, seed: int, batch_size: int, micro_batch_size: int,
        rank: int = 0, world_size: int = 1, shuffle: bool = True, labels: np.ndarray | None = None,
    ) -> None:
        if batch_size % micro_batch_size or not 0 <= rank < world_size:
            raise ValueError(f"bad batching: batch {batch_size}, micro {micro_batch_size}, rank {rank}/{world_size}")
        self.num_samples, self.seed, self.shuffle = num_samples, seed, shuffle
        self.batch_size, self.micro_batch_size = batch_size, micro_batch_size
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_step = 0, 0
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        if self.labels is not None and len(self.labels) != num_samples:
            raise ValueError(f"{len(self.labels)} labels for {num_samples} samples")

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        if not 0 <= start_step <= self.steps_per_epoch:
            raise ValueError(f"start step {start_step} outside 0..{self.steps_per_epoch}")
        self.epoch, self.start_step = epoch, start_step

    def step_size(self, step: int) -> int:
        """Images in step ``step`` of an epoch, over all ranks (the last step may be short)."""
        return max(0, min(self.batch_size, self.num_samples - step * self.batch_size))

    def micro_batches_in_step(self, step: int) -> int:
        return math.ceil(self.step_size(step) / self.micro_batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        if self.labels is not None:
            order, seeds = compute_class_aware_order(self.labels, self.seed, self.epoch)
        else:
            order, seeds = compute_epoch_order(self.num_samples, self.seed, self.epoch, self.shuffle)
        for step in range(self.start_step, self.steps_per_epoch):
            first = step * self.batch_size
            stop = first + self.step_size(step)
            for begin in range(first, stop, self.micro_batch_size):
                positions = range(begin + self.rank, min(begin + self.micro_batch_size, stop), self.world_size)
                yield [(int(order[p]), int(seeds[p])) for p in positions]

    def __len__(self) -> int:
        return sum(self.micro_batches_in_step(s) for s in range(self.start_step, self.steps_per_epoch))


def ignore_interrupts(worker_id: int) -> None:
    """DataLoader worker init: leave Ctrl-C / SIGTERM to the main process, which stops at a step
    boundary (a worker still exits when the main process is gone)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


MAX_DEFAULT_WORKERS = 16  # one worker decodes ~300 JPEGs/s: 16 feed ~4,800 img/s, past the GPU targets


def cpus_per_local_rank() -> int:
    """The CPUs this process may use, shared among the ranks of this node (torchrun's LOCAL_WORLD_SIZE)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    local_ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, cpus // local_ranks)


def resolve_num_workers(requested: int | None) -> int:
    """DataLoader workers of this rank: ``requested`` capped at :func:`cpus_per_local_rank` (more only
    thrash); None is the default, one CPU per local rank left to the main process (it launches the
    GPU's work), at least 1, at most :data:`MAX_DEFAULT_WORKERS`."""
    cpus = cpus_per_local_rank()
    if requested is None:
        return max(1, min(cpus - 1, MAX_DEFAULT_WORKERS))
    return min(requested, cpus)


def build_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int | None,
    device: torch.device,
    sampler: Sampler | Iterable[int] | None = None,
    batch_sampler: Sampler | None = None,
) -> DataLoader | DeviceBatches:
    """A DataLoader in ``sampler``'s order (or ``batch_sampler``'s batches, or the dataset's order),
    pinned memory on CUDA, workers kept alive; batches are :class:`MicroBatch` es. When the
    dataset's transform stops at uint8 pixels (:class:`~sage_cli.pixels.UInt8Transform`), the
    loader is wrapped in :class:`~sage_cli.pixels.DeviceBatches`: its images come normalised, on ``device``.

    ``num_workers`` goes through :func:`resolve_num_workers` (None: the default for the CPUs of
    this rank); the data a step sees does not depend on their number.
    """
    num_workers = resolve_num_workers(num_workers)
    batching: dict[str, Any] = ({"batch_sampler": batch_sampler} if batch_sampler is not None else
                                {"batch_size": batch_size, "sampler": sampler, "shuffle": False, "drop_last": False})
    loader = DataLoader(
        dataset,
        **batching,
        num_workers=num_workers,
        collate_fn=collate_samples,
        pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0,
        worker_init_fn=ignore_interrupts if num_workers > 0 else None,
    )
    normalize = device_normalizer(dataset)
    return loader if normalize is None else DeviceBatches(loader, device, normalize)


def iterate_batches(loader: Iterable[Any]) -> Iterator[Any]:
    """Iterate ``loader``; a SageError raised in a worker comes back as its own one-line message."""
    try:
        yield from loader
    except SageError as exc:
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        message = lines[-1] if lines else str(exc)
        raise SageError(message.split("SageError: ", 1)[-1]) from None
