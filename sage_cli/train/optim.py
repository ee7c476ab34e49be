"""The optimizer over the trainable parameters and a cosine schedule (per step, or per epoch as
LIFT's: ``--lr-schedule``) with linear warm-up.

SGD (LIFT's, the benchmark default) decays every trainable tensor, as LIFT does. AdamW follows
open_clip's training app and timm: no weight decay on a tensor of dimension < 2 (biases, LayerNorm /
BatchNorm affines, SSF scales and shifts, adapter gates, a learned logit scale) nor on prompt tokens
(timm's ``no_weight_decay`` for the class token and position embedding); every matrix decays.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from sage_cli.train.config import OptimConfig

NO_DECAY_SUFFIXES = ("prompts.tokens", "logit_scale")  # tensors of dimension >= 2 that AdamW leaves undecayed


def decays(name: str, param: nn.Parameter) -> bool:
    """Whether AdamW decays ``param`` (named ``name``): matrices and kernels yes, see the module doc."""
    return param.ndim >= 2 and not name.endswith(NO_DECAY_SUFFIXES)


def split_decay(named: Iterable[tuple[str, nn.Parameter]]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """The trainable parameters in order, as (decayed, not decayed) by :func:`decays`."""
    decayed, kept = [], []
    for name, param in named:
        if param.requires_grad:
            (decayed if decays(name, param) else kept).append(param)
    return decayed, kept


def build_optimizer(named: nn.Module | Iterable[tuple[str, nn.Parameter]], cfg: OptimConfig) -> torch.optim.Optimizer:
    """``cfg.optimizer`` over the parameters that require grad of a module or of ``(name, parameter)`` pairs.

    SGD: one group, momentum and L2 weight decay on everything. AdamW: group 0 decayed, group 1
    (see :func:`decays`) with weight decay 0; an empty group is left out.
    """
    pairs = list(named.named_parameters() if isinstance(named, nn.Module) else named)
    if cfg.optimizer == "sgd":
        params = [p for _, p in pairs if p.requires_grad]
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    decayed, kept = split_decay(pairs)
    groups = [{"params": decayed, "weight_decay": cfg.weight_decay}, {"params": kept, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                             eps=cfg.eps)


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
