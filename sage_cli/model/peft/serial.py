"""Modules in series with a block's sub-layers: the Houlsby adapter and SSF.

- ``adapter`` (Houlsby et al., as LIFT has it): after each chosen block's MLP,
  ``h + Up(ReLU(Down(LN(h))))`` with h the MLP's output; Up zero-initialised, so at init the
  block is bit-for-bit unchanged.
- ``ssf`` (Lian et al.): ``gamma * h + beta`` after ln_1, the attention output, ln_2 and both MLP
  projections of each chosen block. Sage starts from gamma = 1, beta = 0 (LIFT draws them from
  N(1, 0.02) and N(0, 0.02)), so at init the tower is exactly the frozen one.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sage_cli.model.config import compute_default_bottleneck
from sage_cli.model.peft import PeftContext, register_peft
from sage_cli.model.peft.wrappers import Serial, Then
from sage_cli.model.protocol import AdapterModule, get_parameter_names
from sage_cli.model.surgery import get_vision_blocks


class Bottleneck(AdapterModule):
    """``Up(ReLU(Down(LN(h))))``: Kaiming-uniform Down, zero Up and biases."""

    def __init__(self, width: int, bottleneck: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.down = nn.Linear(width, bottleneck)
        self.act = nn.ReLU()
        self.up = nn.Linear(bottleneck, width)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(self.norm(h))))


class ScaleShift(AdapterModule):
    """SSF's ``gamma * h + beta`` over the last dimension (gamma = 1, beta = 0 at init)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(width))
        self.shift = nn.Parameter(torch.zeros(width))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * self.scale.to(h.dtype) + self.shift.to(h.dtype)


@register_peft("adapter")
def inject_houlsby(visual: nn.Module, blocks: list[int], context: PeftContext) -> list[str]:
    """A bottleneck adapter (width --bottleneck, default LIFT's rule) after each chosen block's MLP."""
    resblocks = get_vision_blocks(visual)
    bottleneck = context.config.bottleneck or compute_default_bottleneck(context.num_classes, len(resblocks))
    inserted = []
    for i in blocks:
        adapter = Bottleneck(resblocks[i].attn.embed_dim, bottleneck).to(context.class_embeddings.device)
        resblocks[i].mlp = Serial(resblocks[i].mlp, adapter)
        inserted.append(adapter)
    return get_parameter_names(visual, inserted)


@register_peft("ssf")
def inject_ssf(visual: nn.Module, blocks: list[int], context: PeftContext) -> list[str]:
    """Scale-and-shift after ln_1, attention, ln_2, c_fc and c_proj of each chosen block."""
    resblocks, device, inserted = get_vision_blocks(visual), context.class_embeddings.device, []

    def wrap(parent: nn.Module, name: str, width: int) -> None:
        ssf = ScaleShift(width).to(device)
        setattr(parent, name, Then(getattr(parent, name), ssf))
        inserted.append(ssf)

    for i in blocks:
        block = resblocks[i]
        width = block.attn.embed_dim
        wrap(block, "ln_1", width)
        wrap(block, "ls_1", width)  # the attention output (ls_1 is identity in CLIP)
        wrap(block, "ln_2", width)
        wrap(block.mlp, "c_fc", block.mlp.c_fc.out_features)
        wrap(block.mlp, "c_proj", width)
    return get_parameter_names(visual, inserted)
