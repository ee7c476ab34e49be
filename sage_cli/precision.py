"""The one mixed-precision rule of every stage: ``--precision auto|bf16|fp16|fp32``.

``auto`` (the default) is bf16 autocast on CUDA and float32 elsewhere; ``bf16`` / ``fp16`` autocast
in that dtype on any device (CPU autocast supports both); ``fp32`` never autocasts, even on CUDA.
``fp16`` is LIFT's ``prec: amp`` (float16 autocast with a :class:`torch.amp.GradScaler` in the
train step, :mod:`sage_cli.train.loop`). Every stage that runs a trained model (train and its
evaluations, report, predict) calls these functions with the run's recorded precision.

Training in bf16 also casts the tower's frozen weights to bf16 once (:func:`cast_frozen_weights`):
autocast would cast them again at every op of every pass (it caches only the casts of weights that
require grad), reading 4 bytes and writing 2 for each frozen weight each time. The cast copy holds
the same bf16 values autocast's casts make, so the matmuls compute what they computed; norms
stay float32 (autocast runs them in float32), and so does every trainable parameter (the optimizer
updates float32 masters). fp16 casts nothing: LIFT keeps float32 weights under float16 autocast.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

# Modules whose parameters stay float32: autocast runs these ops in float32.
NORMS = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.modules.batchnorm._NormBase)

AUTO = "auto"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}  # the autocast dtype of each choice


def autocast_dtype(device: torch.device | str, precision: str = AUTO) -> torch.dtype | None:
    """The dtype ``precision`` autocasts in on ``device``; None: no autocast (float32)."""
    if precision == AUTO:
        return torch.bfloat16 if torch.device(device).type == "cuda" else None
    if precision not in DTYPES:
        raise ValueError(f"precision must be one of auto, {', '.join(DTYPES)}; got {precision!r}")
    return DTYPES[precision]


def autocast(device: torch.device | str, precision: str = AUTO) -> contextlib.AbstractContextManager:
    """Autocast in :func:`autocast_dtype` on ``device``; a no-op context when that is None."""
    dtype = autocast_dtype(device, precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def describe_precision(device: torch.device | str, precision: str = AUTO) -> str:
    """What :func:`autocast` does on ``device``, as run records name it: bf16-autocast, fp16-autocast or fp32."""
    dtype = autocast_dtype(device, precision)
    return {torch.bfloat16: "bf16-autocast", torch.float16: "fp16-autocast"}.get(dtype, "fp32")


def compute_dtype(device: torch.device | str, precision: str = AUTO) -> torch.dtype:
    """The dtype :func:`autocast` computes matmuls in on ``device`` (float32 without autocast)."""
    return autocast_dtype(device, precision) or torch.float32


def casts_frozen_weights(device: torch.device | str, precision: str = AUTO) -> bool:
    """Whether a run casts its frozen tower weights once (:func:`cast_frozen_weights`): under bf16 only."""
    return autocast_dtype(device, precision) == torch.bfloat16


def uses_grad_scaler(device: torch.device | str, precision: str = AUTO) -> bool:
    """Whether the train step scales its loss (:class:`torch.amp.GradScaler`): under fp16 autocast, as LIFT does."""
    return autocast_dtype(device, precision) == torch.float16


def cast_frozen_weights(module: nn.Module, dtype: torch.dtype) -> int:
    """Cast ``module``'s frozen floating-point parameters to ``dtype`` in place, once; the
    parameters of norm layers (:data:`NORMS`) and every trainable one keep their dtype.

    Returns how many parameters were cast. The module must then run under :func:`autocast` of
    that dtype (as every stage runs it): outside it a float32 input would meet a bf16 weight.
    """
    cast = 0
    for sub in module.modules():
        if isinstance(sub, NORMS):
            continue
        for param in sub.parameters(recurse=False):
            if not param.requires_grad and param.is_floating_point() and param.dtype != dtype:
                param.data = param.data.to(dtype)
                cast += 1
    return cast
