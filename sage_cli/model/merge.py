"""Folding a trained PEFT module into the image tower's own weights: a plain open_clip tower.

Mergeable modules change only what a plain tower can hold:

- ``lora`` / ``lora-mlp``: ``W + scaling * B A`` into the attention's packed in-projection
  (q and v rows) and the MLP's ``c_fc`` / ``c_proj``;
- ``ssf``: ``gamma * h + beta`` after a LayerNorm or a Linear becomes that module's weight and
  bias (``weight * gamma``, ``bias * gamma + beta``); after the attention (``ls_1``, identity in
  CLIP) it goes into the attention's output projection; on a ResNet's pooled feature, into its
  attention pool's output projection ``c_proj``;
- ``bitfit``, ``ln-tuning``, ``full-ft`` and head-only methods: the tuned tensors are the tower's own.

The others (AdaptFormer, SG-Adapter, the Houlsby adapter, visual prompts) add computation a plain
tower does not have: :func:`build_merged_tower` refuses them with one line.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from sage_cli.errors import SageError
from sage_cli.model.peft.lora import LoRA
from sage_cli.model.peft.serial import ScaleShift
from sage_cli.model.peft.wrappers import AddOutput, LoRAAttention, Then, Wrapped
from sage_cli.model.protocol import AdapterModule

MERGEABLE = ("lora", "lora-mlp", "ssf", "bitfit", "ln-tuning", "full-ft")  # None (head only) merges too


def check_mergeable(visual: nn.Module, what: str = "--format open_clip") -> None:
    """A one-line SageError when the tower's PEFT module cannot be folded into its weights."""
    peft = getattr(visual, "sage_peft", None)
    if peft is not None and peft not in MERGEABLE:
        raise SageError(f"{what}: the {peft} module cannot be merged into the open_clip tower (it adds layers a "
                        f"plain tower lacks; mergeable: {', '.join(MERGEABLE)}); use --format torchscript or onnx")


def build_merged_tower(visual: nn.Module) -> nn.Module:
    """A copy of ``visual`` with its PEFT module folded in: open_clip's own module tree and names."""
    check_mergeable(visual)
    merged = copy.deepcopy(visual)
    wrappers = [(parent, name, child) for parent in merged.modules()
                for name, child in parent.named_children() if isinstance(child, Wrapped)]
    with torch.no_grad():
        for parent, name, wrapper in wrappers:
            setattr(parent, name, fold_wrapper(parent, wrapper))
    left = [type(m).__name__ for m in merged.modules() if isinstance(m, (AdapterModule, Wrapped))]
    if left:
        raise SageError(f"--format open_clip: {left[0]} cannot be merged into the open_clip tower; "
                        "use --format torchscript or onnx")
    merged.__dict__.pop("sage_peft", None)
    return merged.requires_grad_(False).eval()


def fold_wrapper(parent: nn.Module, wrapper: Wrapped) -> nn.Module:
    """The frozen module ``wrapper`` holds, with its adapter folded in (changed in place)."""
    base, adapter = wrapper.base, wrapper.adapter
    if isinstance(wrapper, LoRAAttention):
        delta_q, delta_v = adapter["q"].delta_weight(), adapter["v"].delta_weight()  # [D, D] each
        base.in_proj_weight.add_(torch.cat([delta_q, torch.zeros_like(delta_q), delta_v]))  # q, k, v rows
        return base
    if isinstance(wrapper, AddOutput) and isinstance(adapter, LoRA) and isinstance(base, nn.Linear):
        base.weight.add_(adapter.delta_weight())
        return base
    if isinstance(wrapper, Then) and isinstance(adapter, ScaleShift):
        if isinstance(base, nn.Identity):  # SSF after the attention: into its output projection
            fold_scale_shift(parent.attn.out_proj, adapter.scale, adapter.shift)
        elif type(base).__name__ == "AttentionPool2d":  # a ResNet's pooled feature: its output projection's
            fold_scale_shift(base.c_proj, adapter.scale, adapter.shift)
        else:
            fold_scale_shift(base, adapter.scale, adapter.shift)
        return base
    raise SageError(f"--format open_clip: {type(adapter).__name__} in a {type(wrapper).__name__} cannot be merged "
                    "into the open_clip tower; use --format torchscript or onnx")


def fold_scale_shift(module: nn.Module, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """Make ``module``'s output ``scale * out + shift`` (a Linear or LayerNorm; per output feature)."""
    if not isinstance(module, (nn.Linear, nn.LayerNorm)) or module.weight is None:
        raise SageError(f"--format open_clip: SSF after a {type(module).__name__} cannot be merged; "
                        "use --format torchscript or onnx")
    weight = module.weight  # Linear [out, in], LayerNorm [D]
    weight.mul_(scale.to(weight.dtype).view(-1, *([1] * (weight.ndim - 1))))
    if module.bias is None:
        module.bias = nn.Parameter(torch.zeros_like(shift, dtype=weight.dtype), requires_grad=False)
    module.bias.mul_(scale.to(weight.dtype)).add_(shift.to(weight.dtype))


__all__ = ["MERGEABLE", "build_merged_tower", "check_mergeable", "fold_scale_shift", "fold_wrapper"]
