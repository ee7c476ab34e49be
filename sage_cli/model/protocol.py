"""The one adapter protocol: which parameters of a classifier train, and so which are saved.

Every module that surgery inserts into the image tower subclasses :class:`AdapterModule` (all its
parameters train); a PEFT entry that tunes parameters the tower already has (BitFit, LayerNorm
tuning, full fine-tuning) names them instead. Either way a PEFT entry's ``inject`` returns the
names of the trainable tensors, the classifier keeps that one list, and both the optimizer's
parameters and the saved state dict are read from it: trainable == saved by construction
(torchtune's ``get_adapter_params``, litgpt's ``mark_only_lora_as_trainable``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import nn


class AdapterModule(nn.Module):
    """Base of the modules surgery inserts: every parameter trains and is checkpointed."""


def get_parameter_names(root: nn.Module, modules: Iterable[nn.Module]) -> list[str]:
    """Names (under ``root``) of the parameters owned by ``modules``, in ``root``'s order, each once."""
    owned = {id(p) for module in modules for p in module.parameters()}
    return [name for name, param in root.named_parameters() if id(param) in owned]


def mark_only_trainable(root: nn.Module, names: Sequence[str]) -> None:
    """``requires_grad`` True for exactly the parameters ``names`` of ``root``; a KeyError for an unknown name."""
    params = dict(root.named_parameters())
    unknown = [n for n in names if n not in params]
    if unknown:
        raise KeyError(f"no parameters named {unknown[:3]}")
    root.requires_grad_(False)
    for name in names:
        params[name].requires_grad_(True)
