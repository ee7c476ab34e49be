"""Tuning parameters the tower already has, in the chosen blocks: BitFit, LayerNorm, full.

Nothing is inserted, so at init the tower is exactly the frozen one. As in LIFT, only the
vision blocks are tuned (not the patch embedding, ``ln_pre``, ``ln_post`` or the projection).
"""

from __future__ import annotations

from torch import nn

from sage_cli.model.peft import PeftContext, register_peft
from sage_cli.model.surgery import get_vision_blocks


def _block_parameter_names(visual: nn.Module, blocks: list[int], keep) -> list[str]:
    chosen = {id(p) for i in blocks for name, p in get_vision_blocks(visual)[i].named_parameters() if keep(name, p)}
    return [name for name, p in visual.named_parameters() if id(p) in chosen]


@register_peft("bitfit")
def inject_bitfit(visual: nn.Module, blocks: list[int], context: PeftContext) -> list[str]:
    """Every bias of the chosen blocks (attention in/out projections, MLP, LayerNorms)."""
    return _block_parameter_names(visual, blocks, lambda name, p: name.endswith("bias"))


@register_peft("ln-tuning")
def inject_layernorm(visual: nn.Module, blocks: list[int], context: PeftContext) -> list[str]:
    """Weight and bias of every LayerNorm of the chosen blocks."""
    norms = {id(p) for i in blocks for m in get_vision_blocks(visual)[i].modules()
             if isinstance(m, nn.LayerNorm) for p in m.parameters()}
    return _block_parameter_names(visual, blocks, lambda name, p: id(p) in norms)


@register_peft("full-ft")
def inject_full(visual: nn.Module, blocks: list[int], context: PeftContext) -> list[str]:
    """Every parameter of the chosen blocks."""
    return _block_parameter_names(visual, blocks, lambda name, p: True)
