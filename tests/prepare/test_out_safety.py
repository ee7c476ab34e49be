"""`sage prepare` never deletes what it did not write, works when OUT is a mount point (renames stay
inside OUT's file system) and cleans up the staging a killed run left."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sage_cli import artifacts
from sage_cli.cli import app
from sage_cli.prepare import IMAGES_MARK, PrepareConfig, run

runner = CliRunner()
SAGE = [sys.executable, "-m", "sage_cli"]


def snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): artifacts.sha256_file(p) for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_users_images_folder_in_out_is_refused_even_with_force(tmp_path: Path) -> None:
    # red team: `sage prepare synthetic --out DIR` deleted DIR/images (a user's photos), exit 0
    out = tmp_path / "DIR"
    (out / "images" / "holiday").mkdir(parents=True)
    (out / "images" / "holiday" / "beach.jpg").write_bytes(b"my photo")
    before = snapshot(out)
    for extra in ([], ["--force"]):
        result = runner.invoke(app, ["prepare", "synthetic", "--out", str(out), *extra])
        assert result.exit_code == 1, result.output
        assert result.output.replace("\n", "") == (
            f"error: {out / 'images'}: exists and was not written by sage prepare (no {IMAGES_MARK} in it); sage will "
            "not replace it, even with --force: move it away or choose another --out")
    assert snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["images"]


def test_sages_own_images_are_replaced_with_force(tmp_path: Path) -> None:
    out = tmp_path / "p"
    run(PrepareConfig(dataset="synthetic", out=out))
    assert (out / "images" / IMAGES_MARK).is_file()
    first = (out / "images" / "train" / "000007.png").read_bytes()
    run(PrepareConfig(dataset="synthetic", out=out, seed=1, force=True))
    assert (out / "images" / "train" / "000007.png").read_bytes() != first
    (out / "images" / IMAGES_MARK).unlink()  # prepared by an earlier sage: its prepare.json vouches for them
    result = run(PrepareConfig(dataset="synthetic", out=out, seed=2, force=True))
    assert result.record["inputs"]["seed"] == 2 and (out / "images" / IMAGES_MARK).is_file()


def test_prepare_into_a_mount_point_renames_only_inside_it(tmp_path: Path, monkeypatch) -> None:
    # OUT a mount point (a Docker / NFS volume): a rename between OUT and anything outside it is EXDEV
    out = tmp_path / "volume"
    out.mkdir()
    real_replace, real_rename, moves = os.replace, os.rename, []

    def inside(path) -> bool:
        return Path(os.path.abspath(path)).is_relative_to(out)

    def across(real):
        def move(src, dst, *args, **kwargs):
            if inside(src) != inside(dst):
                raise OSError(errno.EXDEV, "Invalid cross-device link", str(src))
            moves.append(Path(dst).name)
            return real(src, dst, *args, **kwargs)
        return move

    monkeypatch.setattr(os, "replace", across(real_replace))
    monkeypatch.setattr(os, "rename", across(real_rename))
    result = runner.invoke(app, ["-q", "prepare", "synthetic", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert artifacts.read_record(out, artifacts.PREPARE_RECORD)["counts"]["test"] == 480
    assert {"images", "manifest.parquet", "classes.parquet", "prepare.json"} <= set(moves)
    assert sorted(p.name for p in out.iterdir()) == ["classes.parquet", "images", "manifest.parquet", "prepare.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["volume"]


def test_prepare_into_a_real_tmpfs_mount_point(tmp_path: Path) -> None:
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-rm", "true"], capture_output=True, timeout=30).returncode != 0:
        pytest.skip("cannot make a mount namespace here (unshare -rm)")
    out = tmp_path / "mnt"
    out.mkdir()
    sage = " ".join(SAGE)
    done = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64m tmpfs {out} && "
                           f"{sage} -q prepare synthetic --out {out} >/dev/null && ls -A {out} && echo -- && ls -A {tmp_path}"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["classes.parquet", "images", "manifest.parquet", "prepare.json", "--", "mnt"]


def test_a_killed_prepare_leaves_staging_that_the_next_run_removes(tmp_path: Path) -> None:
    out = tmp_path / "p"
    proc = subprocess.Popen([*SAGE, "-q", "prepare", "synthetic", "--out", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(out.glob(".prepare.*.tmp/images/train/*.png")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    staging = list(out.glob(".prepare.*.tmp"))
    assert len(staging) == 1 and not (out / artifacts.PREPARE_RECORD).exists()
    done = subprocess.run([*SAGE, "prepare", "synthetic", "--out", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{out}: removed 1 temporary file(s) left by a killed sage run: {staging[0].name}" in " ".join((done.stdout + done.stderr).split())
    assert sorted(p.name for p in out.iterdir()) == ["classes.parquet", "images", "manifest.parquet", "prepare.json"]


def test_stale_temporaries_of_sage_go_and_look_alikes_stay(tmp_path: Path, caplog, monkeypatch) -> None:
    monkeypatch.setattr(logging.getLogger("sage_cli"), "propagate", True)  # the CLI's console stops it
    out = tmp_path / "p"
    run(PrepareConfig(dataset="synthetic", out=out))
    (out / "figures").mkdir()
    stale = [out / ".manifest.parquet.ab12cd_3.tmp", out / ".prepare.json.zz99yy00.tmp",
             out / "figures" / ".lift.png.a1b2c3d4.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    stale_dirs = [out / ".images.old.tmp", out / ".prepare.k2j3h4g5.tmp", tmp_path / ".p.q1w2e3r4.prepare.tmp"]
    for path in stale_dirs:
        (path / "images").mkdir(parents=True)
    kept = [out / "notes.tmp", out / ".mine.abcdefgh.tmp", out / ".manifest.parquet.short.tmp",
            tmp_path / ".other.q1w2e3r4.prepare.tmp"]
    for path in kept:
        path.write_bytes(b"user")
    with caplog.at_level(logging.WARNING, logger="sage_cli"):
        result = run(PrepareConfig(dataset="synthetic", out=out))  # nothing to do, but it cleans up
    assert result.skipped
    assert not any(p.exists() for p in stale + stale_dirs)
    assert all(p.read_bytes() == b"user" for p in kept)
    assert f"{out}: removed 6 temporary file(s) left by a killed sage run" in caplog.text


def test_an_images_folder_that_is_a_mount_point_is_one_line(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "p"
    run(PrepareConfig(dataset="synthetic", out=out))
    real_replace = os.replace

    def busy(src, dst, *args, **kwargs):
        if Path(src) == out / "images":  # a volume mounted on OUT/images cannot be renamed
            raise OSError(errno.EBUSY, "Device or resource busy", str(src))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", busy)
    result = runner.invoke(app, ["prepare", "synthetic", "--out", str(out), "--seed", "1", "--force"])
    assert result.exit_code == 1
    assert result.output.replace("\n", "") == (f"error: {out / 'images'}: cannot be replaced by a rename (Device or "
                                               "resource busy; is it a mount point?); prepare into another --out")
    assert (out / "images" / "train" / "000007.png").is_file()
