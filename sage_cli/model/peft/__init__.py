"""PEFT modules for open_clip's image tower, selected by name from :data:`PEFT_MODULES`.

An entry is a function ``inject(visual, blocks, context) -> names``: it changes ``visual`` in place
(inserting :class:`~sage_cli.model.protocol.AdapterModule` s, or choosing parameters it already
has) in the vision blocks ``blocks`` (indices checked by :func:`select_blocks`) and returns the
names, under ``visual``, of the parameters that train. The classifier saves exactly those
(see :mod:`sage_cli.model.protocol`). Adding a module: write its ``nn.Module`` and an ``inject``
function decorated with :func:`register_peft` (docs/methods.md). An open_clip ModifiedResNet
tower takes bitfit, ln-tuning (its BatchNorms), ssf and full-ft instead (:mod:`.resnet`, as
LIFT tunes ResNets); other modules on it, and any on another tower, are refused in one line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from sage_cli.config import option_label
from sage_cli.errors import SageError
from sage_cli.model.surgery import get_vision_blocks, tower_width

if TYPE_CHECKING:
    from sage_cli.schema import PeftConfig


@dataclass(frozen=True)
class PeftContext:
    """What an ``inject`` may read: its PEFT config and the class text vectors [C, E]."""

    config: PeftConfig
    class_embeddings: torch.Tensor

    @property
    def num_classes(self) -> int:
        return int(self.class_embeddings.shape[0])


Inject = Callable[[nn.Module, "list[int]", PeftContext], list[str]]
PEFT_MODULES: dict[str, Inject] = {}


def register_peft(name: str) -> Callable[[Inject], Inject]:
    """Decorator: file ``inject`` under ``name`` in :data:`PEFT_MODULES`."""

    def add(inject: Inject) -> Inject:
        PEFT_MODULES[name] = inject
        return inject

    return add


def select_blocks(visual: nn.Module, blocks: tuple[int, ...] | None) -> list[int]:
    """The sorted block indices to tune (every block for None); a one-line SageError when out of range."""
    count = len(get_vision_blocks(visual))
    indices = sorted(range(count) if blocks is None else blocks)
    bad = [i for i in indices if not 0 <= i < count]
    if bad:
        shown = str(bad) if len(bad) <= 4 else f"[{bad[0]}, {bad[1]}, ..., {bad[-1]}] ({len(bad)} indices)"
        raise SageError(f"{option_label('blocks')} {shown} out of range: the image tower has {count} blocks (0..{count - 1})")
    return indices


def check_bottleneck(visual: nn.Module, bottleneck: int | None) -> None:
    """Refuse a --bottleneck (adapter width, LoRA rank) above the tower's width, before any weight is
    made: past it nothing is compressed, and --bottleneck 100000000 asks for gigabytes a block."""
    width = tower_width(visual)
    if bottleneck is not None and bottleneck > width:
        raise SageError(f"{option_label('bottleneck')} {bottleneck} exceeds the image tower's width ({width}); "
                        f"choose 1..{width} (default: LIFT's rule)")


def inject_peft(name: str, visual: nn.Module, context: PeftContext) -> list[str]:
    """Apply PEFT module ``name`` to ``visual`` in place; the trainable parameter names under ``visual``."""
    if name not in PEFT_MODULES:
        raise SageError(f"unknown PEFT module {name!r}; known: {', '.join(PEFT_MODULES)}")
    if getattr(visual, "sage_peft", None) is not None:
        raise SageError(f"this model already carries adapters (PEFT module {visual.sage_peft}); load a fresh backbone "
                        "before building a classifier")
    if resnet.is_resnet_tower(visual):  # LIFT's ResNet tuning, or a refusal naming it
        names = resnet.inject_resnet_peft(name, visual, context.config.blocks)
    else:
        check_vit_tower(name, visual)
        blocks = select_blocks(visual, context.config.blocks)
        check_bottleneck(visual, context.config.bottleneck)
        names = PEFT_MODULES[name](visual, blocks, context)
    visual.sage_peft = name  # a plain attribute: marks the tower as changed, for the check above
    return names


def check_vit_tower(name: str, visual: nn.Module) -> None:
    """Refuse, in one line naming what it takes, a tower that is neither a ViT nor a ModifiedResNet (timm trunks)."""
    try:
        get_vision_blocks(visual)
    except SageError:
        raise resnet.refuse_other_tower(name, visual) from None


# Importing the modules fills the registry.
from sage_cli.model.peft import adaptformer, lora, partial, prompts, resnet, serial  # noqa: E402,F401

__all__ = ["PEFT_MODULES", "PeftContext", "inject_peft", "register_peft", "select_blocks"]
