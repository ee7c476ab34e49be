"""Checks that every listed image is there (and, with ``--verify decode``, decodes); ``dropped.csv``.

Both checks run over chunks of paths in a thread pool: ``os.path.isfile`` and Pillow's decoders
release the GIL, so threads keep every core busy without pickling paths to worker processes.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from sage_cli import artifacts
from sage_cli.errors import SageError
from sage_cli.imageio import open_image

logger = logging.getLogger(__name__)

DROPPED = "dropped.csv"
VERIFY_MODES = ("exists", "decode")
CHUNK = 4096
Progress = Callable[[int, int], None]  # (done, total) images


def default_workers() -> int:
    return min(32, 4 * (os.cpu_count() or 1))


OUTSIDE = "outside the root"


def _exists_chunk(paths: Sequence[str], root_prefix: str) -> list[str | None]:
    """None for a file under the root; "missing"; or :data:`OUTSIDE` for a symlink leading out of it.

    One ``lstat`` per path (what ``isfile`` costs); only symlinks are resolved.
    """
    reasons: list[str | None] = []
    for path in paths:
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            reasons.append("missing")
            continue
        if stat.S_ISLNK(mode):
            real = os.path.realpath(path)
            reasons.append("missing" if not os.path.isfile(real) else None if real.startswith(root_prefix) else OUTSIDE)
        else:
            reasons.append(None if stat.S_ISREG(mode) else "missing")
    return reasons


def _decode_chunk(paths: Sequence[str], root_prefix: str) -> list[str | None]:
    reasons = _exists_chunk(paths, root_prefix)
    for i, path in enumerate(paths):
        if reasons[i] is not None:
            continue
        try:
            with open_image(path) as image:
                image.load()
        except SageError:  # over PIL's decompression-bomb limit
            reasons[i] = "undecodable (too large)"
        except Exception as exc:  # Pillow raises many types for corrupt files
            reasons[i] = f"undecodable ({exc.__class__.__name__})"
    return reasons


def find_bad_images(paths: Sequence[str], root: Path, verify: str = "exists", workers: int | None = None,
                    progress: Progress | None = None) -> list[str | None]:
    """Per path (relative to ``root``, or absolute): None if fine, else the reason ("missing",
    "undecodable (...)", or :data:`OUTSIDE` for a path that resolves outside ``root``)."""
    check = _decode_chunk if verify == "decode" else _exists_chunk
    root_prefix = os.path.realpath(root) + os.sep
    prefix = str(root) + os.sep
    full = [p if p.startswith("/") else prefix + p for p in paths]  # an absolute path stays itself
    outside = find_outside_paths(paths, full, root_prefix)
    chunk = CHUNK if verify == "exists" else 64
    chunks = [full[i:i + chunk] for i in range(0, len(full), chunk)]
    reasons: list[str | None] = []
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        for done in pool.map(check, chunks, [root_prefix] * len(chunks)):
            reasons.extend(done)
            if progress is not None:
                progress(len(reasons), len(full))
    for i in outside:
        reasons[i] = OUTSIDE if reasons[i] != "missing" else reasons[i]
    return reasons


def find_outside_paths(paths: Sequence[str], full: Sequence[str], root_prefix: str) -> list[int]:
    """Indices of paths that lead outside the root lexically (``..``, absolute) or through a
    symlinked directory. Only suspicious paths are resolved, and of the directories only those
    that are symlinks (one ``lstat`` per distinct directory: 8,156 for iNaturalist's 461,939 paths)."""
    outside = {i for i, p in enumerate(paths)
               if (".." in p or p.startswith(("/", "\\")) or p[1:2] == ":")
               and not os.path.realpath(full[i]).startswith(root_prefix)}
    parents = [p.rpartition("/")[0] for p in paths]
    ancestors: set[str] = set()
    for directory in set(parents):
        while directory and directory not in ancestors:
            ancestors.add(directory)
            directory = directory.rpartition("/")[0]
    escaping = [d for d in ancestors if os.path.islink(root_prefix + d)
                and not (os.path.realpath(root_prefix + d) + os.sep).startswith(root_prefix)]
    if escaping:
        outside.update(i for i, d in enumerate(parents) if any(d == e or d.startswith(e + "/") for e in escaping))
    return sorted(outside)


def apply_checks(manifest: pd.DataFrame, root: Path, verify: str, skip_bad: bool, workers: int | None,
                 progress: Progress | None = None, allow_outside_root: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The manifest without bad images and the dropped rows (path, split, reason).

    Without ``skip_bad`` any bad image is a SageError giving the count and the first few paths; a
    path resolving outside ``root`` (``..``, an absolute path elsewhere, a symlink out) is one
    unless ``allow_outside_root``.
    """
    reasons = np.array(find_bad_images(manifest["path"].tolist(), root, verify, workers, progress), dtype=object)
    outside = np.array([r == OUTSIDE for r in reasons], dtype=bool)
    if outside.any() and not allow_outside_root:
        first = manifest["path"].to_numpy()[outside][:3]
        raise SageError(f"{int(outside.sum())} listed image path(s) resolve outside {root}, e.g. "
                        f"{', '.join(map(repr, first))}; pass --allow-outside-root to accept them")
    reasons[outside] = None
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
