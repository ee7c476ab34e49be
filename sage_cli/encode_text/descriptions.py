"""Class descriptions from a file: JSON ``{class name or id: [sentences]}`` or CSV ``class,description``.

Keys are matched to ``classes.parquet`` by exact name, then by name with underscores as spaces
(case-insensitive), then as an integer class id. Every key must match a class; classes the file
does not mention are simply left out (the caller falls back to templates for them).
"""

from __future__ import annotations

import csv
import difflib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sage_cli.encode_text.templates import display_name
from sage_cli.encode_text.textfile import read_utf8
from sage_cli.errors import SageError

# (key as written, where it was written, sentence)
_Entry = tuple[str, str, str]


def load_descriptions(path: Path, class_names: Sequence[str]) -> dict[int, list[str]]:
    """Sentences per class id (in file order, duplicates dropped) from a JSON or CSV file."""
    if not path.is_file():
        raise SageError(f"--descriptions {path}: file not found")
    text = read_utf8(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        entries = parse_json(path, text)
    elif suffix == ".csv":
        entries = parse_csv(path, text)
    else:
        raise SageError(f"{path}: descriptions must be a .json or .csv file")
    resolver = ClassResolver(class_names)
    by_class: dict[int, list[str]] = {}
    unknown: list[tuple[str, str]] = []
    for key, where, sentence in entries:
        class_id = resolver.resolve(key)
        if class_id is None:
            unknown.append((key, where))
            continue
        sentences = by_class.setdefault(class_id, [])
        if sentence not in sentences:
            sentences.append(sentence)
    if unknown:
        raise SageError(_unknown_message(path, unknown, class_names))
    return by_class


def parse_json(path: Path, text: str) -> list[_Entry]:
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SageError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    except RecursionError:  # "[[[[..." 100,000 deep: Python's parser gives up, so do we, in one line
        raise SageError(f"{path}: JSON nested too deeply; expected {{class name or id: [sentences]}}") from None
    if not isinstance(data, dict):
        raise SageError(f"{path}: expected an object {{class name or id: [sentences]}}")
    entries = []
    for key, value in data.items():
        sentences = [value] if isinstance(value, str) else value
        if not isinstance(sentences, list) or not sentences:
            raise SageError(f"{path}: entry {key!r} must be a non-empty list of sentences")
        for index, sentence in enumerate(sentences):
            where = f"entry {key!r} item {index}"
            entries.append((key, where, _check_sentence(path, where, sentence)))
    return entries


def parse_csv(path: Path, text: str) -> list[_Entry]:
    entries = []
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if number == 1 and [c.strip().lower() for c in row] == ["class", "description"]:
            continue
        if len(row) != 2:
            raise SageError(
                f"{path}:{number}: expected 2 columns (class,description), got {len(row)}; quote text with commas"
            )
        key = row[0].strip()
        if not key:
            raise SageError(f"{path}:{number}: empty class")
        entries.append((key, f"line {number}", _check_sentence(path, f"line {number}", row[1], number)))
    return entries


def _check_sentence(path: Path, where: str, sentence: Any, line: int | None = None) -> str:
    place = f"{path}:{line}" if line else f"{path}: {where}"
    if not isinstance(sentence, str):
        raise SageError(f"{place}: description must be a string, got {type(sentence).__name__}")
    if not sentence.strip():
        raise SageError(f"{place}: empty description")
    return " ".join(sentence.split())


class ClassResolver:
    """Maps a key (name, spaced name or id) to a class id, or None."""

    def __init__(self, class_names: Sequence[str]) -> None:
        self.count = len(class_names)
        self.exact = {name: i for i, name in enumerate(class_names)}
        self.loose = {display_name(name).casefold(): i for i, name in enumerate(class_names)}

    def resolve(self, key: str) -> int | None:
        if key in self.exact:
            return self.exact[key]
        loose = display_name(key).casefold()
        if loose in self.loose:
            return self.loose[loose]
        if key.strip().isdigit() and int(key) < self.count:
            return int(key)
        return None


def _unknown_message(path: Path, unknown: list[tuple[str, str]], class_names: Sequence[str]) -> str:
    shown = ", ".join(f"{key!r} ({where})" for key, where in unknown[:3])
    more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
    close = difflib.get_close_matches(unknown[0][0], list(class_names), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "; keys must be class names or ids from classes.parquet"
    return f"{path}: {len(unknown)} unknown class(es): {shown}{more}{hint}"
