"""Killed and interrupted runs, as real processes: SIGKILL mid-epoch, SIGKILL inside a checkpoint
write and Ctrl-C (SIGINT) all resume with ``--resume`` to the weights and metrics of a run that was
never interrupted."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from sage_cli.commands.train import resume_command
from sage_cli.train import checkpoint as ckpt

DRIVER = Path(__file__).with_name("fault_driver.py")
# 45 train images, batch 8: 6 steps per epoch; 4 epochs = 24 steps; a checkpoint every 2 steps
ARGS = ("--method", "sage", "--batch-size", "8", "--epochs", "4", "--lr", "0.05", "--num-workers", "0",
        "--device", "cpu", "--log-every", "1", "--checkpoint-every", "2", "--seed", "0")
ENV = {**os.environ, "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}


def _command(prepared: Path, text: Path, out: Path, *extra: str, driver: bool = False) -> list[str]:
    program = [str(DRIVER)] if driver else ["-m", "sage_cli"]
    return [sys.executable, *program, "train", "--prepared", str(prepared), "--text-cache", str(text),
            "--out", str(out), *ARGS, *extra]


def _run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)


def _start(command: list[str], **env: str) -> subprocess.Popen:
    return subprocess.Popen(command, env={**ENV, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(proc: subprocess.Popen, condition: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before the moment to interrupt it:\n"
                        f"{proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for the run")
        time.sleep(0.01)


def _latest(out: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out / "checkpoints" / "last.json").read_text())
    except (OSError, ValueError):
        return None


def _timeless(out: Path) -> list[dict[str, Any]]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "images_per_s"} for line in lines]


def _assert_same_run(expected: Path, actual: Path) -> None:
    """Weights equal within 1e-6 (the issue's bound; they are bit-for-bit here, but CPU float32
    kernels do not promise bitwise reproducibility across processes), the same metrics lines
    (floats to 1e-6) and the same final eval. A wrong resume (a step repeated or skipped, another
    augmentation) moves the weights by orders of magnitude more."""
    a, b = load_file(str(expected / "adapter.safetensors")), load_file(str(actual / "adapter.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=0, msg=name)
    got, want = _timeless(actual), _timeless(expected)
    assert len(got) == len(want)
    for line, (g, w) in enumerate(zip(got, want)):
        assert g.keys() == w.keys(), line
        for key in w:
            same = g[key] == pytest.approx(w[key], rel=1e-6, abs=1e-9) if isinstance(w[key], float) else g[key] == w[key]
            assert same, (line, key, g[key], w[key])
    final = [json.loads((d / "train.json").read_text())["final_eval"] for d in (expected, actual)]
    assert final[0] == final[1] and final[0]["samples"] == 8


@pytest.fixture(scope="module")
def straight(synthetic_prepared: Path, synthetic_text_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("recovery") / "straight"
    result = _run(_command(synthetic_prepared, synthetic_text_cache, out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(
    straight: Path, synthetic_prepared: Path, synthetic_text_cache: Path, tmp_path: Path
) -> None:
    out = tmp_path / "killed"
    proc = _start(_command(synthetic_prepared, synthetic_text_cache, out))
    _wait_for(proc, lambda: (_latest(out) or {}).get("step_in_epoch", 0) > 0)  # a mid-epoch checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL and not (out / "train.json").exists()
    latest = ckpt.find_latest_checkpoint(out)
    assert latest is not None and ckpt.load_checkpoint_state(latest)["position"]["global_step"] < 24
    resumed = _run(_command(synthetic_prepared, synthetic_text_cache, out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout
    _assert_same_run(straight, out)


@pytest.mark.slow
def test_sigkill_inside_a_checkpoint_write_leaves_a_loadable_checkpoint(
    straight: Path, synthetic_prepared: Path, synthetic_text_cache: Path, tmp_path: Path
) -> None:
    out, marker = tmp_path / "killed", tmp_path / "hanging"
    proc = _start(_command(synthetic_prepared, synthetic_text_cache, out, driver=True),
                  SAGE_TEST_HANG_AT_STEP="4", SAGE_TEST_HANG_MARKER=str(marker))
    _wait_for(proc, marker.exists)  # the step-4 state.pt is half written
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    partial = Path(marker.read_text())
    assert partial.is_file() and partial.parent.name.startswith(".step-00000004.")  # the debris of the kill
    latest = ckpt.find_latest_checkpoint(out)
    assert latest == out / "checkpoints" / "step-00000002"
    assert ckpt.load_checkpoint_state(latest)["position"]["global_step"] == 2
    assert set(ckpt.load_weights(latest / ckpt.WEIGHTS)) == set(load_file(str(straight / "adapter.safetensors")))
    resumed = _run(_command(synthetic_prepared, synthetic_text_cache, out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not list((out / "checkpoints").glob(".step-*"))  # debris pruned by the next checkpoint
    _assert_same_run(straight, out)


@pytest.mark.slow
def test_ctrl_c_writes_a_checkpoint_and_prints_the_resume_command(
    straight: Path, synthetic_prepared: Path, synthetic_text_cache: Path, tmp_path: Path
) -> None:
    out = tmp_path / "interrupted"
    proc = _start(_command(synthetic_prepared, synthetic_text_cache, out))
    _wait_for(proc, lambda: _latest(out) is not None)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    message = " ".join(stderr.split())
    assert "SIGINT: stopped at step" in message, stderr
    step = int(message.split("stopped at step ")[1].split()[0])
    assert 2 <= step < 24
    assert _latest(out)["global_step"] == step  # a checkpoint of the step it stopped at
    checkpoint = out / "checkpoints" / ckpt.checkpoint_name(step)
    assert ckpt.load_checkpoint_state(checkpoint)["position"]["global_step"] == step
    hint = stderr.split("resume with:")[1].strip().splitlines()[0].strip()
    assert hint.startswith("python -m sage_cli train ") and hint.endswith(" --resume")
    resumed = _run([sys.executable, *shlex.split(hint)[1:]])  # the printed command, as printed
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_run(straight, out)


def test_resume_command_repeats_the_arguments() -> None:
    argv = ["/x/sage_cli/__main__.py", "train", "--out", "my run", "--force", "--lr", "0.1"]
    assert resume_command(argv, under_torchrun=False) == "python -m sage_cli train --out 'my run' --lr 0.1 --resume"
    assert resume_command(["/venv/bin/sage", "train", "-o", "r"], under_torchrun=False) == "sage train -o r --resume"
    assert resume_command(argv, under_torchrun=True).startswith("torchrun [the same torchrun options] -m sage_cli train")
