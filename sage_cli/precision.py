"""The one mixed-precision rule of every stage: bf16 autocast on CUDA, float32 elsewhere.

Training in bf16 also casts the tower's frozen weights to bf16 once (:func:`cast_frozen_weights`):
autocast would cast them again at every op of every pass (it caches only the casts of weights that
require grad), reading 4 bytes and writing 2 for each frozen weight each time. The cast copy holds
the same bf16 values autocast's casts make, so the matmuls compute what they computed; norms
stay float32 (autocast runs them in float32), and so does every trainable parameter (the optimizer
updates float32 masters).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

# Modules whose parameters stay float32: autocast runs these ops in float32.
NORMS = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.modules.batchnorm._NormBase)


def autocast(device: torch.device | str) -> contextlib.AbstractContextManager:
    """bf16 autocast on a CUDA device; a no-op context on CPU."""
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def describe_precision(device: torch.device | str) -> str:
    """What :func:`autocast` does on ``device``, as run records name it."""
    return "bf16-autocast" if torch.device(device).type == "cuda" else "fp32"


def compute_dtype(device: torch.device | str) -> torch.dtype:
    """The dtype :func:`autocast` computes matmuls in on ``device``: bf16 on CUDA, else float32."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


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
