"""The ``sage`` command line: wiring only. Each stage's logic lives in its own module."""

from __future__ import annotations

import typer

from sage_cli import __version__
from sage_cli.console import configure_output

app = typer.Typer(
    name="sage",
    help="Semantic-guided fine-tuning of CLIP for long-tailed recognition: "
    "prepare -> encode-text -> train -> report.",
    no_args_is_help=True,
    add_completion=False,
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
    for module_name, command_name in (
        ("prepare", "prepare"),
        ("encode_text", "encode-text"),
        ("train", "train"),
        ("report", "report"),
        ("demo", "demo"),
    ):
        try:
            module = __import__(f"sage_cli.commands.{module_name}", fromlist=["command"])
        except ModuleNotFoundError:
            continue  # stage not built yet
        app.command(command_name, no_args_is_help=command_name != "demo")(module.command)


_register()
