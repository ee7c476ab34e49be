"""Checks that every listed image is there (and, with ``--verify decode``, decodes); ``dropped.csv``.

Both checks run over chunks of paths in a thread pool: ``os.path.isfile`` and Pillow's decoders
release the GIL, so threads keep every core busy without pickling paths to worker processes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from sage_cli import artifacts
from sage_cli.errors import SageError

logger = logging.getLogger(__name__)

DROPPED = "dropped.csv"
VERIFY_MODES = ("exists", "decode")
CHUNK = 4096
Progress = Callable[[int, int], None]  # (done, total) images


def default_workers() -> int:
    return min(32, 4 * (os.cpu_count() or 1))


def _exists_chunk(paths: Sequence[str]) -> list[str | None]:
    return [None if os.path.isfile(p) else "missing" for p in paths]


def _decode_chunk(paths: Sequence[str]) -> list[str | None]:
    reasons: list[str | None] = []
    for path in paths:
        if not os.path.isfile(path):
            reasons.append("missing")
            continue
        try:
            with Image.open(path) as image:
                image.load()
            reasons.append(None)
        except Exception as exc:  # Pillow raises many types for corrupt files
            reasons.append(f"undecodable ({exc.__class__.__name__})")
    return reasons


def find_bad_images(paths: Sequence[str], root: Path, verify: str = "exists", workers: int | None = None,
                    progress: Progress | None = None) -> list[str | None]:
    """Per path (relative to ``root``): None if fine, else the reason ("missing", "undecodable (...)")."""
    check = _decode_chunk if verify == "decode" else _exists_chunk
    prefix = str(root) + os.sep
    full = [prefix + p for p in paths]
    chunk = CHUNK if verify == "exists" else 64
    chunks = [full[i:i + chunk] for i in range(0, len(full), chunk)]
    reasons: list[str | None] = []
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        for done in pool.map(check, chunks):
            reasons.extend(done)
            if progress is not None:
                progress(len(reasons), len(full))
    return reasons


def apply_checks(manifest: pd.DataFrame, root: Path, verify: str, skip_bad: bool, workers: int | None,
                 progress: Progress | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The manifest without bad images and the dropped rows (path, split, reason).

    Without ``skip_bad`` any bad image is a SageError giving the count and the first few paths.
    """
    reasons = np.array(find_bad_images(manifest["path"].tolist(), root, verify, workers, progress), dtype=object)
    bad = np.array([r is not None for r in reasons], dtype=bool)
    dropped = manifest.loc[bad, ["path", "split"]].assign(reason=reasons[bad]).reset_index(drop=True)
    if len(dropped) and not skip_bad:
        kinds = dropped["reason"].str.split(" ").str[0].value_counts()
        kinds = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
        first = ", ".join(dropped["path"].head(3))
        raise SageError(f"{len(dropped)} listed image(s) under {root} are bad ({kinds}), e.g. {first}; "
                        "fix them or pass --skip-bad to drop them (listed in dropped.csv)")
    if len(dropped):
        logger.warning("dropped %d bad image(s); see %s", len(dropped), DROPPED)
    return manifest.loc[~bad].reset_index(drop=True), dropped


def save_dropped(out: Path, dropped: pd.DataFrame) -> None:
    """Write ``dropped.csv`` atomically, or remove a stale one when nothing was dropped."""
    if dropped.empty:
        (out / DROPPED).unlink(missing_ok=True)
        return
    artifacts.write_bytes_atomic(out / DROPPED, dropped.to_csv(index=False).encode())
