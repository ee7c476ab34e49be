"""What a run does when something goes wrong: full disks, a diverging loss, Ctrl-C / SIGTERM.

- :func:`explain_write_errors`: an OSError of a full, read-only or forbidden disk becomes a
  one-line SageError naming the path (the atomic checkpoint writes leave the previous one intact).
- :class:`NonFiniteWatch`: remembers, on the device and without a host sync per step, the first
  step whose loss was NaN or inf; the loop checks it before it logs or checkpoints, so a bad state
  is never saved.
- :class:`StopSignals`: the first SIGINT / SIGTERM asks the loop to stop at the next step
  boundary (it then checkpoints and raises :class:`TrainingInterrupted`); a second Ctrl-C stops at once.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from types import FrameType
from typing import Any

import torch

from sage_cli import errors
from sage_cli.errors import SageError

logger = logging.getLogger(__name__)

def explain_write_errors(path: Path, what: str) -> AbstractContextManager[None]:
    """Map a disk-full / not-writable OSError inside the block to a SageError naming ``path``."""
    return errors.explain_write_errors(path, what, fix="free space or fix permissions, then re-run with --resume")


class TrainingInterrupted(SageError):
    """The run stopped on a signal at ``step``, after writing (or keeping) ``checkpoint``."""

    def __init__(self, step: int, total_steps: int, checkpoint: Path | None, signal_name: str) -> None:
        self.step, self.total_steps, self.checkpoint, self.signal_name = step, total_steps, checkpoint, signal_name
        saved = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint"
        super().__init__(f"{signal_name}: stopped at step {step} of {total_steps}; {saved}; continue with --resume")


class NonFiniteWatch:
    """The first step whose loss was not finite, kept on ``device`` (-1: none so far)."""

    def __init__(self, device: torch.device) -> None:
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)

    def observe(self, loss: torch.Tensor, step: int) -> None:
        """Note ``loss`` (a scalar of optimizer step ``step``, 1-based); no host sync."""
        bad = ~torch.isfinite(loss.detach())
        self.first_bad = torch.where((self.first_bad < 0) & bad, step, self.first_bad)

    def first_bad_step(self, reduce_min: Any = None) -> int | None:
        """The first bad step (over every rank when ``reduce_min`` is a DistContext.min_), or None."""
        never = torch.iinfo(torch.long).max
        value = torch.where(self.first_bad < 0, never, self.first_bad).reshape(1)
        if reduce_min is not None:
            value = reduce_min(value)
        step = int(value.item())  # the host sync: only on logging and checkpoint steps
        return None if step == never else step


def non_finite_error(step: int, last_checkpoint: Path | None) -> SageError:
    where = (f"the last good checkpoint, {last_checkpoint}, is intact: --resume continues from it"
             if last_checkpoint else "no checkpoint was written before it")
    return SageError(
        f"step {step}: the training loss is NaN or inf; stopped without saving that state; {where} "
        "(or start over with a lower --lr and --force)"
    )


class StopSignals:
    """Within the block, SIGINT / SIGTERM set :attr:`received` instead of killing the process.

    A second SIGINT raises KeyboardInterrupt at once (a repeated SIGTERM is ignored). Outside the main thread (where handlers
    cannot be installed) it does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            if signum == signal.SIGINT:  # Ctrl-C twice: the user wants out now
                raise KeyboardInterrupt
            return  # SIGTERM again (torchrun forwards the scheduler's): already stopping
        self.received = signal.Signals(signum).name
        logger.warning("%s: stopping after this step and writing a checkpoint (again to stop at once)",
                       self.received)
