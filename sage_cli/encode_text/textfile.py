"""Reading user text files strictly: UTF-8 or a one-line error naming the file and the byte."""

from __future__ import annotations

from pathlib import Path

from sage_cli.errors import SageError


def read_utf8(path: Path) -> str:
    """The file's text (a UTF-8 BOM is allowed); invalid bytes are an error naming their offset."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SageError(
            f"{path}:{line}: not valid UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start}); "
            "save the file as UTF-8"
        ) from None
