"""The ``sage`` command line: wiring only. Each stage's logic lives in its own module."""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperGroup

try:  # recent typer vendors its own click: its exceptions are not the click package's
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer on the click package
    from click import exceptions as click_exceptions
_NO_ARGS_IS_HELP = getattr(click_exceptions, "NoArgsIsHelpError", ())  # click >= 8.2

from sage_cli import __version__
from sage_cli.console import configure_output, err_console



class SageGroup(TyperGroup):
    """The root command: a usage error (unknown option, bad value, missing argument) prints as one
    red line and exits with code 2, in the style of a :class:`SageError` (exit code 1)."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except _NO_ARGS_IS_HELP as exc:  # the help is already printed
            sys.exit(exc.exit_code)
        except click_exceptions.ClickException as exc:
            print_usage_error(exc)
            sys.exit(exc.exit_code)
        except typer.Abort:
            err_console.print("[yellow]aborted[/]")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def print_usage_error(exc: click_exceptions.ClickException) -> None:
    """``error: MESSAGE (see 'sage CMD --help')`` on stderr, one line."""
    from sage_cli.console import print_error

    ctx = getattr(exc, "ctx", None)
    print_error(exc.format_message(), f" (see '{ctx.command_path} --help')" if ctx is not None else "")


app = typer.Typer(
    name="sage",
    cls=SageGroup,
    help="Semantic-guided fine-tuning of CLIP for long-tailed recognition: "
    "prepare -> encode-text -> train -> report.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sage {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors and final results."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug logs."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show version."),
) -> None:
    configure_output(quiet=quiet, verbose=verbose)


def _register() -> None:
    # Command modules import torch and friends lazily, so `sage --help` stays fast.
    from sage_cli.commands import (cache_images, demo, encode_text, export, predict, prepare, pretrain_toy, report,
                                   train)

    app.command("prepare", no_args_is_help=True)(prepare.command)
    app.command("encode-text", no_args_is_help=True)(encode_text.command)
    app.command("cache-images", no_args_is_help=True)(cache_images.command)
    app.command("train", no_args_is_help=True)(train.command)
    app.command("report", no_args_is_help=True)(report.command)
    app.command("predict", no_args_is_help=True)(predict.command)
    app.command("export", no_args_is_help=True)(export.command)
    app.command("demo")(demo.command)
    app.command("pretrain-toy")(pretrain_toy.command)


_register()
