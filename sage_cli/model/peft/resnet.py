"""PEFT for open_clip's ModifiedResNet image tower (CLIP RN50 and kin), as LIFT tunes CLIP ResNets
(its ``models/peft_rn.py``: bias, BatchNorm and SSF tuning).

The ViT modules insert into transformer blocks a ResNet does not have. On a ResNet tower:

- ``bitfit``: every bias of the tower (BatchNorm shifts, the attention pool's projections);
- ``ln-tuning``: every BatchNorm's weight and bias (its normalisation layers: LIFT's BN tuning);
- ``ssf``: one scale-and-shift of the pooled feature [B, E] (LIFT's ``ssf_attn``), gamma = 1,
  beta = 0 at init;
- ``full-ft``: every parameter.

The whole tower is tuned (``--blocks`` does not apply). The BatchNorms' running statistics stay
frozen (the tower stays in eval mode; only PEFT modules switch to train), so the saved weights
alone rebuild the trained model. Any other module is refused in one line naming these.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from sage_cli.config import option_label
from sage_cli.errors import SageError
from sage_cli.model.peft.serial import ScaleShift
from sage_cli.model.peft.wrappers import Then
from sage_cli.model.protocol import get_parameter_names

ResNetInject = Callable[[nn.Module], list[str]]  # visual -> names of the parameters that train
RESNET_PEFT: dict[str, ResNetInject] = {}


def is_resnet_tower(visual: nn.Module) -> bool:
    """Whether ``visual`` is open_clip's ModifiedResNet (without importing it where open_clip lacks it)."""
    return type(visual).__name__ == "ModifiedResNet" and hasattr(visual, "attnpool")


def _register(name: str) -> Callable[[ResNetInject], ResNetInject]:
    def add(inject: ResNetInject) -> ResNetInject:
        RESNET_PEFT[name] = inject
        return inject

    return add


def _names(visual: nn.Module, keep: Callable[[str, nn.Parameter], bool]) -> list[str]:
    return [name for name, param in visual.named_parameters() if keep(name, param)]


@_register("bitfit")
def inject_resnet_bitfit(visual: nn.Module) -> list[str]:
    return _names(visual, lambda name, _: name.endswith("bias"))


@_register("ln-tuning")
def inject_resnet_norms(visual: nn.Module) -> list[str]:
    norms = {id(p) for m in visual.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()}
    return _names(visual, lambda _, param: id(param) in norms)


@_register("ssf")
def inject_resnet_ssf(visual: nn.Module) -> list[str]:
    ssf = ScaleShift(int(visual.output_dim)).to(next(visual.parameters()).device)
    visual.attnpool = Then(visual.attnpool, ssf)
    return get_parameter_names(visual, [ssf])


@_register("full-ft")
def inject_resnet_full(visual: nn.Module) -> list[str]:
    return _names(visual, lambda *_: True)


def inject_resnet_peft(name: str, visual: nn.Module, blocks: tuple[int, ...] | None) -> list[str]:
    """Apply ``name`` to a ModifiedResNet tower in place; its trainable names, or a one-line refusal."""
    kind = type(visual).__name__
    if name not in RESNET_PEFT:
        raise SageError(f"PEFT module {name} needs a VisionTransformer image tower; this model's is a {kind}, "
                        f"which takes {', '.join(RESNET_PEFT)} (as LIFT tunes ResNets) or {option_label('method')} "
                        "linear")
    if blocks is not None:
        flag = option_label("blocks")
        raise SageError(f"{flag}: {name} tunes a {kind} tower whole; leave {flag} out")
    return RESNET_PEFT[name](visual)


def refuse_other_tower(name: str, visual: nn.Module) -> SageError:
    """The one-line refusal of a PEFT module on a tower that is neither a ViT nor a ModifiedResNet (timm trunks)."""
    return SageError(f"PEFT module {name} needs an open_clip VisionTransformer image tower (or a ModifiedResNet for "
                     f"{', '.join(RESNET_PEFT)}); this model's is a {type(visual).__name__}: use "
                     f"{option_label('method')} linear (head only)")
