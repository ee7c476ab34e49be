"""The one Rich console every stage prints through, and logging set-up for the CLI."""

from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.logging import RichHandler

console = Console(highlight=False)
# Errors and warnings go to stderr so `--json` output on stdout stays machine-readable.
err_console = Console(stderr=True, highlight=False)


def print_result(line: str) -> None:
    """Print a command's final result as one plain line on stdout when --quiet silenced its summary.

    Plain text (no markup, tabs kept), so that scripts can read it.
    """
    if console.quiet:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def configure_output(quiet: bool = False, verbose: bool = False) -> None:
    """Silence progress and summaries with ``quiet``; show debug logs with ``verbose``."""
    console.quiet = quiet
    level = logging.DEBUG if verbose else (logging.ERROR if quiet else logging.WARNING)
    root = logging.getLogger("sage_cli")
    root.handlers.clear()
    handler = RichHandler(console=err_console, show_time=False, show_path=False, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
