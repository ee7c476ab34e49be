"""User datasets: an image-folder tree (``folder``) or a CSV of ``path,label[,split]`` (``csv``).

``folder``: ``ROOT/<split>/<class>/<image>`` (split layout: a ``train``, ``val`` or ``test`` folder in
ROOT) or ``ROOT/<class>/<image>`` (flat layout, split by prepare: :mod:`.stratify`); class ids
follow the sorted class folders of train, names are the folder names with underscores as spaces.
A CSV without a ``split`` column is split the same way. ``csv``: ``--root`` is the CSV file or a
folder holding one; paths are relative to the CSV's folder; a label is an integer id or a class
name (ids then follow the ``--classnames`` order, else the sorted names of the train rows).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from sage_cli import artifacts
from sage_cli.errors import SageError
from sage_cli.prepare.names import read_names_file
from sage_cli.prepare.source import SourceData
from sage_cli.textsafe import is_utf8

logger = logging.getLogger(__name__)

LAYOUTS = {"split": "ROOT/<split>/<class>/<image>", "flat": "ROOT/<class>/<image>"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def detect_layout(root: Path) -> str:
    """``split`` when ROOT holds a ``train``, ``val`` or ``test`` folder, else ``flat``."""
    return "split" if any((root / split).is_dir() for split in artifacts.SPLITS) else "flat"


def list_folder(root: Path) -> pd.DataFrame:
    """Rows ``path`` (relative to root), ``class_folder``, ``split`` of every image, sorted.

    In the flat layout every image is listed as train (prepare splits them afterwards).
    """
    flat = detect_layout(root) == "flat"
    rows = []
    for split in (("train",) if flat else artifacts.SPLITS):
        split_dir = root if flat else root / split
        if not split_dir.is_dir():
            continue
        prefix = "" if flat else f"{split}/"
        for cls in sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith(".")):
            _require_utf8(split_dir / cls)
            for entry in sorted(os.scandir(split_dir / cls), key=lambda e: e.name):
                if entry.is_file() and Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
                    _require_utf8(split_dir / cls / entry.name)
                    rows.append((f"{prefix}{cls}/{entry.name}", cls, split))
    listing = pd.DataFrame(rows, columns=["path", "class_folder", "split"])
    if not (listing["split"] == "train").any():
        where = f"{root}/<class>/" if flat else f"{root / 'train'}/<class>/"
        raise SageError(f"{root}: no images in {where}; the folder source expects ROOT/<class>/<image> "
                        "or ROOT/<split>/<class>/<image>")
    return listing


def _require_utf8(path: Path) -> None:
    """Refuse a file or folder name that is not UTF-8: manifests and class names are UTF-8 text."""
    if not is_utf8(path.name):
        raise SageError(f"{path}: the name is not valid UTF-8; rename it (manifest paths and class names are "
                        "UTF-8 text)")


def folder_inputs(root: Path) -> dict[str, str]:
    """A content hash of the folder listing (a renamed or added image changes it)."""
    return {"listing": artifacts.sha256_json(list_folder(root)["path"].tolist())}


def load_folder(root: Path, classnames: Path | None = None) -> SourceData:
    """Labels from the sorted train class folders; val/test folders must be train classes."""
    listing = list_folder(root)
    folders = sorted(listing.loc[listing["split"] == "train", "class_folder"].unique())
    ids = {name: i for i, name in enumerate(folders)}
    unknown = listing[~listing["class_folder"].isin(ids)]
    if len(unknown):
        row = unknown.iloc[0]
        raise SageError(f"{root / row['split'] / row['class_folder']}: class folder has no train folder "
                        f"({root / 'train' / row['class_folder']})")
    names = [f.replace("_", " ") for f in folders]
    if classnames is not None:
        names = _names_for(classnames, folders)
    labels = listing["class_folder"].map(ids).astype(np.int64)
    manifest = pd.DataFrame({"path": listing["path"], "label": labels, "split": listing["split"]})
    layout = detect_layout(root)
    return SourceData(manifest, names, root, unsplit=layout == "flat", notes={"layout": LAYOUTS[layout]})


def _names_for(path: Path, folders: list[str]) -> list[str]:
    ordered, mapping = read_names_file(path)
    if mapping and all(f in mapping for f in folders):
        return [mapping[f] for f in folders]
    if len(ordered) != len(folders):
        raise SageError(f"{path}: lists {len(ordered)} class names; the dataset has {len(folders)} classes")
    return ordered


def csv_has_split(root: Path) -> bool:
    """Whether the CSV of ``root`` has a ``split`` column (its header only is read)."""
    try:
        columns = pd.read_csv(find_csv(root), nrows=0, skipinitialspace=True).columns
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError):
        return True  # unreadable: load_csv names the fault
    return "split" in [str(c).strip() for c in columns]


def find_csv(root: Path) -> Path:
    """``root`` itself, or the one CSV file in the folder ``root``."""
    if root.is_file():
        return root
    found = sorted(p for p in root.glob("*.csv") if p.name != "dropped.csv") if root.is_dir() else []
    if len(found) != 1:
        what = "no CSV file" if not found else f"{len(found)} CSV files"
        raise SageError(f"{root}: holds {what}; pass the CSV file itself as --root")
    return found[0]


def load_csv(root: Path, classnames: Path | None = None) -> SourceData:
    """Rows of ``path,label[,split]``; errors name ``file:line``."""
    path = find_csv(root)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise SageError(f"{path}: not a readable CSV file ({str(exc).strip()})") from None
    missing = [c for c in ("path", "label") if c not in table.columns]
    if missing:
        raise SageError(f"{path}: needs columns path,label[,split]; missing {', '.join(missing)}")
    split = table["split"].str.strip() if "split" in table.columns else pd.Series("train", index=table.index)
    _check_rows(path, table["path"] == "", "an empty path")
    _check_rows(path, ~split.isin(artifacts.SPLITS), "split must be train, val or test", split)
    labels, names = _csv_labels(path, table["label"].str.strip(), split, classnames)
    manifest = pd.DataFrame({"path": table["path"], "label": labels, "split": split})
    unsplit = "split" not in table.columns
    return SourceData(manifest, names, path.parent, unsplit=unsplit,
                      notes={"layout": "CSV without a split column" if unsplit else "CSV with a split column"})


def _class_ids(path: Path, labels: pd.Series, split: pd.Series, num_classes: int | None) -> np.ndarray:
    """Integer labels as ids, checked before any per-class list is built: ``num_classes`` when
    --classnames gives it, else the train rows' ids, which must number the classes 0..C-1 without a
    gap (a class without a train row could not train); so C never exceeds the number of train rows."""
    digits = labels.str.lstrip("-").str.lstrip("0").str.len()
    _check_rows(path, digits > 18, "label is too large to be a class id", labels)  # int64 holds 18 digits
    ids = labels.astype(np.int64).to_numpy()
    train = ids[split.to_numpy() == "train"]
    count = num_classes if num_classes is not None else int(train.max(initial=0)) + 1
    _check_rows(path, pd.Series((ids < 0) | (ids >= count)), f"label is outside 0..{count - 1}", labels)
    present = np.unique(train)
    gap = np.flatnonzero(present != np.arange(len(present)))
    if num_classes is None and len(gap):
        value = present[gap[0]]
        _check_rows(path, pd.Series(ids == value) & (split == "train"),
                    f"label {value} skips class id {gap[0]}, which has no train row; integer labels must "
                    "number the classes 0..C-1, each with train rows")
    return ids


def _check_rows(path: Path, bad: pd.Series, what: str, values: pd.Series | None = None) -> None:
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        shown = f" (got {values.iloc[i]!r})" if values is not None else ""
        raise SageError(f"{path}:{i + 2}: {what}{shown}")  # line 1 is the header


def _csv_labels(path: Path, labels: pd.Series, split: pd.Series,
                classnames: Path | None) -> tuple[np.ndarray, list[str]]:
    """Integer labels and class names; labels may be ids or names."""
    given = read_names_file(classnames)[0] if classnames is not None else None
    if labels.str.fullmatch(r"-?\d+").all():
        ids = _class_ids(path, labels, split, None if given is None else len(given))
        if given is None:
            logger.warning("%s: integer labels and no --classnames: classes are named 'class <id>'", path)
        return ids, given or [f"class {i}" for i in range(int(ids[split.to_numpy() == "train"].max(initial=0)) + 1)]
    names = given or sorted(labels[split == "train"].unique())
    ids = {name: i for i, name in enumerate(names)}
    _check_rows(path, ~labels.isin(ids), "label is not a class name " +
                ("in --classnames" if given else "of any train row"), labels)
    return labels.map(ids).to_numpy(np.int64), names
