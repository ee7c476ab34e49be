"""SGD over the trainable parameters and a cosine schedule (per step, or per epoch as LIFT's) with linear warm-up."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from sage_cli.train.config import OptimConfig


def build_optimizer(model: nn.Module | Iterable[nn.Parameter], cfg: OptimConfig) -> torch.optim.SGD:
    """SGD (momentum, weight decay) over ``model``'s parameters that require grad, or the given list."""
    candidates = model.parameters() if isinstance(model, nn.Module) else model
    params = [p for p in candidates if p.requires_grad]
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def compute_warmup_steps(cfg: OptimConfig, steps_per_epoch: int, total_steps: int) -> int:
    """``--warmup-steps`` if given, else ``--warmup-epochs`` worth of steps; never more than the run."""
    steps = cfg.warmup_steps if cfg.warmup_steps is not None else round(cfg.warmup_epochs * steps_per_epoch)
    return max(0, min(steps, total_steps))


def compute_lr_factor(step: int, warmup_steps: int, total_steps: int, steps_per_epoch: int | None = None,
                      epochs: int = 1) -> float:
    """Multiplier of the base lr for optimizer step ``step`` (0-based).

    Linear warm-up ``(step + 1) / warmup_steps`` (so step 0 already moves), then a cosine from 1
    to 0 over the remaining steps; or, given ``steps_per_epoch`` (``--lr-schedule cosine-epoch``),
    LIFT's CosineAnnealingLR(T_max=epochs) stepped once an epoch: 0.5 (1 + cos(pi e / epochs))
    through epoch e.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if steps_per_epoch is not None:
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step // steps_per_epoch) / epochs)))
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, steps_per_epoch: int | None = None,
    epochs: int = 1,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per optimizer step; its state_dict is all a resume needs.
    ``steps_per_epoch`` given: the per-epoch cosine (see :func:`compute_lr_factor`)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: compute_lr_factor(step, warmup_steps, total_steps, steps_per_epoch, epochs)
    )
