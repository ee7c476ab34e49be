"""CIFAR-100-LT from the official ``cifar-100-python`` pickles, the way LDAM and LIFT build it.

Class ``i`` keeps ``int(500 * (1/IR) ** (i / 99))`` training images: with one generator seeded 0,
for each class in order the indices of its images are shuffled and the first ``n_i`` kept (LDAM's
``IMBALANCECIFAR100``), so the same images are chosen. Images are written as PNGs under
``OUT/images``; the test split is the full 10,000.
"""

from __future__ import annotations

import logging
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from sage_cli.errors import SageError
from sage_cli.prepare.source import SourceData

logger = logging.getLogger(__name__)

FILES = ("train", "test", "meta")
NUM_CLASSES = 100
GROUP_SOURCES = ("ir100", "own")
# The pickles hold numpy arrays, lists, bytes and ints: nothing else may be unpickled.
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def input_files(root: Path) -> dict[str, Path]:
    """The three pickles; SageError naming the first missing one."""
    files = {name: root / name for name in FILES}
    for path in files.values():
        if not path.is_file():
            raise SageError(f"{path}: missing; --root must be the unpacked cifar-100-python folder "
                            "(train, test, meta); see docs/datasets.md")
    return files


def load_pickle(path: Path) -> dict[bytes, Any]:
    """One official CIFAR pickle (a dict with bytes keys), loaded with a restricted unpickler."""
    try:
        with open(path, "rb") as f:
            data = _DataUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, OSError) as exc:
        raise SageError(f"{path}: not a CIFAR-100 python pickle ({exc})") from None
    if not isinstance(data, dict):
        raise SageError(f"{path}: not a CIFAR-100 python pickle (no dict)")
    return data


def compute_counts(imbalance_ratio: float, img_max: int = 500, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Training images per class: ``int(img_max * (1/IR) ** (i / (C-1)))`` (LDAM's exponential profile)."""
    factor = 1.0 / imbalance_ratio
    return np.array([int(img_max * factor ** (i / (num_classes - 1.0))) for i in range(num_classes)])


def select_indices(targets: np.ndarray, counts: np.ndarray, seed: int = 0) -> np.ndarray:
    """Indices into the train set kept per class, in LDAM's order (class 0's first)."""
    rng = np.random.RandomState(seed)  # the same stream as np.random.seed(seed); np.random.shuffle
    chosen = []
    for label, n in enumerate(counts):
        idx = np.where(targets == label)[0]
        rng.shuffle(idx)
        chosen.append(idx[:n])
    return np.concatenate(chosen)


def _arrays(data: dict[bytes, Any], path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        images = np.asarray(data[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = np.asarray(data[b"fine_labels"], dtype=np.int64)
    except (KeyError, ValueError) as exc:
        raise SageError(f"{path}: not a CIFAR-100 python pickle (bad {exc})") from None
    if len(images) != len(labels) or labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise SageError(f"{path}: {len(images)} images, {len(labels)} labels in 0..{labels.max()}; expected "
                        f"as many labels as images, in 0..{NUM_CLASSES - 1}")
    return images, labels


def _write_pngs(images: np.ndarray, paths: list[str], out: Path, workers: int | None) -> None:
    for folder in {str(Path(p).parent) for p in paths}:
        (out / folder).mkdir(parents=True, exist_ok=True)

    def save(i: int) -> None:
        Image.fromarray(images[i]).save(out / paths[i], compress_level=1)  # lossless; fast

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(save, range(len(paths)), chunksize=256))


def load_cifar100_lt(root: Path, out: Path, imbalance_ratio: float, groups_from: str,
                     workers: int | None = None) -> SourceData:
    """Build CIFAR-100-LT at ``imbalance_ratio`` into ``out/images``; groups from IR-100 or own counts."""
    files = input_files(root)
    names = [n.decode() for n in load_pickle(files["meta"])[b"fine_label_names"]]
    counts = compute_counts(imbalance_ratio)
    rows = []
    for split in ("train", "test"):
        images, labels = _arrays(load_pickle(files[split]), files[split])
        if split == "train":
            have = np.bincount(labels, minlength=NUM_CLASSES)
            if (have < counts).any():
                c = int(np.flatnonzero(have < counts)[0])
                raise SageError(f"{files[split]}: class {c} ({names[c]!r}) has {have[c]} images; needs {counts[c]}")
        index = select_indices(labels, counts) if split == "train" else np.arange(len(labels))
        paths = [f"images/{split}/{i:05d}.png" for i in index]
        _write_pngs(images[index], paths, out, workers)
        rows.append(pd.DataFrame({"path": paths, "label": labels[index], "split": split}))
        logger.info("cifar100-lt: wrote %d %s images", len(paths), split)
    group_counts = compute_counts(100.0) if groups_from == "ir100" else None
    return SourceData(pd.concat(rows, ignore_index=True), names, out, generated=True, group_counts=group_counts,
                      notes={"groups_from": groups_from})
