"""The one Rich console every stage prints through, and logging set-up for the CLI.

Rich reads ``[...]`` in printed strings as markup, so every user-supplied string (a class name, a
path, a server's answer, an error message holding them) goes through :func:`escape` first: a path
``work/[exp]/prep`` then prints as written, and ``[link=...]`` in a class name never becomes a
terminal link. Emoji codes (``:cat:``) are off for the same reason.
"""

from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.markup import escape as escape_markup
from rich.text import Text

from sage_cli.textsafe import is_unprintable, show_char

console = Console(highlight=False, emoji=False)
# Errors and warnings go to stderr so `--json` output on stdout stays machine-readable.
err_console = Console(stderr=True, highlight=False, emoji=False)


def escape(value: object) -> str:
    """``str(value)`` as Rich markup that prints verbatim, control characters shown as ``\\x1b``."""
    return escape_markup(show_control(str(value)))


def show_control(text: str) -> str:
    """``text`` with control characters other than newline and tab, bidirectional controls and the
    bytes of non-UTF-8 names shown as escapes: ``\\x1b``, ``\\u202e``, ``\\xff``..."""
    return "".join(c if c in "\n\t" or not is_unprintable(c) else show_char(c) for c in text)


class _VisibleControlFormatter(logging.Formatter):
    """Log lines never carry raw escape sequences to the terminal (a class name, a server's text)."""

    def format(self, record: logging.LogRecord) -> str:
        return show_control(super().format(record))


_LEVEL_STYLES = ("debug", "info", "warning", "error", "critical")  # Rich's theme has logging.level.<these>


class _LineHandler(logging.Handler):
    """A log record as one line on stderr, ``WARNING  message``, never wrapped: a log piped to a file
    reads (and greps) as it was written, at any terminal width."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            name = record.levelname.lower()
            style = f"logging.level.{name}" if name in _LEVEL_STYLES else ""
            level = Text(f"{record.levelname:<8} ", style=style)
            err_console.print(level + Text(self.format(record)), soft_wrap=True, highlight=False)
        except Exception:  # noqa: BLE001 - a handler reports its own failure, it never raises
            self.handleError(record)


def print_error(message: object, hint: str = "") -> None:
    """``error: MESSAGE`` as one red line on stderr: the line breaks of a multi-line message (a
    parser's text quoted in it) become spaces, and the line is never wrapped."""
    text = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    err_console.print(f"[bold red]error:[/] {escape(text)}{escape(hint)}", soft_wrap=True, highlight=False)


def print_result(line: str) -> None:
    """Print a command's final result as one plain line on stdout when --quiet silenced its summary.

    Plain text (no markup, tabs kept), so that scripts can read it.
    """
    if console.quiet:
        sys.stdout.write(show_control(line) + "\n")
        sys.stdout.flush()


def configure_output(quiet: bool = False, verbose: bool = False) -> None:
    """Silence progress and summaries with ``quiet``; show debug logs with ``verbose``."""
    console.quiet = quiet
    level = logging.DEBUG if verbose else (logging.ERROR if quiet else logging.WARNING)
    root = logging.getLogger("sage_cli")
    root.handlers.clear()
    handler = _LineHandler()
    handler.setFormatter(_VisibleControlFormatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    from sage_cli.imageio import silence_pil_size_warning  # (imports PIL, which `sage --help` does not need)

    silence_pil_size_warning()
