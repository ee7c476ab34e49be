"""The one exception type the CLI turns into a single red line and exit code 1, and the mapping
of "this location cannot take the write" OSErrors (full disk, read-only, forbidden) onto it."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class SageError(Exception):
    """A user-facing error: bad input, a refused overwrite, a mismatched artifact.

    The message is one line that names the file, line or value at fault and, where there is one,
    the fix. Anything else raised is a bug and keeps its traceback.
    """


def message_of(exc: SageError) -> str:
    """The message of ``exc``; of one a DataLoader worker raised, the worker's message alone (torch
    re-raises it in the main process with the worker's whole traceback as the message)."""
    text = str(exc)
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        _, found, message = last.partition(f"{SageError.__name__}: ")
        if found:
            return message
    return text


# errno values that mean "this location cannot take the write", not a bug
WRITE_ERRNOS = {errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EPERM, errno.EDQUOT, errno.EFBIG}


def describe_write_error(exc: OSError) -> str | None:
    """"No space left on device" and the like for a write-location errno, else None (a bug)."""
    if exc.errno not in WRITE_ERRNOS:
        return None
    return exc.strerror or errno.errorcode.get(exc.errno or 0, "error")


@contextmanager
def explain_write_errors(path: str | Path, what: str, fix: str = "free space or fix permissions, then re-run"
                         ) -> Iterator[None]:
    """Map a disk-full / not-writable OSError inside the block to a SageError naming ``path``."""
    try:
        yield
    except OSError as exc:
        reason = describe_write_error(exc)
        if reason is None:
            raise
        raise SageError(f"{path}: cannot write the {what} ({reason}); {fix}") from None
