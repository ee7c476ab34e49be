"""``python fault_driver.py train ...``: ``python -m sage_cli`` with a test-only fault injected.

SAGE_TEST_HANG_AT_STEP=N makes the ``state.pt`` write of the step-N checkpoint write half of its
bytes, create the file named by SAGE_TEST_HANG_MARKER and hang, so that a test can SIGKILL the
process in the middle of a checkpoint write. SAGE_TEST_KILL_AFTER_STEP=N SIGKILLs the process
right after optimizer step N (logged to metrics.jsonl and every tracker, not checkpointed unless
step N is a checkpoint step). SAGE_TEST_FAKE_WANDB=FILE installs a stand-in ``wandb`` module that
records its calls, one JSON line each, in FILE. Nothing of this lives in the package.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time
import types
from pathlib import Path
from typing import Any

import torch

from sage_cli import artifacts
from sage_cli.cli import app
from sage_cli.train import checkpoint as ckpt


def hang_in_write(hang_step: int, marker: Path) -> None:
    original = ckpt.write_state

    def write_state(path: Path, payload: dict[str, Any]) -> None:
        if payload["position"]["global_step"] != hang_step:
            return original(path, payload)
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        data = buffer.getvalue()
        with artifacts.atomic_path(path) as part, open(part, "wb") as handle:
            handle.write(data[: len(data) // 2])
            handle.flush()
            staged = marker.with_name(marker.name + ".part")  # renamed: the test never reads a half-written marker
            staged.write_text(str(part))
            os.replace(staged, marker)
            while True:  # the test kills us here
                time.sleep(1)

    ckpt.write_state = write_state


def kill_after_step(kill_step: int) -> None:
    from sage_cli.train.loop import Trainer

    original = Trainer.after_step

    def after_step(self: Trainer, metrics: Any) -> None:
        original(self, metrics)
        if self.position.global_step == kill_step:
            os.kill(os.getpid(), signal.SIGKILL)

    Trainer.after_step = after_step


def fake_wandb(record: Path) -> types.ModuleType:
    """A ``wandb`` module whose init / log / finish append ``{"init": kwargs}``, ``{"log": values,
    "step": step}`` and ``{"finish": true}`` lines to ``record``."""

    def write(entry: dict[str, Any]) -> None:
        with open(record, "a") as f:
            f.write(json.dumps(entry, default=str) + "\n")

    class Run:
        def log(self, values: dict[str, float], step: int | None = None) -> None:
            write({"log": values, "step": step})

        def finish(self) -> None:
            write({"finish": True})

    def init(**kwargs: Any) -> Run:
        write({"init": kwargs})
        return Run()

    module = types.ModuleType("wandb")
    module.init = init
    return module


if __name__ == "__main__":
    if os.environ.get("SAGE_TEST_HANG_AT_STEP"):
        hang_in_write(int(os.environ["SAGE_TEST_HANG_AT_STEP"]), Path(os.environ["SAGE_TEST_HANG_MARKER"]))
    if os.environ.get("SAGE_TEST_KILL_AFTER_STEP"):
        kill_after_step(int(os.environ["SAGE_TEST_KILL_AFTER_STEP"]))
    if os.environ.get("SAGE_TEST_FAKE_WANDB"):
        sys.modules["wandb"] = fake_wandb(Path(os.environ["SAGE_TEST_FAKE_WANDB"]))
    app()
