"""A full disk is one line naming the file, never a traceback, and prepare leaves --out as it was.

Two kinds of test: a real full disk (a small tmpfs mounted in a private user + mount namespace
with ``unshare -rm``; skipped where that is not allowed) for `sage train`'s checkpoint writes and
for `sage prepare`, and a monkeypatched image writer (ENOSPC after 100 PNGs) that always runs.
"""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from sage_cli import artifacts
from sage_cli.cli import app

runner = CliRunner()
SAGE = f"{sys.executable} -m sage_cli"


def snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): artifacts.sha256_file(p) for p in sorted(directory.rglob("*")) if p.is_file()}


def can_mount_tmpfs(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    done = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {probe}"],
                          capture_output=True, timeout=30)
    probe.rmdir()
    return done.returncode == 0


def in_tmpfs(mount: Path, size: str, script: str) -> subprocess.CompletedProcess:
    """Run ``script`` (sh) with a ``size`` tmpfs on ``mount``, in a namespace of its own."""
    mount.mkdir()
    return subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size={size} tmpfs {mount} && {script}"],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture
def tmpfs(tmp_path: Path):
    if not can_mount_tmpfs(tmp_path):
        pytest.skip("cannot mount a tmpfs in a user namespace here (unshare -rm)")
    return tmp_path / "full"


def test_checkpoint_write_on_a_full_disk_is_one_line(tmpfs: Path, synthetic_prepared: Path,
                                                     synthetic_text_cache: Path) -> None:
    # 12 KiB: the lock file and metrics.jsonl take a page each; the first checkpoint does not fit
    done = in_tmpfs(tmpfs, "12k", f"{SAGE} -q train --prepared {synthetic_prepared} --text-cache "
                    f"{synthetic_text_cache} --method sage --out {tmpfs}/run --max-steps 3 --checkpoint-every 1 "
                    "--batch-size 8 --device cpu --num-workers 0")
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {tmpfs}/run/checkpoints/step-00000001: cannot write the checkpoint "
                               "(No space left on device); free space"), lines[0]


PREPARE_TWICE = """
import json, subprocess, sys
from pathlib import Path
from sage_cli import artifacts
out = Path(sys.argv[1]) / "p"
def snap():
    return {str(p.relative_to(out)): artifacts.sha256_file(p) for p in sorted(out.rglob("*")) if p.is_file()}
subprocess.run([sys.executable, "-m", "sage_cli", "-q", "prepare", "synthetic", "--out", str(out)], check=True)
before = snap()
done = subprocess.run([sys.executable, "-m", "sage_cli", "-q", "prepare", "synthetic", "--out", str(out),
                       "--seed", "1", "--force"], capture_output=True, text=True)
print(json.dumps({"rc": done.returncode, "stderr": done.stderr, "same": snap() == before,
                  "left": sorted(p.name for p in out.parent.iterdir())}))
"""


def test_prepare_on_a_full_disk_changes_nothing_in_out(tmpfs: Path) -> None:
    # 10 MiB: one synthetic preparation (7 MiB of PNGs) fits, a second one beside it does not
    script = tmpfs.parent / "prepare_twice.py"
    script.write_text(PREPARE_TWICE)
    done = in_tmpfs(tmpfs, "10m", f"{sys.executable} {script} {tmpfs}")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["rc"] == 1 and result["same"] and result["left"] == ["p"], result
    lines = result["stderr"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmpfs}/p: cannot write the preparation "
                                                   "(No space left on device)"), result["stderr"]


def test_prepare_failing_midway_changes_nothing_in_out(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "p"
    assert runner.invoke(app, ["-q", "prepare", "synthetic", "--out", str(out)]).exit_code == 0
    before = snapshot(out)
    real_save, calls = Image.Image.save, []

    def save_until_full(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 100:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_until_full)
    result = runner.invoke(app, ["prepare", "synthetic", "--out", str(out), "--seed", "1", "--force"])
    assert result.exit_code == 1
    assert result.output.replace("\n", "") == (f"error: {out}: cannot write the preparation (No space left on "
                                               "device); free space or fix permissions, then re-run (nothing in it "
                                               "changed)")
    assert len(calls) == 101 and snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]  # the temporary sibling is gone
