"""How the ``sage`` command line reads: its help text, value placeholders, usage line and choice errors.

Every command is a :class:`SageCommand` and the root a group built on :class:`Polished`: each
rewrites its own parameters once, generically, so an option added anywhere (a schema field, a
command's own ``typer.Option``) reads like the others:

- a flag shows no placeholder (``--force``, not ``--force <bool>``);
- a fixed set of values shows as ``<a|b|c>``; a set too long for the narrow type column shows as
  ``<choice>``, its values listed in the help (a column folds ``<a|b|...>`` mid-word);
- a list shows its element (``<path>``), an argument its upper-case name (``RUN_DIR...``) and the
  usage line ``RUN_DIR`` / ``[RUN_DIR...]``, without Typer's ``{RUN_DIR}`` braces;
- help prints as written: an RST literal (double backticks) becomes `x`, and ``[...]`` is never
  read as Rich markup (``{class: [sentences]}`` once printed as ``{class: }``);
- a value outside the choices is one line naming the option, the choices and the closest one:
  ``--method must be one of linear, lift, ...; got 'lfit' (did you mean 'lift'?)``; a number
  that is none: ``--epochs must be an integer; got 'ten'``.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from rich.markup import escape as escape_markup
from typer.core import TyperCommand

try:  # recent typer vendors its own click: its exceptions are not the click package's
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer on the click package
    from click import exceptions as click_exceptions

from sage_cli.config import choice_message

# The widest ``<a|b|c>`` the type column shows whole; a longer set is ``<choice>`` + the help's list.
INLINE_CHOICES = 24
CHOICES_METAVAR = "<choice>"
HELP_NAMES = ["-h", "--help"]


def plain_help(text: str, markup: bool = True) -> str:
    """Help text as it should print: RST literals as `x`; with ``markup``, ``[...]`` escaped for Rich."""
    text = re.sub(r"``(.+?)``", r"`\1`", text, flags=re.DOTALL)
    return escape_markup(text) if markup else text


def choices_of(param: Any) -> tuple[str, ...] | None:
    """The values a parameter takes (a ``Literal``, an ``Enum``, a click ``Choice``), None if free."""
    desc = getattr(param, "type_descriptor", None)
    choices = desc.choices if desc is not None and desc.is_choice else getattr(getattr(param, "type", None),
                                                                              "choices", None)
    if not choices:
        return None
    return tuple(str(c.value) if isinstance(c, Enum) else str(c) for c in choices)


def is_list(param: Any) -> bool:
    desc = getattr(param, "type_descriptor", None)
    return bool(getattr(desc, "is_list", False)) or getattr(param, "multiple", False) or param.nargs != 1


def element_label(param: Any) -> str:
    """``path`` for ``list[Path]``, ``int`` for ``list[int]``: what one value of a list is."""
    desc = getattr(param, "type_descriptor", None)
    args = typing.get_args(getattr(desc, "annotation", None))
    inner = args[0] if args else str
    return "path" if inner is Path else getattr(inner, "__name__", "str")


def names_word(text: str, word: str) -> bool:
    """Whether ``text`` holds ``word`` whole (``zero-shot`` does not hold ``zero``)."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def flag_name(param: Any) -> str:
    """How an error names a parameter: its long flag (``--method``), or an argument's metavar."""
    if param.param_type_name == "argument":
        return (param.metavar or param.name.upper()).removesuffix("...")
    return max(param.opts, key=len)


def polish(param: Any, markup: bool) -> None:
    """Rewrite one parameter's placeholder and help as the module docstring says (once per parameter)."""
    if param.help:
        param.help = plain_help(param.help, markup)
    if getattr(param, "is_flag", False) and not getattr(param, "count", False):
        param.metavar = ""
        return
    choices = choices_of(param)
    if param.param_type_name == "argument":
        polish_argument(param, choices)
        return
    if param.metavar is not None:
        return
    if choices:
        inline = f"<{'|'.join(choices)}>"
        param.metavar = inline if len(inline) <= INLINE_CHOICES else CHOICES_METAVAR
        if param.metavar == CHOICES_METAVAR and not all(names_word(param.help or "", c) for c in choices):
            param.help = f"{param.help or ''} One of: {', '.join(choices)}.".strip()
    elif is_list(param):
        param.metavar = f"<{element_label(param)}>"


def polish_argument(param: Any, choices: tuple[str, ...] | None) -> None:
    """An argument: an upper-case name (``...`` when it takes several), the type column its element."""
    many = param.nargs != 1
    name = param.metavar or param.name.upper()
    param.metavar = name + ("..." if many and not name.endswith("...") else "")
    if choices:
        label = f"<{'|'.join(choices)}>"
    elif many:
        label = f"<{element_label(param)}>"
    else:
        return
    # Typer's argument shows its type from the annotation, whatever its metavar: say it here instead.
    param.display_type_rich = lambda ctx: label


class Polished:
    """A command (or group) whose help reads as :mod:`sage_cli.cli_style` says, and whose usage
    line names arguments without braces. Mixed in before Typer's command class."""

    params: list[Any]
    help: str | None
    short_help: str | None
    rich_markup_mode: Any

    def polish_help(self) -> None:
        """The command's own help (the root's command list shows it too): at construction."""
        self.help = plain_help(self.help, self.markup) if self.help else self.help
        self.short_help = plain_help(self.short_help, self.markup) if self.short_help else self.short_help

    @property
    def markup(self) -> bool:
        return self.rich_markup_mode == "rich"

    def get_params(self, ctx: Any) -> list[Any]:
        """The parameters, each polished the first time it is asked for (the help option and
        Typer's completion options are added after construction)."""
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if not getattr(param, "_sage_polished", False):
                polish(param, self.markup)
                param._sage_polished = True
        return params

    def get_help_option(self, ctx: Any) -> Any:
        """The help option, in the last panel when every other option has one (not alone in its own)."""
        option = super().get_help_option(ctx)  # type: ignore[misc]
        panels = [getattr(p, "rich_help_panel", None) for p in self.params
                  if p.param_type_name == "option" and not p.hidden]
        if option is not None and panels and all(panels):
            option.rich_help_panel = panels[-1]
        return option

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if getattr(self, "options_metavar", None) else []  # type: ignore[attr-defined]
        for param in self.get_params(ctx):  # type: ignore[attr-defined]
            if param.param_type_name != "argument":
                pieces.extend(param.get_usage_pieces(ctx))
            else:
                name = param.metavar or param.name.upper()
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        given = list(args)
        try:
            return super().parse_args(ctx, args)  # type: ignore[misc]
        except click_exceptions.BadParameter as exc:
            error = value_error(self, ctx, given, exc)
            if error is None:
                raise
            raise error from None


NUMBERS = {int: "an integer", float: "a number"}


def value_error(command: Any, ctx: Any, given: Sequence[str], exc: Any) -> Exception | None:
    """A usage error in the style of a SageError for a value outside a parameter's choices (with
    the closest one) or not a number: ``--epochs must be an integer; got 'ten'``. Typer's own say
    ``Value error, 'x' is not one of ...`` / ``Input should be a valid integer, unable to parse
    string as an integer``. None for any other bad value (its message stays Typer's)."""
    param = getattr(exc, "param", None)
    if param is None:
        return None
    choices, number = choices_of(param), NUMBERS.get(element_type(param))
    if not choices and not number:
        return None
    opts, _, _ = command.make_parser(ctx).parse_args(args=list(given))  # the words as typed
    raw = opts.get(param.name)
    values = [v for v in (raw if isinstance(raw, (list, tuple)) else [raw]) if v is not None]
    if choices:
        bad = next((v for v in values if str(v) not in choices), None)
        message = None if bad is None else choice_message(flag_name(param), bad, choices)
    else:
        bad = next((v for v in values if not parses_as(v, element_type(param))), None)
        message = None if bad is None else f"{flag_name(param)} must be {number}; got {bad!r}"
    return None if message is None else click_exceptions.UsageError(message, ctx=ctx)


def element_type(param: Any) -> Any:
    """The type one value of ``param`` is parsed to: ``int`` for ``int``, ``int | None``, ``list[int]``."""
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    inner = [a for a in typing.get_args(annotation) if a is not type(None)]
    return inner[0] if len(inner) == 1 else annotation


def parses_as(text: Any, kind: Any) -> bool:
    try:
        kind(text)
    except (TypeError, ValueError):
        return False
    return True


class SageCommand(Polished, TyperCommand):
    """Every ``sage`` subcommand: Typer's command, its help polished (:class:`Polished`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.polish_help()
