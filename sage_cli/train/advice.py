"""Warnings about a run that is set up to learn little (too few optimiser steps) or to run slowly.

The defaults (batch 128, 10 epochs) suit ImageNet-sized sets; on a few hundred images they make a
handful of steps. The advice halves the batch size (not below :data:`MIN_BATCH`) and then raises the
epochs until the run makes at least :data:`MIN_STEPS` steps.

On a GPU, a forward pass of fewer than :data:`MIN_IMAGES_PER_GPU` images leaves the step bound by
kernel launches (the host issues the same kernels whatever the batch): 128 images over 8 GPUs is 16
per GPU and barely faster than one GPU. :func:`warn_launch_bound` says so.
"""

from __future__ import annotations

import logging
import math

logger = logging.getLogger(__name__)

MIN_STEPS = 100  # fewer optimiser steps in all than this earns a warning
MIN_BATCH = 16  # the advice does not halve the batch size below this
MIN_IMAGES_PER_GPU = 64  # fewer images per GPU per forward pass than this earns a warning


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


def compute_launch_advice(micro_batch: int, world_size: int, device_type: str) -> str | None:
    """One line when a CUDA forward pass sees fewer than MIN_IMAGES_PER_GPU images per GPU; None otherwise."""
    per_gpu = micro_batch // max(1, world_size)
    if device_type != "cuda" or per_gpu >= MIN_IMAGES_PER_GPU:
        return None
    where = f"micro-batch {micro_batch} over {world_size} GPUs" if world_size > 1 else f"micro-batch {micro_batch}"
    return (f"{per_gpu} images per GPU per forward pass ({where}): the step is bound by kernel launches, not by "
            f"the GPU; give each GPU at least {MIN_IMAGES_PER_GPU} (a larger --batch-size / --micro-batch-size, "
            "or fewer GPUs)")


def warn_launch_bound(micro_batch: int, world_size: int, device_type: str) -> None:
    """Log :func:`compute_launch_advice` when it has something to say."""
    advice = compute_launch_advice(micro_batch, world_size, device_type)
    if advice is not None:
        logger.warning("%s", advice)
