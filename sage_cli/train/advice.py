"""Warnings about a run that is set up to learn little: too few optimiser steps, nothing to evaluate on.

The defaults (batch 128, 10 epochs) suit ImageNet-sized sets; on a few hundred images they make a
handful of steps. The advice halves the batch size (not below :data:`MIN_BATCH`) and then raises the
epochs until the run makes at least :data:`MIN_STEPS` steps.
"""

from __future__ import annotations

import logging
import math

logger = logging.getLogger(__name__)

MIN_STEPS = 100  # fewer optimiser steps in all than this earns a warning
MIN_BATCH = 16  # the advice does not halve the batch size below this


def compute_schedule_advice(num_samples: int, batch_size: int, epochs: int) -> str | None:
    """One line saying the run makes fewer than MIN_STEPS steps and what to pass instead; None if enough."""
    total = epochs * math.ceil(num_samples / batch_size)
    if total >= MIN_STEPS or num_samples < 1:
        return None
    batch = batch_size
    while batch > MIN_BATCH and epochs * math.ceil(num_samples / batch) < MIN_STEPS:
        batch = max(MIN_BATCH, batch // 2)
    steps_per_epoch = math.ceil(num_samples / batch)
    new_epochs = max(epochs, math.ceil(MIN_STEPS / steps_per_epoch))
    flags = [f"--batch-size {batch}"] * (batch != batch_size) + [f"--epochs {new_epochs}"] * (new_epochs != epochs)
    return (f"{num_samples} images x {epochs} epoch{'s' * (epochs != 1)} at batch {batch_size} = {total} "
            f"optimiser steps in all (under {MIN_STEPS}): consider {' '.join(flags)} ({new_epochs * steps_per_epoch} steps)")


def warn_short_schedule(num_samples: int, batch_size: int, epochs: int, max_steps: int | None) -> None:
    """Log :func:`compute_schedule_advice` unless ``--max-steps`` chose the length of the run."""
    advice = None if max_steps else compute_schedule_advice(num_samples, batch_size, epochs)
    if advice is not None:
        logger.warning("%s", advice)
