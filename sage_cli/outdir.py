"""Which directories a stage may take as its ``--out``, and short names for the files made beside one.

A stage writes fixed names into its output directory (``images/``, ``manifest.parquet``,
``report.html``...) and, with ``--force``, replaces them; so ``--out`` must be a directory of its
own: never the filesystem root, the home directory or the current directory. Its path must be UTF-8,
since tables and records hold it as text. Staging copies beside ``OUT`` carry OUT's name, shortened
when long, so that a name of up to NAME_MAX (255 bytes) stays a valid ``--out``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from sage_cli.errors import SageError
from sage_cli.textsafe import is_utf8

SHORT_NAME_BYTES = 64  # longer names are cut and hashed in the names of staging copies


def check_output_dir(directory: str | os.PathLike[str]) -> None:
    """Refuse ``directory`` as an output directory when it is not one of its own, or not UTF-8."""
    directory = Path(directory)
    if not is_utf8(str(directory.absolute())):
        raise SageError(f"{directory}: the path is not valid UTF-8; choose an output directory with a UTF-8 "
                        "path (tables and records hold it as text)")
    resolved = directory.resolve()
    for what, place in (("the filesystem root", Path(resolved.anchor)), ("your home directory", _home()),
                        ("the current directory", Path.cwd())):
        if place is not None and resolved == place.resolve():
            raise SageError(f"{directory}: is {what}; give the outputs a directory of their own, e.g. "
                            f"{Path(directory, 'sage-out')}")


def _home() -> Path | None:
    try:
        return Path.home()
    except (KeyError, RuntimeError):  # no HOME and no passwd entry (some containers)
        return None


def short_name(name: str) -> str:
    """``name`` when it is short, else its first 32 characters and a hash of the whole: for the names
    of staging copies made beside a directory, which add a prefix and a suffix to its name."""
    raw = os.fsencode(name)
    if len(raw) <= SHORT_NAME_BYTES:
        return name
    return f"{name[:32]}-{hashlib.sha256(raw).hexdigest()[:12]}"
