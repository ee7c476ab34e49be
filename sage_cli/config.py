"""Helpers shared by the stages' frozen config dataclasses: field metadata, YAML presets, value types.

A config field declared with :func:`option` carries its :class:`Option` metadata (help, panel,
choices, bounds): :func:`check_options` validates a dataclass from it, the command layer makes its
Typer options from it and the preset loader coerces values to its type, so each option and its
default is written once. Errors name a field by its flat key (``attn_heads``); inside
:func:`cli_names` (the commands) by its flag (``--attn-heads``), through :func:`option_label`.
"""

from __future__ import annotations

import contextvars
import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
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


_CLI_NAMES: contextvars.ContextVar[bool] = contextvars.ContextVar("sage_cli_names", default=False)


@contextmanager
def cli_names() -> Iterator[None]:
    """Inside the block, :func:`option_label` names options by their flag (the commands use this)."""
    token = _CLI_NAMES.set(True)
    try:
        yield
    finally:
        _CLI_NAMES.reset(token)


def option_label(key: str) -> str:
    """How an error names the option ``key``: ``--key-name`` under :func:`cli_names`, else ``key``."""
    return "--" + key.replace("_", "-") if _CLI_NAMES.get() else key


@dataclass(frozen=True)
class Option:
    """What a config field is as an option: its help and panel, and the values it takes.

    ``key``: its flat name (``sage train --KEY``, a preset's key) when it is not the field's name;
    ``choices``: the names it takes; ``ge`` / ``gt`` / ``le`` / ``lt``: bounds of a number
    (None passes when the field allows None); ``parse``: text (a flag, a preset) to value;
    ``cli`` False: a field that presets set and no flag offers; ``aliases``: more flags;
    ``message``: what a value out of bounds is told ("must be in 0..N") in place of the bound broken;
    ``low_message``: the same, for a value below the lower bound only.
    """

    help: str
    panel: str
    key: str | None = None
    choices: tuple[str, ...] | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    parse: Callable[[Any], Any] | None = None
    cli: bool = True
    short: str | None = None
    aliases: tuple[str, ...] = ()
    metavar: str | None = None
    message: str | None = None
    low_message: str | None = None


def option(default: Any = dataclasses.MISSING, *, help: str, panel: str, **meta: Any) -> Any:
    """A dataclass field with :class:`Option` metadata (``default`` MISSING: required)."""
    return dataclasses.field(default=default, metadata={"option": Option(help=help, panel=panel, **meta)})


def option_of(f: dataclasses.Field) -> Option | None:
    return f.metadata.get("option")


def key_of(f: dataclasses.Field) -> str:
    """A field's flat key: its Option's ``key`` or its name."""
    meta = option_of(f)
    return meta.key if meta is not None and meta.key else f.name


def did_you_mean(value: Any, choices: Sequence[str]) -> str:
    """`` (did you mean 'lift'?)`` for the choice closest to ``value`` (a typo), else ""."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def choice_message(label: str, value: Any, choices: Sequence[str]) -> str:
    """``--method must be one of linear, lift, ...; got 'lfit' (did you mean 'lift'?)``."""
    return f"{label} must be one of {', '.join(map(str, choices))}; got {value!r}{did_you_mean(value, choices)}"


def check_options(config: Any) -> None:
    """Each :func:`option` field of ``config`` within its choices and bounds; a SageError naming it otherwise."""
    for f in dataclasses.fields(config):
        meta, value = option_of(f), getattr(config, f.name)
        if meta is None or value is None:
            continue
        if meta.choices is not None and value not in meta.choices:
            raise SageError(choice_message(option_label(key_of(f)), value, meta.choices))
        message = describe_violation(meta, value)
        if message:
            raise SageError(f"{option_label(key_of(f))} {message}; got {value!r}")


def describe_violation(meta: Option, value: Any) -> str | None:
    """What ``value`` breaks of ``meta``'s choices and bounds ("must be >= 1"), None when it fits."""
    if meta.choices is not None:
        return None if value in meta.choices else f"must be one of {', '.join(meta.choices)}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != value:
        return "must be a number, not NaN"
    too_low = (meta.ge is not None and value < meta.ge) or (meta.gt is not None and value <= meta.gt)
    too_high = (meta.le is not None and value > meta.le) or (meta.lt is not None and value >= meta.lt)
    if not (too_low or too_high):
        return None
    if meta.message or (too_low and meta.low_message):
        return meta.message or meta.low_message
    if meta.lt is not None:  # a half-open range such as a momentum's [0, 1)
        low = meta.ge if meta.ge is not None else meta.gt
        return f"must be in {'[' if meta.ge is not None else '('}{low:g}, {meta.lt:g})"
    if too_high:
        return f"must be at most {meta.le}"  # a guard against typos (2**24 images a batch): the exact figure
    return f"must be >= {meta.ge:g}" if meta.ge is not None else f"must be > {meta.gt:g}"


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
        if isinstance(value, (str, int)) or (annotation is Path and isinstance(value, os.PathLike)):
            return annotation(str(value)) if annotation is Path else str(value)
        raise ValueError(f"expected {_describe(annotation)}")
    return value


def _describe(annotation: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", Path: "a path"}.get(annotation, str(annotation))
