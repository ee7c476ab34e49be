"""Helpers shared by the stages' frozen config dataclasses: YAML presets and flag precedence."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from sage_cli.errors import SageError


def load_yaml_mapping(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Safe-load a YAML file that must hold a mapping; a one-line error names the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise SageError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
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
