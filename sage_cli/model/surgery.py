"""Model surgery: put an adapter in parallel to the MLP of open_clip's vision blocks, in place.

open_clip's ``ResidualAttentionBlock.forward`` computes ``x = x + ls_2(mlp(ln_2(x)))``. Surgery
moves ``ln_2`` inside a :class:`ParallelAdapterMLP` that stands in for ``mlp`` and sets the block's
``ln_2`` to identity, so the block computes ``x + ls_2(mlp(ln_2(x)) + adapter(x))``: the adapter
reads the post-attention residual stream, the same input the MLP branch reads, whatever the token
layout (batch-first or not). No open_clip code is copied; with a zero-initialised up-projection
the block's output is bit-for-bit unchanged. (``ls_2`` is identity in CLIP models; where a model
uses LayerScale it scales the adapter's output too.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from sage_cli.config import option_label
from sage_cli.errors import SageError
from sage_cli.model.adapters import SGAdapter


class ParallelAdapterMLP(nn.Module):
    """Replaces a block's ``mlp``: returns ``mlp(norm(x)) + adapter(x)`` (``norm`` is the old ln_2)."""

    def __init__(self, norm: nn.Module, mlp: nn.Module, adapter: SGAdapter) -> None:
        super().__init__()
        self.norm = norm
        self.mlp = mlp
        self.adapter = adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(x)) + self.adapter(x)

    def __getattr__(self, name: str):
        # open_clip reads e.g. ``block.mlp.c_fc.weight.dtype``; keep those lookups working.
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules", {})
            if name.startswith("__") or "mlp" not in modules:  # e.g. mid-unpickling
                raise
            return getattr(modules["mlp"], name)


def get_vision_blocks(visual: nn.Module) -> nn.ModuleList:
    """The residual blocks of an open_clip VisionTransformer; a SageError for other image towers."""
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if not isinstance(blocks, nn.ModuleList) or not all(_is_plain_block(b) for b in blocks):
        raise SageError(
            f"adapters need an open_clip VisionTransformer image tower (transformer.resblocks with "
            f"ln_2 and mlp); this model's is a {type(visual).__name__} — use {option_label('method')} linear"
        )
    return blocks


def _is_plain_block(block: nn.Module) -> bool:
    return isinstance(getattr(block, "ln_2", None), nn.Module) and isinstance(
        getattr(block, "mlp", None), nn.Module
    )


def inject_adapters(
    visual: nn.Module,
    make_adapter: Callable[[int], SGAdapter],
    blocks: Sequence[int] | None = None,
) -> dict[int, SGAdapter]:
    """Insert ``make_adapter(width)`` in parallel to the MLP of the chosen blocks (all if None).

    Returns {block index: adapter}. Refuses a model that already carries adapters.
    """
    resblocks = get_vision_blocks(visual)
    indices = range(len(resblocks)) if blocks is None else blocks
    bad = [i for i in indices if not 0 <= i < len(resblocks)]
    if bad:
        raise SageError(
            f"{option_label('blocks')} {bad} out of range: the image tower has {len(resblocks)} blocks "
            f"(0..{len(resblocks) - 1})"
        )
    if any(isinstance(b.mlp, ParallelAdapterMLP) for b in resblocks):
        raise SageError(
            "this model already carries adapters; load a fresh backbone before building a classifier"
        )
    injected: dict[int, SGAdapter] = {}
    for i in sorted(indices):
        block = resblocks[i]
        adapter = make_adapter(_block_width(block))
        block.mlp = ParallelAdapterMLP(block.ln_2, block.mlp, adapter)
        block.ln_2 = nn.Identity()
        injected[i] = adapter
    return injected


def tower_width(visual: nn.Module) -> int:
    """The width of the image tower's residual stream (its first block's)."""
    return _block_width(get_vision_blocks(visual)[0])


def _block_width(block: nn.Module) -> int:
    shape = getattr(block.ln_2, "normalized_shape", None)
    if shape:
        return int(shape[-1])
    return int(block.attn.embed_dim)


def iter_adapter_parameters(module: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """(name, parameter) for every parameter that belongs to an SGAdapter inside ``module``."""
    seen: set[int] = set()
    for prefix, sub in module.named_modules():
        if not isinstance(sub, SGAdapter):
            continue
        for name, param in sub.named_parameters(prefix=prefix):
            if id(param) not in seen:
                seen.add(id(param))
                yield name, param
