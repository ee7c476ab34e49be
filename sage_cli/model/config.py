"""The adapter configuration (one frozen dataclass) and LIFT's default bottleneck rule."""

from __future__ import annotations

from dataclasses import dataclass

from sage_cli.errors import SageError

METHODS = ("sage", "lift", "linear", "zeroshot")
ADAPTER_METHODS = ("sage", "lift")
ACTIVATIONS = ("relu", "gelu")


@dataclass(frozen=True)
class AdapterConfig:
    """How the classifier is built on top of a frozen CLIP image tower.

    ``method``: "sage" (SG-Adapter: adapters with text guidance), "lift" (AdaptFormer adapters,
    no guidance), "linear" (cosine head only) or "zeroshot" (head = class embeddings, frozen).
    ``bottleneck`` None applies LIFT's rule (:func:`compute_default_bottleneck`); ``blocks`` None
    puts an adapter in every vision block; ``guidance`` None means on for sage, off otherwise;
    ``guidance_tokens`` None means one token per class (M = C), fewer means k-means centroids.
    """

    method: str = "sage"
    bottleneck: int | None = None
    blocks: tuple[int, ...] | None = None
    guidance: bool | None = None
    guidance_tokens: int | None = None
    activation: str = "relu"
    attn_heads: int = 1
    logit_scale: float = 25.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SageError(f"--method must be one of {', '.join(METHODS)}; got {self.method!r}")
        if self.activation not in ACTIVATIONS:
            raise SageError(
                f"--activation must be one of {', '.join(ACTIVATIONS)}; got {self.activation!r}"
            )
        if self.bottleneck is not None and self.bottleneck < 1:
            raise SageError(f"--bottleneck must be a positive integer; got {self.bottleneck}")
        if self.attn_heads < 1:
            raise SageError(f"--attn-heads must be a positive integer; got {self.attn_heads}")
        if self.guidance_tokens is not None and self.guidance_tokens < 1:
            raise SageError(f"--guidance-tokens must be a positive integer; got {self.guidance_tokens}")
        if not self.logit_scale > 0:
            raise SageError(f"--logit-scale must be positive; got {self.logit_scale}")
        if self.blocks is not None:
            object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
            if not self.blocks or min(self.blocks) < 0 or len(set(self.blocks)) != len(self.blocks):
                raise SageError(f"--blocks must list distinct block indices >= 0; got {list(self.blocks)}")
        if self.guidance and self.method != "sage":
            raise SageError(
                f"--guidance applies to --method sage only (lift is sage without guidance); "
                f"got --method {self.method}"
            )

    @property
    def use_adapters(self) -> bool:
        return self.method in ADAPTER_METHODS

    @property
    def use_guidance(self) -> bool:
        """Whether adapters get the text-guidance branch (resolves ``guidance=None``)."""
        if self.method != "sage":
            return False
        return True if self.guidance is None else self.guidance


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
