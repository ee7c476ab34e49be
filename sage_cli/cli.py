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
    from sage_cli.commands import cache_images, demo, encode_text, prepare, pretrain_toy, report, train

    app.command("prepare", no_args_is_help=True)(prepare.command)
    app.command("encode-text", no_args_is_help=True)(encode_text.command)
    app.command("cache-images", no_args_is_help=True)(cache_images.command)
    app.command("train", no_args_is_help=True)(train.command)
    app.command("report", no_args_is_help=True)(report.command)
    app.command("demo")(demo.command)
    app.command("pretrain-toy")(pretrain_toy.command)


_register()
