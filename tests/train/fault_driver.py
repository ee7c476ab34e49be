"""``python fault_driver.py train ...``: ``python -m sage_cli`` with a test-only fault injected.

SAGE_TEST_HANG_AT_STEP=N makes the ``state.pt`` write of the step-N checkpoint write half of its
bytes, create the file named by SAGE_TEST_HANG_MARKER and hang, so that a test can SIGKILL the
process in the middle of a checkpoint write. Nothing of this lives in the package.
"""

from __future__ import annotations

import io
import os
import time
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


if __name__ == "__main__":
    if os.environ.get("SAGE_TEST_HANG_AT_STEP"):
        hang_in_write(int(os.environ["SAGE_TEST_HANG_AT_STEP"]), Path(os.environ["SAGE_TEST_HANG_MARKER"]))
    app()
