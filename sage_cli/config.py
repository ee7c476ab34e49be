"""Helpers shared by the stages' frozen config dataclasses: YAML presets, flag precedence, value types."""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from sage_cli.errors import SageError

# Bounds of the options that size a batch or seed a generator; past them a value is a typo that
# would overflow a C integer (a traceback) or fill the memory before anything could name it.
MAX_BATCH_SIZE = 2**24  # images per batch: more than any dataset here holds (iNaturalist 2018: 437,513)
MAX_SEED = 2**63 - 1  # torch.manual_seed takes a 64-bit integer


def check_batch_size(flag: str, value: int, minimum: int = 1) -> None:
    """Refuse a batch size outside ``minimum``..:data:`MAX_BATCH_SIZE`, naming ``flag``."""
    if value < minimum:
        least = "a positive integer" if minimum == 1 else f"at least {minimum}"
        raise SageError(f"{flag} must be {least}; got {value}")
    if value > MAX_BATCH_SIZE:
        raise SageError(f"{flag} must be at most {MAX_BATCH_SIZE}; got {value}")


def check_seed(flag: str, value: int) -> None:
    """Refuse a seed outside 0..:data:`MAX_SEED`, naming ``flag``."""
    if not 0 <= value <= MAX_SEED:
        raise SageError(f"{flag} must be in 0..{MAX_SEED}; got {value}")


def load_yaml_mapping(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Safe-load a YAML file that must hold a mapping; a one-line error names the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise SageError(f"{path}: config file not found")
    raw = path.read_bytes()
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        byte = raw[exc.start]
        raise SageError(f"{path}:{line}: not UTF-8 text (byte {byte:#04x}); save the preset as UTF-8") from None
    except RecursionError:  # the parser recurses once per level: [[[[...]]]] 100,000 deep
        raise SageError(f"{path}: nested too deeply to be a preset (a preset maps option names to values)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise SageError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SageError(f"{path}: expected a mapping of option names to values, got {type(data).__name__}")
    return data


def merge_with_preset(
    explicit: Mapping[str, Any],
    defaults: Mapping[str, Any],
    preset: Mapping[str, Any] | None,
    preset_path: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Resolve options: explicit flags win over the preset, the preset over built-in defaults.

    ``explicit`` holds only the flags the user typed; ``defaults`` every option's default. Keys in
    the preset may use dashes or underscores (``batch-size`` or ``batch_size``). Unknown keys are
    an error naming the file and the key, so a typo never passes silently.
    """
    merged = dict(defaults)
    for key, value in (preset or {}).items():
        name = str(key).replace("-", "_")
        if name not in defaults:
            raise SageError(f"{preset_path or 'config'}: unknown option {key!r}")
        merged[name] = value
    merged.update(explicit)
    return merged


def find_key_lines(path: str | os.PathLike[str]) -> dict[str, int]:
    """1-based line of each top-level key of a YAML mapping file (empty if it cannot be composed)."""
    try:
        node = yaml.compose(Path(path).read_text(), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, RecursionError, yaml.YAMLError):
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(key.value): key.start_mark.line + 1 for key, _ in node.value}


def coerce_preset(
    preset: Mapping[str, Any], types: Mapping[str, Any], preset_path: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Each preset value checked against (and coerced to) the type of its option in ``types``.

    ``lr: 1e-3`` (a string to YAML 1.1) becomes a float; ``epochs: 1.5``, ``epochs: "ten"``,
    ``lr: [1, 2]``, ``epochs: null`` or ``seed: true`` are a one-line SageError naming the file,
    line and key. Keys may use dashes or underscores; keys without a type pass unchanged.
    """
    lines = find_key_lines(preset_path) if preset_path is not None else {}
    out: dict[str, Any] = {}
    for key, value in preset.items():
        name = str(key).replace("-", "_")
        if name not in types:
            out[key] = value
            continue
        try:
            out[key] = coerce_value(value, types[name])
        except ValueError as exc:
            where = f"{preset_path}:{lines[str(key)]}" if str(key) in lines else str(preset_path or "config")
            raise SageError(f"{where}: {key}: {exc}; got {value!r}") from None
    return out


def coerce_value(value: Any, annotation: Any) -> Any:
    """``value`` as ``annotation`` (int, float, bool, str, Path, Literal, X | None); ValueError if it is not one."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce_value(value, inner[0]) if len(inner) == 1 else value
    if value is None:
        raise ValueError("expected a value, not null")
    if typing.get_origin(annotation) is typing.Literal:
        if value not in args:
            raise ValueError(f"expected one of {', '.join(map(str, args))}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
    if isinstance(value, (bool, list, dict)):
        raise ValueError(f"expected {_describe(annotation)}, not a {'boolean' if isinstance(value, bool) else type(value).__name__}")
    if annotation is int:
        if isinstance(value, int):
            return value
        raise ValueError("expected an integer")
    if annotation is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError("expected a number") from None
    if annotation in (str, Path):
        if isinstance(value, (str, int)):
            return annotation(str(value)) if annotation is Path else str(value)
        raise ValueError(f"expected {_describe(annotation)}")
    return value


def _describe(annotation: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", Path: "a path"}.get(annotation, str(annotation))
