"""Class names: a ``--classnames`` file, LOC_synset_mapping.txt, categories.json or image folders.

Names end up in text prompts, so two classes must never share one: duplicates (ImageNet has a
few, e.g. two "crane" classes) are made distinct with the class's folder id or a number, with a
warning. Names are also printed and written into reports, so control characters and terminal
escape sequences are stripped from them (:func:`clean_names`), with a warning naming the class.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from sage_cli.errors import SageError
from sage_cli.textsafe import strip_control

logger = logging.getLogger(__name__)

_WNID = re.compile(r"^n\d{8}$")


def read_names_file(path: Path) -> tuple[list[str], dict[str, str]]:
    """Names in file order and, for ``<wnid> <name>`` / ``<name> <id>`` files, a key -> name map.

    Four formats: ``n01440764 tench, Tinca tinca`` (first comma-separated name kept; LIFT's
    ImageNet-LT ``classnames.txt`` is this format); ``/a/airfield 0`` (Places365 categories file:
    the id orders the list); ``apartment_building-outdoor apartment_building-outdoor`` (LIFT's
    Places-LT ``classnames.txt``: folder and name, ``_`` read as a space as LIFT's prompts do); one
    name per line.
    """
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise SageError(f"{path}: cannot read class names ({exc})") from None
    lines = [line for line in lines if line]
    if not lines:
        raise SageError(f"{path}: holds no class names")
    first = [line.split(maxsplit=1) for line in lines]
    if all(len(p) == 2 and _WNID.match(p[0]) for p in first):
        mapping = {key: rest.split(",")[0].strip() for key, rest in first}
        return list(mapping.values()), mapping
    if all(len(p) == 2 and " " not in p[1] and p[0] == p[1] for p in first):  # LIFT's Places-LT classnames.txt
        return [rest.replace("_", " ") for _, rest in first], {}
    last = [line.rsplit(maxsplit=1) for line in lines]
    if all(len(p) == 2 and p[0].startswith("/") and p[1].isdigit() for p in last):
        ordered = sorted(((int(i), name_from_folders(n.strip("/").split("/"))) for n, i in last))
        if [i for i, _ in ordered] != list(range(len(ordered))):
            raise SageError(f"{path}: the ids of '<name> <id>' lines must run 0..{len(ordered) - 1}")
        return [n for _, n in ordered], {}
    return lines, {}


def read_categories_json(path: Path) -> list[str]:
    """Names by category id from an iNaturalist ``categories.json`` (ids must run 0..C-1)."""
    try:
        categories = json.loads(path.read_text(encoding="utf-8"))
        by_id = {int(c["id"]): str(c["name"]) for c in categories}
    except (OSError, ValueError, TypeError, KeyError, RecursionError) as exc:
        raise SageError(f"{path}: not a list of {{'id', 'name'}} categories ({exc})") from None
    if sorted(by_id) != list(range(len(by_id))):
        raise SageError(f"{path}: category ids must run 0..{len(by_id) - 1}")
    return [by_id[i] for i in range(len(by_id))]


def name_from_folders(folders: list[str]) -> str:
    """``["a", "apartment_building", "outdoor"]`` -> "apartment building outdoor" (letter dir dropped)."""
    if len(folders) > 1 and len(folders[0]) == 1:
        folders = folders[1:]
    return " ".join(folders).replace("_", " ").strip()


def folder_keys(train: pd.DataFrame) -> dict[int, list[str]]:
    """label -> the folders between the split dir and the file of its first training image."""
    first = train.drop_duplicates("label").sort_values("label")
    return {int(label): path.split("/")[1:-1] for label, path in zip(first["label"], first["path"])}


def names_by_key(mapping: Mapping[str, str], keys: dict[int, list[str]], source: Path) -> list[str] | None:
    """Names of labels 0..max via their first folder's key in ``mapping``; None if keys do not apply."""
    if not keys or not all(k and k[0] in mapping for k in keys.values()):
        return None
    missing = [label for label in range(max(keys) + 1) if label not in keys]
    if missing:
        return None  # labels without training images: fall back to the file's order
    logger.info("class names from %s by folder id", source)
    return [mapping[keys[label][0]] for label in range(max(keys) + 1)]


def clean_names(names: list[str]) -> tuple[list[str], list[str]]:
    """Names without control characters or ANSI escapes (made distinct again) and the warnings."""
    cleaned = [" ".join(strip_control(name).split()) for name in names]
    changed = [i for i, (old, new) in enumerate(zip(names, cleaned)) if old != new]
    if not changed:
        return list(names), []
    empty = [i for i in changed if not cleaned[i]]
    if empty:
        raise SageError(f"class {empty[0]} is named {names[empty[0]]!r}: nothing is left of the name "
                        "without its control characters; give the class a name")
    shown = "; ".join(f"class {i} {names[i]!r} -> {cleaned[i]!r}" for i in changed[:5])
    warning = (f"control characters removed from {len(changed)} class name(s): {shown}"
               + (" ..." if len(changed) > 5 else ""))
    logger.warning(warning)
    unique, renamed = make_unique(cleaned)
    return unique, [warning, *renamed]


def make_unique(names: list[str], keys: dict[int, list[str]] | None = None) -> tuple[list[str], list[str]]:
    """Distinct names (later duplicates get " (<folder id>)" or " (2)", " (3)"...) and the warnings."""
    seen: dict[str, int] = {}
    out = list(names)
    renamed = []
    for i, name in enumerate(names):
        seen[name] = seen.get(name, 0) + 1
        if seen[name] == 1:
            continue
        folder = (keys or {}).get(i)
        suffix = folder[0] if folder else str(seen[name])
        out[i] = f"{name} ({suffix})"
        while out[i] in seen or out[i] in out[:i]:
            out[i] += "'"
        renamed.append(f"class {i} {name!r} -> {out[i]!r}")
    warnings = []
    if renamed:
        warnings.append(f"{len(renamed)} duplicate class name(s) made distinct, since one name would give "
                        f"two classes the same text embedding: {'; '.join(renamed[:5])}"
                        + (" ..." if len(renamed) > 5 else ""))
        logger.warning(warnings[0])
    return out, warnings
