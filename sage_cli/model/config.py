"""LIFT's default bottleneck rule (the model's configs are in :mod:`sage_cli.schema`)."""

from __future__ import annotations


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
