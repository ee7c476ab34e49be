"""Output-directory locks: real processes racing for one directory, a live holder, a stale lock."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sage_cli import artifacts, locks
from sage_cli.errors import SageError

SAGE = [sys.executable, "-m", "sage_cli"]
HOLD = """
import sys, time
from sage_cli.locks import lock_output_dir
with lock_output_dir(sys.argv[1], "train"):
    print("locked", flush=True)
    sys.stdin.read()  # until the test closes our stdin (or kills us)
"""


def snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): artifacts.sha256_file(p) for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def holder(tmp_path: Path):
    """Start a process that holds the lock of a directory until stdin closes; yields (process, start)."""
    started: list[subprocess.Popen] = []

    def start(directory: Path) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        started.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def test_two_prepares_racing_one_wins_and_the_result_is_whole(tmp_path: Path) -> None:
    out = tmp_path / "p"
    procs = [subprocess.Popen([*SAGE, "-q", "prepare", "synthetic", "--out", str(out), "--seed", str(seed)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (0, 1)]
    results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    codes = [r[2] for r in results]
    assert sorted(codes) == [0, 1], results
    loser = results[codes.index(1)]
    error = loser[1].strip()
    # refused by the lock while the other ran, or by the finished result of the other seed
    assert error.count("\n") == 0 and error.startswith("error: "), error
    assert ("in use by sage prepare (pid" in error) or ("result of other inputs" in error), error
    winner_seed = codes.index(0)
    reference = tmp_path / "reference"
    subprocess.run([*SAGE, "-q", "prepare", "synthetic", "--out", str(reference), "--seed", str(winner_seed)],
                   check=True, timeout=120)
    assert artifacts.read_record(out, artifacts.PREPARE_RECORD)["inputs"]["seed"] == winner_seed
    assert snapshot(out) == snapshot(reference) | {"prepare.json": snapshot(out)["prepare.json"]}
    assert not (out / locks.LOCK_NAME).exists()


def test_a_live_holder_refuses_a_second_writer_and_force_wipes_nothing(tmp_path: Path, holder) -> None:
    out = tmp_path / "p"
    subprocess.run([*SAGE, "-q", "prepare", "synthetic", "--out", str(out)], check=True, timeout=120)
    before = snapshot(out)
    proc = holder(out)
    result = subprocess.run([*SAGE, "-q", "prepare", "synthetic", "--out", str(out), "--seed", "1", "--force"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"error: {out}: in use by sage train (pid {proc.pid} on {socket.gethostname()}, "
                                     f"since {json.loads((out / locks.LOCK_NAME).read_text())['since']}); "
                                     "wait for it to finish or choose another --out")
    assert snapshot(out) == before | {locks.LOCK_NAME: snapshot(out)[locks.LOCK_NAME]}
    proc.stdin.close()  # the holder finishes: its lock file goes with it
    assert proc.wait(timeout=30) == 0
    assert snapshot(out) == before


def test_a_stale_lock_is_taken_over_with_a_message(tmp_path: Path, holder, caplog) -> None:
    out = tmp_path / "run"
    proc = holder(out)
    with pytest.raises(SageError, match=rf"in use by sage train \(pid {proc.pid} on "):
        with locks.lock_output_dir(out, "report"):
            pass
    os.kill(proc.pid, signal.SIGKILL)  # dies holding it: the file stays, the kernel drops the lock
    proc.wait(timeout=30)
    assert json.loads((out / locks.LOCK_NAME).read_text())["pid"] == proc.pid
    with caplog.at_level(logging.WARNING, logger="sage_cli.locks"):
        with locks.lock_output_dir(out, "report"):
            assert json.loads((out / locks.LOCK_NAME).read_text())["pid"] == os.getpid()
    assert f"taking over a stale lock of train (pid {proc.pid} on {socket.gethostname()}" in caplog.text
    assert not out.exists() or not any(out.iterdir())


def test_the_lock_goes_with_its_holder_and_a_directory_it_created_empty(tmp_path: Path) -> None:
    out = tmp_path / "new" / "dir"
    with locks.lock_output_dir(out, "prepare"):
        assert (out / locks.LOCK_NAME).is_file()
    assert not out.exists()
    out.mkdir(parents=True)
    with locks.lock_output_dir(out, "prepare"):
        (out / "kept").write_text("x")
    assert sorted(p.name for p in out.iterdir()) == ["kept"]


def test_train_is_refused_while_another_process_holds_its_run_dir(tmp_path: Path, holder,
                                                                   synthetic_prepared: Path, synthetic_text_cache: Path) -> None:
    out = tmp_path / "run"
    proc = holder(out)
    result = subprocess.run([*SAGE, "-q", "train", "--prepared", str(synthetic_prepared), "--text-cache",
                             str(synthetic_text_cache), "--out", str(out), "--max-steps", "2", "--force", "--method", "linear",
                             "--device", "cpu", "--num-workers", "0"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().startswith(f"error: {out}: in use by sage train (pid {proc.pid} on ")
    assert result.stderr.strip().count("\n") == 0
    assert sorted(p.name for p in out.iterdir()) == [locks.LOCK_NAME]


@pytest.mark.skipif(locks.fcntl is None, reason="needs flock")
def test_a_holder_caught_between_locking_and_writing_itself_is_still_named(tmp_path: Path) -> None:
    # the race CI hit: the winner has flock'ed the file but not yet written its pid into it
    import threading

    directory = tmp_path / "out"
    directory.mkdir()
    fd = os.open(directory / locks.LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    locks.fcntl.flock(fd, locks.fcntl.LOCK_EX | locks.fcntl.LOCK_NB)
    writer = threading.Timer(0.3, locks._write_holder, args=(fd, "prepare"))
    writer.start()
    try:
        with pytest.raises(SageError, match=rf"in use by sage prepare \(pid {os.getpid()} on "):
            locks.acquire_lock(directory, "train")
    finally:
        writer.join()
        os.close(fd)


def test_a_refused_first_run_leaves_no_directory_it_created(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    out = tmp_path / "runs" / "in-lt" / "s0" / "lift"  # three directories the lock has to make
    with pytest.raises(SageError, match="refused"), locks.lock_output_dir(out, "train"):
        assert (out / locks.LOCK_NAME).is_file()
        raise SageError("refused")
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["notes.txt"]  # no in-lt/, no lock file
    assert snapshot(tmp_path) == before
    with locks.lock_output_dir(out, "train"):
        (out.parent / "other").write_text("x")  # something else filled s0/ meanwhile: it stays
    assert not out.exists() and (out.parent / "other").read_text() == "x"


def test_a_lock_file_that_is_a_symlink_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    # red team: `ln -s ~/victim OUT/.sage.lock` made every stage truncate and overwrite the victim
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    out = tmp_path / "p"
    out.mkdir()
    (out / locks.LOCK_NAME).symlink_to(victim)
    result = subprocess.run([*SAGE, "-q", "prepare", "synthetic", "--out", str(out)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == (f"error: {out / locks.LOCK_NAME}: is a symbolic link, not sage's lock file; "
                                     "sage does not write through it (remove the link and re-run)")
    assert victim.read_text() == "precious\n"
    assert sorted(p.name for p in out.iterdir()) == [locks.LOCK_NAME]  # nothing prepared


def test_a_dangling_symlink_lock_creates_nothing_at_its_target(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / locks.LOCK_NAME).symlink_to(tmp_path / "created-by-the-lock")
    with pytest.raises(SageError, match="is a symbolic link, not sage's lock file"):
        with locks.lock_output_dir(out, "report"):
            pass
    assert not (tmp_path / "created-by-the-lock").exists()


def test_a_hard_linked_or_special_lock_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    os.link(victim, out / locks.LOCK_NAME)
    with pytest.raises(SageError) as info:
        with locks.lock_output_dir(out, "report"):
            pass
    assert str(info.value) == (f"{out / locks.LOCK_NAME}: is a file with 2 hard links, not sage's lock file; "
                               "sage does not write to it (remove it and re-run)")
    assert victim.read_text() == "precious\n"
    (out / locks.LOCK_NAME).unlink()
    os.mkfifo(out / locks.LOCK_NAME)
    with pytest.raises(SageError, match="is not a regular file, not sage's lock file"):
        with locks.lock_output_dir(out, "report"):
            pass
