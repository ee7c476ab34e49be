"""ImageNet-LT, Places-LT and iNaturalist 2018: split files of ``<path> <label>`` lines.

Split files are parsed vectorised (``pd.read_csv``); only when that fails is the file scanned line
by line, to name the exact ``file:line`` at fault. Paths stay relative to the dataset root, which
becomes the prepared dataset's ``image_root``. Labels are taken as written, except that
iNaturalist's category ids are renumbered by default as LIFT numbers them: a class's label is the
index of its species name in the sorted names (``--label-order species``; ``category-id`` keeps
the ids as written).
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from sage_cli.errors import SageError
from sage_cli.prepare import names as class_names
from sage_cli.prepare.recipes import load_recipe
from sage_cli.prepare.source import SourceData

logger = logging.getLogger(__name__)

SPLIT_DATASETS = ("imagenet-lt", "places-lt", "inat2018")
LABEL_ORDERS = ("species", "category-id")  # inat2018: LIFT's (sorted species names) or the ids as written
# Optional files in ROOT that name the classes, per dataset.
NAME_FILES = {"imagenet-lt": "LOC_synset_mapping.txt", "inat2018": "categories.json"}


def split_files(dataset: str, root: Path) -> dict[str, Path]:
    """split -> split file of ``dataset`` under ``root`` (from its recipe); SageError if one is missing."""
    files = {split: root / name for split, name in load_recipe(dataset)["split_files"].items()}
    for path in files.values():
        if not path.is_file():
            raise SageError(f"{path}: missing; --root must hold the {dataset} split files "
                            f"({', '.join(p.name for p in files.values())}); see docs/datasets.md")
    return files


def input_files(dataset: str, root: Path, classnames: Path | None) -> dict[str, Path]:
    """Every file whose content defines the prepared dataset (hashed into the fingerprint)."""
    files = {path.name: path for path in split_files(dataset, root).values()}
    names_file = _names_file(dataset, root, classnames)
    if names_file is not None:
        files[f"classnames:{names_file.name}"] = names_file
    return files


def _names_file(dataset: str, root: Path, classnames: Path | None) -> Path | None:
    """``--classnames``, else the dataset's own names file in ROOT if present."""
    if classnames is not None or dataset not in NAME_FILES:
        return classnames
    own = root / NAME_FILES[dataset]
    return own if own.is_file() else None


def parse_split_file(path: Path) -> pd.DataFrame:
    """Columns ``path``, ``label`` (int64) and ``line`` (1-based) of a ``<path> <label>`` file."""
    try:
        table = pd.read_csv(path, sep=" ", header=None, names=["path", "label"], dtype=str, na_filter=False,
                            skip_blank_lines=False, quoting=csv.QUOTE_NONE, engine="c")
        table["line"] = np.arange(1, len(table) + 1)
        table = table[(table["path"] != "") | (table["label"] != "")]
        table["label"] = table["label"].astype(np.int64)
    except (ValueError, pd.errors.ParserError):
        return _scan_split_file(path)
    return table.reset_index(drop=True)


def _scan_split_file(path: Path) -> pd.DataFrame:
    """The slow, exact parser: SageError naming ``file:line`` of the first malformed line."""
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise SageError(f"{path}:{number}: expected '<path> <label>' (2 columns), got {len(parts)}: "
                                f"{line.strip()[:80]!r}")
            try:
                label = int(parts[1])
            except ValueError:
                raise SageError(f"{path}:{number}: label {parts[1]!r} is not an integer") from None
            rows.append((parts[0], label, number))
    return pd.DataFrame(rows, columns=["path", "label", "line"]).astype({"label": np.int64})


def load_split_dataset(dataset: str, root: Path, classnames: Path | None = None, by_name: bool = False) -> SourceData:
    """Parse the split files of ``dataset``, resolve class names and validate every label.

    ``by_name``: renumber the labels by the alphabetical order of their class names (LIFT's
    iNaturalist labels), which must come from a names file and be distinct.
    """
    parts = []
    for split, path in split_files(dataset, root).items():
        table = parse_split_file(path)
        if table.empty:
            raise SageError(f"{path}: lists no image")
        table["split"], table["file"] = split, path
        parts.append(table)
        logger.info("%s: %d lines", path.name, len(table))
    train = parts[0]
    names = read_class_names(dataset, root, train, classnames)
    for table in parts:
        _check_labels(table, len(names))
    if by_name:
        names, parts = sort_labels_by_name(names, parts, _names_file(dataset, root, classnames), dataset)
    names, warnings = class_names.make_unique(names, class_names.folder_keys(train) if dataset == "imagenet-lt"
                                              else None)
    manifest = pd.concat([t[["path", "label", "split"]] for t in parts], ignore_index=True)
    return SourceData(manifest, names, root, warnings=warnings)


def sort_labels_by_name(names: list[str], tables: list[pd.DataFrame], names_file: Path | None,
                        dataset: str) -> tuple[list[str], list[pd.DataFrame]]:
    """Names in alphabetical order and the tables relabelled to match: label ``k`` becomes the
    index of ``names[k]`` in ``sorted(names)`` (LIFT's ``cname2lab`` over the species names)."""
    if names_file is None:
        raise SageError(f"{dataset}: LIFT's label order sorts the species names, so it needs categories.json in "
                        "--root (or --classnames); or keep the ids as written with --label-order category-id")
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise SageError(f"{names_file}: {len(duplicates)} class name(s) name two categories ({duplicates[0]!r}, ...), "
                        "so sorting the names cannot number the classes; use --label-order category-id")
    order = sorted(range(len(names)), key=lambda k: names[k])  # order[new] = old
    new_label = np.empty(len(names), dtype=np.int64)
    new_label[order] = np.arange(len(names))
    relabelled = [table.assign(label=new_label[table["label"].to_numpy()]) for table in tables]
    return [names[k] for k in order], relabelled


def _check_labels(table: pd.DataFrame, num_classes: int) -> None:
    labels = table["label"].to_numpy()
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        row = table.iloc[int(bad[0])]
        raise SageError(f"{row['file']}:{int(row['line'])}: label {int(row['label'])} is outside "
                        f"0..{num_classes - 1} ({num_classes} classes)")


def read_class_names(dataset: str, root: Path, train: pd.DataFrame, classnames: Path | None) -> list[str]:
    """Class names in label order, as the names file or the folders give them (not yet made distinct)."""
    keys = class_names.folder_keys(train)
    num_labels = int(train["label"].max()) + 1
    names_file = _names_file(dataset, root, classnames)
    if names_file is not None:
        return _names_from_file(names_file, keys)
    if dataset == "imagenet-lt":
        return [keys[i][0] if keys.get(i) else f"class {i}" for i in range(num_labels)]
    return [class_names.name_from_folders(keys[i]) if keys.get(i) else f"class {i}" for i in range(num_labels)]


def _names_from_file(path: Path, keys: dict[int, list[str]]) -> list[str]:
    if path.suffix == ".json":
        return class_names.read_categories_json(path)
    ordered, mapping = class_names.read_names_file(path)
    return class_names.names_by_key(mapping, keys, path) or ordered
