"""The ``sage`` command line: wiring only. Each stage's logic lives in its own module."""

from __future__ import annotations

import copy
import sys
from typing import Any

import typer
from typer.core import TyperGroup

from sage_cli import __version__
from sage_cli.cli_style import HELP_NAMES, Polished, SageCommand, click_exceptions
from sage_cli.console import configure_output, err_console

_NO_ARGS_IS_HELP = getattr(click_exceptions, "NoArgsIsHelpError", ())  # click >= 8.2
# The root's options that every subcommand also takes, after its name: `sage train ... -q`.
ANYWHERE = ("quiet", "verbose")


class SageGroup(Polished, TyperGroup):
    """The root command: a usage error (unknown option, bad value, missing argument) prints as one
    red line and exits with code 2, in the style of a :class:`SageError` (exit code 1).

    Its ``-q`` / ``-v`` are also accepted anywhere after the subcommand's name (hidden there).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.polish_help()
        for command in self.commands.values():
            taken = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
            for param in self.params:
                if param.name in ANYWHERE and not taken & set(param.opts):
                    command.params.append(late_option(param))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [*super().collect_usage_pieces(ctx), self.subcommand_metavar]

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


def late_option(param: Any) -> Any:
    """A copy of a root option for a subcommand: hidden, not passed to it, applied when parsed."""
    late = copy.copy(param)
    late.hidden, late.expose_value, late.callback = True, False, apply_late_option
    return late


def apply_late_option(ctx: Any, param: Any, value: bool) -> bool:
    """``-q`` / ``-v`` given after the subcommand: set the output as if given before it."""
    if value:
        flags = ctx.meta.setdefault("sage_output", {name: bool(ctx.find_root().params.get(name)) for name in ANYWHERE})
        flags[param.name] = True
        configure_output(**flags)
    return value


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
    context_settings={"help_option_names": HELP_NAMES},
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
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors and final results (before or after "
                               "the command's name)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug logs (before or after the command's "
                                 "name)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show version."),
) -> None:
    configure_output(quiet=quiet, verbose=verbose)


def _register() -> None:
    # Command modules import torch and friends lazily, so `sage --help` stays fast.
    from sage_cli.commands import (cache_images, demo, encode_text, export, predict, prepare, pretrain_toy, report,
                                   train)

    app.command("prepare", cls=SageCommand, no_args_is_help=True)(prepare.command)
    app.command("encode-text", cls=SageCommand, no_args_is_help=True)(encode_text.command)
    app.command("cache-images", cls=SageCommand, no_args_is_help=True)(cache_images.command)
    app.command("train", cls=SageCommand, no_args_is_help=True)(train.command)
    app.command("report", cls=SageCommand, no_args_is_help=True)(report.command)
    app.command("predict", cls=SageCommand, no_args_is_help=True)(predict.command)
    app.command("export", cls=SageCommand, no_args_is_help=True)(export.command)
    app.command("demo", cls=SageCommand)(demo.command)
    app.command("pretrain-toy", cls=SageCommand)(pretrain_toy.command)


_register()
