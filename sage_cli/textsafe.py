"""Text from users and servers made safe to show: control characters and ANSI escapes removed.

A class name, a path or a server's error body can hold terminal escape sequences (colours, OSC-8
links, cursor moves) or newlines that would break a one-line error or a table cell.
"""

from __future__ import annotations

import re
import unicodedata

# CSI (ESC [ ... final), OSC (ESC ] ... BEL or ESC \), and other two-character ESC sequences.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]|\x9b[0-?]*[ -/]*[@-~]")


def is_control(char: str) -> bool:
    """C0 and C1 control characters and DEL (Unicode category Cc), tab and newline included."""
    return unicodedata.category(char) == "Cc"


def strip_control(text: str) -> str:
    """``text`` without ANSI escape sequences; other control characters become spaces."""
    text = _ANSI.sub("", text)
    return "".join(" " if is_control(c) else c for c in text)


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` on one line: control characters removed, whitespace runs made one space, cut to ``limit``."""
    text = " ".join(strip_control(text).split())
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"
