"""Wrappers that put an adapter module around a frozen sub-module of a vision block, in place.

Each keeps the frozen module as ``base`` and forwards attribute look-ups it lacks to it, so
open_clip code that reads e.g. ``block.mlp.c_fc.weight.dtype`` keeps working.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class Wrapped(nn.Module):
    """``base`` plus an ``adapter``; unknown attributes are read from ``base``."""

    def __init__(self, base: nn.Module, adapter: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.adapter = adapter

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules", {})
            if name.startswith("__") or "base" not in modules:  # e.g. mid-unpickling
                raise
            return getattr(modules["base"], name)


class AddOutput(Wrapped):
    """``base(x) + adapter(x)``: a parallel branch (LoRA on a Linear)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.adapter(x)


class Serial(Wrapped):
    """``h + adapter(h)`` with ``h = base(x)``: a residual adapter after the module (Houlsby's)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.base(x)
        return h + self.adapter(h)


class Then(Wrapped):
    """``adapter(base(x))``: a transform of the module's output (SSF's scale and shift)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.base(x))


class LoRAAttention(Wrapped):
    """open_clip's ``nn.MultiheadAttention`` with LoRA on the query and value projections.

    The low-rank updates are added to the packed in-projection weight ([3D, D]: q, k, v rows)
    and the attention runs through ``F.multi_head_attention_forward``, the function
    ``nn.MultiheadAttention`` itself calls; a zero update leaves the weight bit-for-bit as it was.
    """

    def __init__(self, base: nn.MultiheadAttention, query: nn.Module, value: nn.Module) -> None:
        super().__init__(base, nn.ModuleDict({"q": query, "v": value}))

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                need_weights: bool = False, attn_mask: torch.Tensor | None = None, **_: Any) -> tuple[torch.Tensor, None]:
        attn = self.base
        delta_q = self.adapter["q"].delta_weight()  # [D, D]
        delta_v = self.adapter["v"].delta_weight()  # [D, D]
        weight = attn.in_proj_weight + torch.cat([delta_q, torch.zeros_like(delta_q), delta_v])  # [3D, D]
        self_attention = query is key and key is value
        if attn.batch_first:  # F.multi_head_attention_forward takes [N, B, D]
            query = query.transpose(0, 1)
            key = query if self_attention else key.transpose(0, 1)
            value = query if self_attention else value.transpose(0, 1)
        out, _ = F.multi_head_attention_forward(
            query, key, value, attn.embed_dim, attn.num_heads, weight, attn.in_proj_bias,
            attn.bias_k, attn.bias_v, attn.add_zero_attn, 0.0, attn.out_proj.weight, attn.out_proj.bias,
            training=False, need_weights=False, attn_mask=attn_mask,
        )
        return (out.transpose(0, 1) if attn.batch_first else out), None
