"""The one mixed-precision rule of every stage: bf16 autocast on CUDA, float32 elsewhere."""

from __future__ import annotations

import contextlib

import torch


def autocast(device: torch.device | str) -> contextlib.AbstractContextManager:
    """bf16 autocast on a CUDA device; a no-op context on CPU."""
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def describe_precision(device: torch.device | str) -> str:
    """What :func:`autocast` does on ``device``, as run records name it."""
    return "bf16-autocast" if torch.device(device).type == "cuda" else "fp32"
