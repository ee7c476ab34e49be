"""Exclusive locks on stage output directories: one writer per directory at a time.

Every stage holds :func:`lock_output_dir` on its ``--out`` while it decides whether to work (the
"nothing to do" check), clears old outputs (``--force``) and writes. The lock is ``OUT/.sage.lock``,
held with ``flock`` (released by the kernel when the holder dies, also over NFS) and holding the
holder's pid, host, stage and start time as JSON, for the message a second writer gets. A lock file
whose holder is gone is stale: the next stage takes it over with a warning naming the old holder.
The file is removed on release; the directories the lock created (``--out`` and any missing parents) are
removed too while nothing filled them. The lock file is opened without following a symlink and must
be a regular file with one link: a link planted in its place is refused (one line), its target never
written. The holder removes the temporaries that killed sage runs left in the directory (see
:func:`remove_stale_temporaries`): every sage writer holds the lock, so theirs are dead.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import logging
import os
import re
import shutil
import socket
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sage_cli.errors import SageError
from sage_cli.outdir import check_output_dir

try:
    import fcntl
except ImportError:  # Windows: the pid check alone decides
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

LOCK_NAME = ".sage.lock"
# flock not supported by the filesystem (some FUSE / old NFS mounts): fall back to the pid check
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


@dataclass
class _Held:
    path: Path
    fd: int
    created: tuple[Path, ...]  # the directories acquiring the lock made, deepest first


@contextlib.contextmanager
def lock_output_dir(
    directory: str | os.PathLike[str], stage: str, enabled: bool = True,
    agree: Callable[[bool], bool] | None = None,
) -> Iterator[None]:
    """Hold the exclusive lock of ``directory`` (created if missing) for the block.

    A directory another live process holds is a one-line :class:`SageError` naming that process;
    a stale lock (its holder is gone) is taken over with a warning. ``enabled=False`` takes no lock
    (torchrun ranks other than 0, which never write); ``agree(ok)`` (a collective: True when every
    rank is ok) lets those ranks fail together with the one that was refused.
    """
    held, error = None, None
    if enabled:
        try:
            held = acquire_lock(Path(directory), stage)
        except SageError as exc:
            error = exc
    if agree is not None and not agree(error is None):
        if held is not None:
            release_lock(held)
        raise error or SageError(f"{directory}: rank 0 could not lock the output directory; see its error")
    if error is not None:
        raise error
    try:
        if held is not None:
            remove_stale_temporaries(directory)  # no writer of ours is alive here: we hold the lock
        yield
    finally:
        if held is not None:
            release_lock(held)


class DirectoryInUse(SageError):
    """Another live process holds the directory's lock."""


@contextlib.contextmanager
def try_lock_output_dir(directory: str | os.PathLike[str], stage: str, already_held: bool = False
                        ) -> Iterator[bool]:
    """Like :func:`lock_output_dir`, but yield False instead of refusing when another process holds it
    (for optional writes, such as a cache); ``already_held``: this process holds it, yield True."""
    if already_held:
        yield True
        return
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(lock_output_dir(directory, stage))
        except DirectoryInUse:
            yield False
            return
        yield True


def acquire_lock(directory: Path, stage: str) -> _Held:
    check_output_dir(directory)  # before anything is created in it
    if directory.exists() and not directory.is_dir():
        raise SageError(f"{directory}: exists and is not a directory")
    created = missing_directories(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        remove_if_empty(created)
        raise SageError(f"{directory}: cannot create the output directory ({exc.strerror})") from None
    path = directory / LOCK_NAME
    while True:
        try:
            fd = _open_lock_file(path)
        except SageError:
            remove_if_empty(created)
            raise
        if not _try_flock(fd, path, directory):
            continue  # the file we opened was removed by its releasing holder: open the new one
        previous = read_holder(fd)
        if previous and previous.get("pid") != os.getpid():
            logger.warning("%s: taking over a stale lock of %s (pid %s on %s, since %s; no longer running)",
                           directory, previous.get("stage", "?"), previous.get("pid", "?"),
                           previous.get("host", "?"), previous.get("since", "?"))
        try:
            _write_holder(fd, stage)
        except OSError as exc:
            release_lock(_Held(path, fd, created))
            raise SageError(f"{path}: cannot write the lock file ({exc.strerror}); free space or fix permissions") from None
        return _Held(path, fd, created)


def _open_lock_file(path: Path) -> int:
    """Open (or create) the lock file itself, never what a symlink or a hard link in its place names:
    the lock file is truncated and written, so a link would let anyone overwrite another's file."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP or path.is_symlink():
            raise SageError(f"{path}: is a symbolic link, not sage's lock file; sage does not write through it "
                            "(remove the link and re-run)") from None
        raise SageError(f"{path}: cannot create the lock file ({exc.strerror})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:  # 0: its holder just removed it (retried)
        os.close(fd)
        what = "not a regular file" if not stat.S_ISREG(info.st_mode) else f"a file with {info.st_nlink} hard links"
        raise SageError(f"{path}: is {what}, not sage's lock file; sage does not write to it (remove it and re-run)")
    return fd


def _try_flock(fd: int, path: Path, directory: Path) -> bool:
    """Lock ``fd`` or raise the refusal; False when ``path`` no longer names ``fd``'s file."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            _refuse_if_alive(fd, directory)
    except BlockingIOError:
        holder = _await_holder(fd)
        os.close(fd)
        raise DirectoryInUse(f"{directory}: in use by {describe_holder(holder)}; wait for it to finish or choose "
                        "another --out") from None
    except OSError as exc:
        if exc.errno not in _NO_FLOCK:
            os.close(fd)
            raise
        _refuse_if_alive(fd, directory)
    try:
        same = os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
    return same


def _await_holder(fd: int, wait_s: float = 2.0) -> dict[str, Any] | None:
    """The holder of a lock someone else holds; it writes itself right after locking, so a just-taken
    lock can read empty for a moment: poll briefly before calling the holder unknown."""
    deadline = time.monotonic() + wait_s
    while (holder := read_holder(fd)) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return holder


def _refuse_if_alive(fd: int, directory: Path) -> None:
    """Without flock: refuse when the recorded holder runs on this host (other hosts: trusted stale)."""
    holder = read_holder(fd)
    if holder and holder.get("host") == socket.gethostname() and holder.get("pid") != os.getpid() \
            and pid_alive(int(holder.get("pid", 0))):
        os.close(fd)
        raise DirectoryInUse(f"{directory}: in use by {describe_holder(holder)}; wait for it to finish or choose "
                             "another --out")


def release_lock(held: _Held) -> None:
    """Remove the lock file (while still holding it, so no one locks a removed file), then unlock."""
    with contextlib.suppress(OSError):
        held.path.unlink()
    os.close(held.fd)
    remove_if_empty(held.created)  # a refused or failed first run leaves no directory behind


def missing_directories(directory: Path) -> tuple[Path, ...]:
    """``directory`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for path in (directory, *directory.parents):
        if path.exists() or path.is_symlink():
            break
        missing.append(path)
    return tuple(missing)


def remove_if_empty(directories: tuple[Path, ...]) -> None:
    """Remove each of ``directories`` (deepest first) while it is empty; stop at the first that is not."""
    for path in directories:
        try:
            path.rmdir()
        except OSError:
            return


def read_holder(fd: int) -> dict[str, Any] | None:
    """The JSON a holder wrote into the lock file, or None (empty, half-written or not ours)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 4096)
        holder = json.loads(data.decode()) if data else None
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _write_holder(fd: int, stage: str) -> None:
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "stage": stage,
              "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(holder) + "\n").encode())


def describe_holder(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another process (its lock file names no holder yet)"
    return (f"sage {holder.get('stage', '?')} (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
            f"since {holder.get('since', '?')})")


# The temporaries sage's own writes leave when killed: ``.NAME.XXXXXXXX.tmp`` (:func:`~sage_cli.artifacts.atomic_path`, NAME
# a file sage writes), ``.NAME.old.tmp`` (:func:`~sage_cli.artifacts.replace_directory`), ``.prepare.XXXXXXXX.tmp`` (prepare's
# staging inside OUT) and, beside OUT, ``.OUT.XXXXXXXX.prepare.tmp`` (the staging of earlier sage versions).
_TEMP_SUFFIXES = (".parquet", ".json", ".jsonl", ".safetensors", ".u8", ".md", ".html", ".tex", ".csv", ".pt",
                  ".txt", ".png", ".pdf", ".svg", ".npy")
_TEMP_FILE = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")
_TEMP_DIR = re.compile(r"\.(prepare\.[a-z0-9_]{8}|.+\.old)\.tmp")


def find_stale_temporaries(directory: Path) -> list[Path]:
    """The temporaries of sage's own writes in ``directory`` (and prepare's old staging beside it).

    Only for a caller that holds ``directory``'s lock: every sage writer of a directory holds its
    lock, so whoever made these is gone (killed) and nothing will finish or remove them.
    """
    found = []
    for folder in (directory, directory / "figures"):  # the report writes its figures one level down
        with contextlib.suppress(OSError):
            for entry in folder.iterdir():
                match = _TEMP_FILE.fullmatch(entry.name)
                if match and entry.is_file() and not entry.is_symlink() \
                        and Path(match["name"]).suffix in _TEMP_SUFFIXES:
                    found.append(entry)
                elif _TEMP_DIR.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
                    found.append(entry)
    beside = re.compile(rf"\.{re.escape(directory.name)}\.[a-z0-9_]{{8}}\.prepare\.tmp")
    with contextlib.suppress(OSError):
        found += [p for p in directory.parent.iterdir()
                  if beside.fullmatch(p.name) and p.is_dir() and not p.is_symlink()]
    return sorted(found)


def remove_stale_temporaries(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove :func:`find_stale_temporaries` (the caller holds the lock), saying so; returns them."""
    found = find_stale_temporaries(Path(directory))
    for path in found:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if found:
        logger.warning("%s: removed %d temporary file(s) left by a killed sage run: %s", directory, len(found),
                       ", ".join(p.name for p in found[:5]) + (" ..." if len(found) > 5 else ""))
    return found


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
