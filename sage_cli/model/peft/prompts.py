"""Visual prompt tuning (VPT): learnable tokens appended to the token sequence of the tower.

Shallow: one set of P prompts joins the sequence at the first chosen block and is carried
through the rest. Deep: each chosen block replaces the previous prompts with its own. After the
last block the prompts are dropped, so pooling (the class token) and ``ln_post`` see the
original sequence length. As in LIFT, prompts are appended after the patch tokens and drawn
from U(-v, v), v = sqrt(6 / (3 * patch area + D)). Prompts always change the features (every
token attends to them), so no zero init can leave the tower as it was.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sage_cli.model.peft import PeftContext, register_peft
from sage_cli.model.protocol import AdapterModule, get_parameter_names
from sage_cli.model.surgery import get_vision_blocks


class Prompts(AdapterModule):
    """P prompt tokens [P, D]."""

    def __init__(self, num_tokens: int, width: int, patch_area: int) -> None:
        super().__init__()
        bound = math.sqrt(6.0 / (3 * patch_area + width))
        self.tokens = nn.Parameter(torch.empty(num_tokens, width).uniform_(-bound, bound))


class PromptedBlock(nn.Module):
    """A vision block that first appends (or replaces) prompts, and, if ``last``, drops them after.

    ``prompts`` None carries the prompts already in the sequence; ``num_prompts`` is P either way.
    """

    def __init__(self, block: nn.Module, prompts: Prompts | None, num_prompts: int, first: bool, last: bool,
                 batch_first: bool) -> None:
        super().__init__()
        self.block, self.prompts = block, prompts
        self.num_prompts, self.first, self.last, self.batch_first = num_prompts, first, last, batch_first

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x if self.batch_first else x.transpose(0, 1)  # [B, N, D]
        if self.prompts is not None:
            kept = x if self.first else x[:, : x.shape[1] - self.num_prompts]
            tokens = self.prompts.tokens.to(x.dtype).expand(x.shape[0], -1, -1)  # [B, P, D]
            x = torch.cat([kept, tokens], dim=1)
        x = self.block(x if self.batch_first else x.transpose(0, 1), attn_mask=attn_mask)
        if self.last:
            x = x[:, : x.shape[1] - self.num_prompts] if self.batch_first else x[: x.shape[0] - self.num_prompts]
        return x

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules", {})
            if name.startswith("__") or "block" not in modules:
                raise
            return getattr(modules["block"], name)


def inject_prompts(visual: nn.Module, blocks: list[int], context: PeftContext, deep: bool) -> list[str]:
    resblocks = get_vision_blocks(visual)
    num_tokens = context.config.prompt_tokens
    patch = getattr(visual, "patch_size", (16, 16))
    patch_area = int(patch[0]) * int(patch[1]) if isinstance(patch, (tuple, list)) else int(patch) ** 2
    batch_first = getattr(visual.transformer, "batch_first", True)
    prompted = set(blocks if deep else blocks[:1])
    start, inserted = min(blocks), []
    for i in range(start, len(resblocks)):
        prompts = None
        if i in prompted:
            prompts = Prompts(num_tokens, resblocks[i].attn.embed_dim, patch_area).to(context.class_embeddings.device)
            inserted.append(prompts)
        resblocks[i] = PromptedBlock(resblocks[i], prompts, num_tokens, first=i == start,
                                     last=i == len(resblocks) - 1, batch_first=batch_first)
    return get_parameter_names(visual, inserted)


@register_peft("vpt-shallow")
def inject_vpt_shallow(visual: nn.Module, blocks: list[int], context: PeftContext) -> list[str]:
    """--prompt-tokens prompts entering at the first chosen block."""
    return inject_prompts(visual, blocks, context, deep=False)


@register_peft("vpt-deep")
def inject_vpt_deep(visual: nn.Module, blocks: list[int], context: PeftContext) -> list[str]:
    """Fresh --prompt-tokens prompts at every chosen block."""
    return inject_prompts(visual, blocks, context, deep=True)
