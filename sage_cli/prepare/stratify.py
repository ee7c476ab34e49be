"""A seeded, stratified train/val/test split for user data that comes without one.

A flat ``ROOT/<class>/<image>`` folder or a CSV without a ``split`` column is split per class: each
class's images (in listing order) are shuffled with ``numpy.random.default_rng(seed)`` and the first
ones go to test, the next to val, the rest to train. A split asked for by a fraction gets
``round(n * fraction)`` images of a class of ``n`` (halves round up) and at least one; by a
per-class count, that count. Every class keeps at least one training image: a class too small for
everything asked gives up val images first, then test images, and one warning names such classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sage_cli.errors import SageError

DEFAULT_VAL_FRACTION = 0.1
DEFAULT_TEST_FRACTION = 0.2
NAMED_IN_WARNING = 5  # classes named in the one warning line about classes left without val/test


@dataclass(frozen=True)
class SplitSpec:
    """How many val/test images each class gets: a fraction or a per-class count per split."""

    val_fraction: float | None = None
    test_fraction: float | None = None
    val_per_class: int | None = None
    test_per_class: int | None = None

    def __post_init__(self) -> None:
        for split in ("val", "test"):
            fraction, count = getattr(self, f"{split}_fraction"), getattr(self, f"{split}_per_class")
            if fraction is not None and count is not None:
                raise SageError(f"--{split}-fraction and --{split}-per-class exclude each other; give one")
            if fraction is not None and not 0 <= fraction < 1:
                raise SageError(f"--{split}-fraction must be in [0, 1); got {fraction}")
            if count is not None and count < 0:
                raise SageError(f"--{split}-per-class must be >= 0; got {count}")
        if self.fraction("val") + self.fraction("test") >= 1:
            raise SageError(f"--val-fraction + --test-fraction must be below 1 (some images must train); "
                            f"got {self.fraction('val')} + {self.fraction('test')}")

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.val_fraction, self.test_fraction, self.val_per_class,
                                           self.test_per_class))

    def fraction(self, split: str) -> float:
        """The fraction asked for ``split`` (0 when a per-class count is asked instead)."""
        if getattr(self, f"{split}_per_class") is not None:
            return 0.0
        value = getattr(self, f"{split}_fraction")
        if value is not None:
            return value
        return DEFAULT_VAL_FRACTION if split == "val" else DEFAULT_TEST_FRACTION

    def wanted(self, split: str, n: int) -> int:
        """Images of a class of ``n`` that ``split`` asks for, before the train image is kept."""
        count = getattr(self, f"{split}_per_class")
        if count is not None:
            return count
        fraction = self.fraction(split)
        return max(1, math.floor(n * fraction + 0.5)) if fraction > 0 else 0

    def describe(self) -> dict[str, float | int]:
        """The resolved spec, as recorded in prepare.json."""
        out: dict[str, float | int] = {}
        for split in ("val", "test"):
            count = getattr(self, f"{split}_per_class")
            if count is not None:
                out[f"{split}_per_class"] = count
            else:
                out[f"{split}_fraction"] = self.fraction(split)
        return out


def compute_split_counts(n: int, spec: SplitSpec) -> tuple[int, int]:
    """(val, test) images of a class of ``n``; at least one image stays for training."""
    val, test = spec.wanted("val", n), spec.wanted("test", n)
    spare = max(n - 1, 0)
    test = min(test, spare)
    val = min(val, spare - test)
    return val, test


def split_manifest(manifest: pd.DataFrame, names: list[str], spec: SplitSpec, seed: int
                   ) -> tuple[pd.DataFrame, list[str]]:
    """``manifest`` (all rows train) with a stratified ``split`` column, and the warnings of the split."""
    rng = np.random.default_rng(seed)
    split = np.full(len(manifest), "train", dtype=object)
    labels = manifest["label"].to_numpy()
    short: list[tuple[int, int, list[str]]] = []  # (class, images, splits left empty)
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        val, test = compute_split_counts(len(rows), spec)
        order = rows[rng.permutation(len(rows))]
        split[order[:test]] = "test"
        split[order[test:test + val]] = "val"
        missing = [s for s, got in (("val", val), ("test", test)) if got == 0 and spec.wanted(s, len(rows)) > 0]
        if missing:
            short.append((int(label), len(rows), missing))
    out = manifest.copy()
    out["split"] = split
    return out, [describe_short_classes(short, names)] if short else []


def describe_short_classes(short: list[tuple[int, int, list[str]]], names: list[str]) -> str:
    """One line: how many classes got no val/test image, naming the first few."""
    shown = ", ".join(f"{names[c]!r} ({n} image{'s' if n != 1 else ''}: no {'/'.join(m)})"
                      for c, n, m in short[:NAMED_IN_WARNING])
    more = f" and {len(short) - NAMED_IN_WARNING} more" if len(short) > NAMED_IN_WARNING else ""
    return (f"{len(short)} class(es) too small for a val/test image (each keeps one for training): "
            f"{shown}{more}")
