"""The two image features a head may read (``--head-feature``), and the text init mapped between them.

open_clip's ``VisionTransformer.forward`` is ``_pool(transformer(_embeds(x)))`` then ``@ proj``:

- ``pre-proj`` (LIFT's, ``Peft_ViT.forward``): the pooled class token after ``ln_post``, before
  ``proj``: h(x) [B, W] (768-d on ViT-B/16);
- ``projected`` (CLIP's joint space): f(x) = h(x) @ proj [B, E] (512-d on ViT-B/16).

A tower without a ViT ``proj`` (open_clip's ModifiedResNet, a timm trunk) has no pre-projection
feature: its head reads the tower's output f(x) (:func:`resolve_head_feature`), as LIFT's
``Peft_RN`` classifies the attention pool's output.

A head on h(x) starts from the class texts as LIFT's ``init_head_text_feat`` maps them:
w_c = normalize(normalize(t_c) @ proj.T) [W]. Its logits at init are
s * cos(h, proj t_c) = s * (f . t_c) / (|h| |proj t_c|): CLIP's zero-shot scores up to the
per-class factor 1 / |proj t_c| (equal rankings when proj has orthonormal columns, not in general).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sage_cli.config import option_label
from sage_cli.errors import SageError

PRE_PROJ, PROJECTED = "pre-proj", "projected"


def has_pre_projection(visual: nn.Module) -> bool:
    """Whether the tower is an open_clip ViT with a projection matrix (whose input h(x) a head can read)."""
    proj = getattr(visual, "proj", None)
    return isinstance(proj, torch.Tensor) and all(hasattr(visual, a) for a in ("_embeds", "transformer", "_pool"))


def resolve_head_feature(visual: nn.Module, requested: str) -> str:
    """The feature a head asking for ``requested`` reads on this tower: pre-proj needs a ViT's ``proj``;
    a tower without one (open_clip's ModifiedResNet, whose attention-pool output LIFT's ``Peft_RN``
    classifies; a timm trunk) has no pre-projection feature, and its head reads the tower's output."""
    return PRE_PROJ if requested == PRE_PROJ and has_pre_projection(visual) else PROJECTED


def encode_pre_projection(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """h(x) [B, W]: open_clip's ViT forward up to, not including, ``@ proj``."""
    pooled, _ = visual._pool(visual.transformer(visual._embeds(images)))
    return pooled


def encode_tower(visual: nn.Module, images: torch.Tensor, pre_projection: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(h(x), f(x)) of one pass: the head's feature ([B, W] pre-proj, else f(x) itself) and f(x) [B, E]."""
    if pre_projection:
        pooled = encode_pre_projection(visual, images)  # [B, W]
        return pooled, pooled @ visual.proj.to(pooled.dtype)
    features = visual(images)
    if isinstance(features, tuple):  # towers built with output_tokens=True
        features = features[0]
    return features, features


def map_text_to_pre_projection(text: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    """normalize(normalize(t) @ proj.T): class texts [C, E] as head rows [C, W] (LIFT's mapping)."""
    return F.normalize(F.normalize(text.float(), dim=-1) @ proj.detach().float().t(), dim=-1)
