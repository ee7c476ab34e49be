"""What every command body shares: error mapping and explicit-flag detection."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from sage_cli.cli_style import click_exceptions
from sage_cli.config import choice_message, cli_names
from sage_cli.console import err_console, print_error
from sage_cli.errors import SageError, describe_write_error, message_of

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """Turn a :class:`SageError` into one red line on stderr and exit code 1; errors name options by their flags."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with cli_names():
                return fn(*args, **kwargs)
        except SageError as exc:
            print_error(message_of(exc))
            raise typer.Exit(1) from None
        except OSError as exc:  # a write the stage did not name itself: still one line, not a traceback
            reason = describe_write_error(exc)
            if reason is None:
                raise
            where = exc.filename if exc.filename else "an output"
            print_error(f"{where}: cannot write ({reason}); free space or fix permissions, then re-run")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def explicit_params(ctx: typer.Context) -> set[str]:
    """Names of the parameters the user actually passed on the command line (not defaults)."""
    explicit = set()
    for name in ctx.params:
        source = ctx.get_parameter_source(name)
        # By name: typer may vendor its own click, whose ParameterSource is another enum class.
        if getattr(source, "name", None) in ("COMMANDLINE", "ENVIRONMENT"):
            explicit.add(name)
    return explicit


DEVICE_NAMES = ("auto", "cpu", "cuda")
DEVICE_METAVAR = "<auto|cpu|cuda[:N]>"


def parse_device(value: str) -> str:
    """``--device``: auto, cpu, cuda or cuda:N; anything else is a usage error naming the choices."""
    text = str(value)
    if text in DEVICE_NAMES or re.fullmatch(r"cuda:\d+", text):
        return text
    raise click_exceptions.UsageError(choice_message("--device", text, (*DEVICE_NAMES, "cuda:N")))


def complete_device(incomplete: str) -> list[str]:
    return [name for name in DEVICE_NAMES if name.startswith(incomplete)]


def device_option(help_text: str = "Device to run on (auto: CUDA when available).") -> Any:
    """The ``--device`` option every command shares: its choices shown, checked and completed."""
    return typer.Option("auto", "--device", parser=parse_device, metavar=DEVICE_METAVAR,
                        autocompletion=complete_device, help=help_text)
