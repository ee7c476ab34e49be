"""The method registry: what each ``--method`` is made of, decided in this one place.

A :class:`MethodSpec` names the PEFT module put into the image tower (a key of
:data:`sage_cli.model.peft.PEFT_MODULES`; None for a head-only method), the head and how it is
initialised, the loss and its compensation default, and whether the SG-Adapter's text guidance is
on. ``sage train --method``'s choices, ``sage demo``, the presets' test and docs/methods.md read
:data:`METHODS`; nothing else decides what a method is. Options a user leaves unset (None) are
filled from the spec once, by :class:`~sage_cli.model.AdapterConfig` (head, guidance) and
:func:`resolve_loss_options` (loss, compensation), for the CLI and the Python API alike.

This module is plain data (no torch) so that the CLI can read it before anything heavy loads.
Adding a method is one entry here; adding a PEFT module or a loss is one class in its own
registry (docs/methods.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from sage_cli.errors import SageError

# The names of every registry, as types: --help's choices, the check of preset values and the
# dataclasses' annotations use these (tests/test_methods.py checks them against the registries).
LossName = Literal["ce", "la", "bs", "focal", "ldam", "cb", "lade"]  # sage_cli.losses.LOSSES
CompensationName = Literal["semantic", "count", "zero-shot", "none"]  # sage_cli.losses.ESTIMATORS
HeadName = Literal["cosine", "linear", "l2"]  # sage_cli.model.head.HEADS
HeadInitName = Literal["text", "class-mean", "k-shot", "linear-probe"]  # sage_cli.model.head_init
ActivationName = Literal["relu", "gelu"]


@dataclass(frozen=True)
class MethodSpec:
    """What one method is made of; the defaults are LIFT's choices (cosine head from text, LA)."""

    name: str
    summary: str
    peft: str | None = None  # key of sage_cli.model.peft.PEFT_MODULES; None: the tower stays as it is
    guidance: bool | None = None  # SG-Adapter text guidance default; None: the method has none
    guidance_topk: int | None = None  # guidance routed to each image's top-k frozen zero-shot tokens; None: all
    guidance_gate: float | None = None  # guidance attention biased by log p0(m|x), the frozen zero-shot posterior at this scale
    loss: str = "la"  # key of sage_cli.losses.LOSSES
    compensation: str = "none"  # key of sage_cli.losses.ESTIMATORS
    head: str = "cosine"  # key of sage_cli.model.head.HEADS
    head_init: str = "text"  # key of sage_cli.model.head.HEAD_INITS
    train_head: bool = True
    trainable: bool = True  # offered by `sage train` (zeroshot is a baseline, not a run)
    demo: bool = False  # trained by `sage demo`


_SPECS = (
    MethodSpec("linear", "cosine head only (a linear probe of the frozen features)", demo=True),
    MethodSpec("lift", "LIFT: AdaptFormer adapters parallel to each block's MLP", peft="adaptformer", demo=True),
    MethodSpec("sage", "SG-Adapter: AdaptFormer adapters whose hidden state attends to the class texts, "
               "with the semantic compensation factor", peft="sg-adapter", guidance=True,
               compensation="semantic", demo=True),
    MethodSpec("lora", "LoRA on the attention's query and value projections", peft="lora"),
    MethodSpec("lora-mlp", "LoRA on q, v and both MLP projections", peft="lora-mlp"),
    MethodSpec("vpt-shallow", "visual prompt tuning: prompts entering at the first tuned block", peft="vpt-shallow"),
    MethodSpec("vpt-deep", "visual prompt tuning: fresh prompts at every tuned block", peft="vpt-deep"),
    MethodSpec("adapter", "Houlsby bottleneck adapter after each block's MLP", peft="adapter"),
    MethodSpec("ssf", "SSF: scale and shift after each block's norms, attention and MLP projections", peft="ssf"),
    MethodSpec("bitfit", "BitFit: every bias of the tuned blocks", peft="bitfit"),
    MethodSpec("ln-tuning", "LayerNorm tuning: the tuned blocks' LayerNorm weights and biases", peft="ln-tuning"),
    MethodSpec("full-ft", "full fine-tuning of the tuned blocks", peft="full-ft"),
    # Sage's named variants (issue 10): each changes one of its two pieces; docs/method.md#named-variants.
    MethodSpec("sage-topk", "SG-Adapter whose guidance attends only to each image's top-5 classes of the frozen "
               "zero-shot prediction, with the semantic compensation factor", peft="sg-adapter", guidance=True,
               guidance_topk=5, compensation="semantic"),
    MethodSpec("sage-gate", "SG-Adapter whose guidance attention is biased by each image's frozen zero-shot "
               "posterior over the class tokens, with the semantic compensation factor", peft="sg-adapter",
               guidance=True, guidance_gate=25.0, compensation="semantic"),
    MethodSpec("sage-zs", "SG-Adapter with the zero-shot compensation factor: the frozen zero-shot classifier's "
               "own label bias on the training images, corrected in the loss", peft="sg-adapter", guidance=True,
               compensation="zero-shot"),
    MethodSpec("zeroshot", "CLIP zero-shot: the head is the class text embeddings, frozen",
               train_head=False, trainable=False),
)

METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in _SPECS}
TRAIN_METHODS: tuple[str, ...] = tuple(name for name, spec in METHODS.items() if spec.trainable)
DEMO_METHODS: tuple[str, ...] = tuple(name for name, spec in METHODS.items() if spec.demo)
MethodName = Literal[TRAIN_METHODS]  # type: ignore[valid-type]


def literal_names(alias: object) -> tuple[str, ...]:
    """The names a ``Literal`` alias allows."""
    return tuple(get_args(alias))


def get_method(name: str, flag: str = "--method", choices: tuple[str, ...] | None = None) -> MethodSpec:
    """The spec of ``name``; a SageError naming ``flag`` and the valid names otherwise."""
    valid = choices if choices is not None else tuple(METHODS)
    if name not in valid:
        raise SageError(f"{flag} must be one of {', '.join(valid)}; got {name!r}")
    return METHODS[name]


def resolve_loss_options(method: str, loss: str | None, compensation: str | None) -> tuple[str, str]:
    """(loss, compensation) with None taken from the method's spec; refuses compensation on a loss
    outside the logit-adjusted family (see :data:`sage_cli.losses.COMPENSATED_LOSSES`)."""
    from sage_cli.losses import COMPENSATED_LOSSES

    spec = get_method(method)
    loss = spec.loss if loss is None else loss
    if compensation is None:
        compensation = spec.compensation if loss in COMPENSATED_LOSSES else "none"
    if compensation != "none" and loss not in COMPENSATED_LOSSES:
        raise SageError(
            f"--compensation {compensation} composes with the logit-adjusted losses "
            f"({', '.join(COMPENSATED_LOSSES)}) only; got --loss {loss}"
        )
    return loss, compensation
