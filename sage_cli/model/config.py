"""The adapter configuration (one frozen dataclass) and LIFT's default bottleneck rule."""

from __future__ import annotations

from dataclasses import dataclass

from sage_cli.errors import SageError
from sage_cli.methods import METHODS, ActivationName, HeadInitName, HeadName, MethodName, MethodSpec, get_method
from sage_cli.model.head import HEAD_INITS, HEADS

ACTIVATIONS = ("relu", "gelu")
# Block indices stop below this, whatever the tower (ViT-bigG has 48 blocks): --blocks 0-99999999
# is refused before its range is expanded; the tower's own depth is checked when it is built.
MAX_BLOCKS = 1024


@dataclass(frozen=True)
class AdapterConfig:
    """How the classifier is built on top of a frozen CLIP image tower.

    ``method`` names a :data:`sage_cli.methods.METHODS` entry; options left None take that
    method's defaults here, once: ``guidance`` (on for sage; only methods with guidance accept
    it), ``head`` and ``head_init``. ``bottleneck`` None applies LIFT's rule
    (:func:`compute_default_bottleneck`); ``blocks`` None tunes every vision block;
    ``guidance_tokens`` None means one token per class (M = C), fewer means k-means centroids.
    ``guidance_topk`` k routes each image's guidance to its k guidance tokens closest to the frozen
    image feature (the top-k of the frozen zero-shot prediction); None (the method's default) means
    every token, 0 turns a method's routing off. ``guidance_gate`` s0 adds log p0(m|x) =
    log_softmax(s0 cos(f0(x), T_m)), the frozen zero-shot posterior over the guidance tokens, to the
    guidance attention's logits (None: the method's; 0: off).
    """

    method: MethodName = "sage"
    bottleneck: int | None = None
    blocks: tuple[int, ...] | None = None
    guidance: bool | None = None
    guidance_tokens: int | None = None
    guidance_topk: int | None = None
    guidance_gate: float | None = None
    activation: ActivationName = "relu"
    attn_heads: int = 1
    logit_scale: float = 25.0
    head: HeadName | None = None
    head_init: HeadInitName | None = None
    head_init_shots: int = 10
    prompt_tokens: int = 10

    def __post_init__(self) -> None:
        spec = get_method(self.method)
        self._check_values()
        if self.guidance is not None and spec.guidance is None:
            raise SageError(
                f"--guidance applies to the methods with text guidance "
                f"({', '.join(n for n, s in METHODS.items() if s.guidance is not None)}); got --method {self.method}"
            )
        if self.guidance_topk is not None and spec.guidance is None:
            raise SageError(f"--guidance-topk applies to the methods with text guidance; got --method {self.method}")
        if self.guidance_gate is not None and spec.guidance is None:
            raise SageError(f"--guidance-gate applies to the methods with text guidance; got --method {self.method}")
        guidance = spec.guidance if self.guidance is None else self.guidance
        topk = spec.guidance_topk if self.guidance_topk is None else self.guidance_topk
        gate = spec.guidance_gate if self.guidance_gate is None else self.guidance_gate
        if self.guidance_topk and not guidance:
            raise SageError("--guidance-topk routes the text guidance: it needs --guidance")
        if self.guidance_gate and not guidance:
            raise SageError("--guidance-gate gates the text guidance: it needs --guidance")
        resolved = {
            "guidance": guidance,
            "guidance_topk": topk if guidance else None,  # 0 stays 0 (off), so a reload keeps it off
            "guidance_gate": gate if guidance else None,
            "head": spec.head if self.head is None else self.head,
            "head_init": spec.head_init if self.head_init is None else self.head_init,
        }
        for key, value in resolved.items():
            object.__setattr__(self, key, value)
        if self.head not in HEADS:
            raise SageError(f"--head must be one of {', '.join(HEADS)}; got {self.head!r}")
        if self.head_init not in HEAD_INITS:
            raise SageError(f"--head-init must be one of {', '.join(HEAD_INITS)}; got {self.head_init!r}")

    def _check_values(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise SageError(
                f"--activation must be one of {', '.join(ACTIVATIONS)}; got {self.activation!r}"
            )
        if self.bottleneck is not None and self.bottleneck < 1:
            raise SageError(f"--bottleneck must be a positive integer; got {self.bottleneck}")
        if self.attn_heads < 1:
            raise SageError(f"--attn-heads must be a positive integer; got {self.attn_heads}")
        if self.guidance_topk is not None and self.guidance_topk < 0:
            raise SageError(f"--guidance-topk must be >= 0 (0: every token); got {self.guidance_topk}")
        if self.guidance_gate is not None and not self.guidance_gate >= 0:
            raise SageError(f"--guidance-gate must be >= 0 (0: off); got {self.guidance_gate}")
        if self.guidance_tokens is not None and self.guidance_tokens < 1:
            raise SageError(f"--guidance-tokens must be a positive integer; got {self.guidance_tokens}")
        if self.head_init_shots < 1:
            raise SageError(f"--head-init-shots must be a positive integer; got {self.head_init_shots}")
        if self.prompt_tokens < 1:
            raise SageError(f"--prompt-tokens must be a positive integer; got {self.prompt_tokens}")
        if not self.logit_scale > 0:
            raise SageError(f"--logit-scale must be positive; got {self.logit_scale}")
        if self.blocks is not None:
            object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
            if not self.blocks or min(self.blocks) < 0 or len(set(self.blocks)) != len(self.blocks):
                raise SageError(f"--blocks must list distinct block indices >= 0; got {list(self.blocks)}")
            check_block_index(max(self.blocks))

    @property
    def spec(self) -> MethodSpec:
        return METHODS[self.method]

    @property
    def use_adapters(self) -> bool:
        """Whether the method changes the image tower (a PEFT module), not only the head."""
        return self.spec.peft is not None

    @property
    def routing_topk(self) -> int | None:
        """k of the top-k guidance routing, None when the guidance is not routed."""
        return self.guidance_topk or None

    @property
    def gate_scale(self) -> float | None:
        """s0 of the zero-shot gate of the guidance attention, None when it is not gated."""
        return self.guidance_gate or None

    @property
    def use_guidance(self) -> bool:
        """Whether adapters get the text-guidance branch (as resolved from the method)."""
        return bool(self.guidance)


def check_block_index(index: int) -> None:
    """Refuse a --blocks index no image tower has (at or above :data:`MAX_BLOCKS`)."""
    if index >= MAX_BLOCKS:
        raise SageError(f"--blocks: block {index} is beyond any image tower (sage takes indices below {MAX_BLOCKS})")


def compute_default_bottleneck(num_classes: int, num_layers: int) -> int:
    """LIFT's bottleneck rule r = 2 ** max(0, floor(log2(C / (2L)))), in exact integer arithmetic.

    1000 classes and 12 blocks give 32; 8142 give 256; 10 give 1.
    """
    if num_classes < 1 or num_layers < 1:
        raise ValueError(f"need num_classes >= 1 and num_layers >= 1; got {num_classes}, {num_layers}")
    r = 1
    while 2 * r * 2 * num_layers <= num_classes:  # largest power of two with r * 2L <= C
        r *= 2
    return r
