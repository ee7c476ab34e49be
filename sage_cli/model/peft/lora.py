"""LoRA on the query and value projections of each chosen block (and, for lora-mlp, its MLP).

``W' = W + (alpha / r) B A`` with A [r, in] Kaiming-uniform and B [out, r] zero (Hu et al.;
LIFT's rank rule and scaling 1 / r, i.e. alpha = 1): at init the update is exactly zero.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sage_cli.model.config import compute_default_bottleneck
from sage_cli.model.peft import PeftContext, register_peft
from sage_cli.model.peft.wrappers import AddOutput, LoRAAttention
from sage_cli.model.protocol import AdapterModule, get_parameter_names
from sage_cli.model.surgery import get_vision_blocks


class LoRA(AdapterModule):
    """The low-rank update ``x -> scaling * x A^T B^T`` of an ``in_dim -> out_dim`` projection."""

    def __init__(self, in_dim: int, out_dim: int, rank: int, scaling: float | None = None) -> None:
        super().__init__()
        self.lora_a = nn.Parameter(torch.empty(rank, in_dim))  # [r, in]
        self.lora_b = nn.Parameter(torch.zeros(out_dim, rank))  # [out, r]
        self.scaling = 1.0 / rank if scaling is None else scaling
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def delta_weight(self) -> torch.Tensor:
        """The update of the projection's weight, [out, in]."""
        return self.scaling * (self.lora_b @ self.lora_a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaling * ((x @ self.lora_a.t()) @ self.lora_b.t())


def _rank(visual: nn.Module, context: PeftContext) -> int:
    return context.config.bottleneck or compute_default_bottleneck(context.num_classes, len(get_vision_blocks(visual)))


def inject_lora(visual: nn.Module, blocks: list[int], context: PeftContext, mlp: bool) -> list[str]:
    rank, device = _rank(visual, context), context.class_embeddings.device
    resblocks, inserted = get_vision_blocks(visual), []
    for i in blocks:
        block = resblocks[i]
        width = block.attn.embed_dim
        query, value = LoRA(width, width, rank).to(device), LoRA(width, width, rank).to(device)
        block.attn = LoRAAttention(block.attn, query, value)
        inserted += [query, value]
        if mlp:
            for name in ("c_fc", "c_proj"):
                linear = getattr(block.mlp, name)
                update = LoRA(linear.in_features, linear.out_features, rank).to(device)
                setattr(block.mlp, name, AddOutput(linear, update))
                inserted.append(update)
    return get_parameter_names(visual, inserted)


@register_peft("lora")
def inject_lora_qv(visual: nn.Module, blocks: list[int], context: PeftContext) -> list[str]:
    """LoRA (rank: --bottleneck, default LIFT's rule) on q and v of each chosen block."""
    return inject_lora(visual, blocks, context, mlp=False)


@register_peft("lora-mlp")
def inject_lora_qv_mlp(visual: nn.Module, blocks: list[int], context: PeftContext) -> list[str]:
    """LoRA on q, v and both MLP projections of each chosen block."""
    return inject_lora(visual, blocks, context, mlp=True)
