"""Text from users and servers made safe to show: control characters and ANSI escapes removed.

A class name, a path or a server's error body can hold terminal escape sequences (colours, OSC-8
links, cursor moves) or newlines that would break a one-line error or a table cell; bidirectional
controls (U+202E...) that make a terminal show the text around them reordered; or, in a path that
is not valid UTF-8, the lone surrogates Python decodes its bytes to, which no terminal can print.
"""

from __future__ import annotations

import re
import unicodedata

# CSI (ESC [ ... final), OSC (ESC ] ... BEL or ESC \), and other two-character ESC sequences.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]|\x9b[0-?]*[ -/]*[@-~]")


# Embeddings, overrides, isolates and marks: the characters that reorder text on display ("Trojan Source").
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def is_control(char: str) -> bool:
    """C0 and C1 control characters and DEL (Unicode category Cc), tab and newline included."""
    return unicodedata.category(char) == "Cc"


def is_unprintable(char: str) -> bool:
    """A control character, a bidirectional control, or a surrogate (a byte of a non-UTF-8 name)."""
    return char in BIDI_CONTROLS or unicodedata.category(char) in ("Cc", "Cs")


def show_char(char: str) -> str:
    """``char`` as an escape: ``\\x1b``, ``\\u202e``; a surrogate escape as its byte, ``\\xff``."""
    if "\udc80" <= char <= "\udcff":  # os.fsdecode's stand-in for the undecodable byte 0x80..0xff
        return f"\\x{ord(char) - 0xDC00:02x}"
    return ascii(char)[1:-1]


def is_utf8(text: str) -> bool:
    """Whether ``text`` (a file name as os.fsdecode gives it) encodes to UTF-8: no surrogates."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def strip_control(text: str) -> str:
    """``text`` without ANSI escape sequences; other control characters become spaces."""
    text = _ANSI.sub("", text)
    return "".join(" " if is_control(c) else c for c in text)


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` on one line: control characters removed, whitespace runs made one space, cut to ``limit``."""
    text = " ".join(strip_control(text).split())
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"
