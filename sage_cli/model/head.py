"""Classifier heads, chosen by name from :data:`HEADS`; each starts from class vectors [C, E].

- ``cosine``: ``s * cos(v(x), w_y)`` (LIFT's default), on the L2-normalised feature;
- ``linear``: ``f(x) w_y^T + b_y`` on CLIP's raw image feature f(x);
- ``l2``: ``f(x) normalize(w_y)^T``, LIFT's L2-normalised classifier, on the raw feature.

The weight is initialised from [C, E] class vectors: the text embeddings, or image feature
means (:data:`HEAD_INITS`, computed by :mod:`sage_cli.model.head_init`). With the text init
every head ranks classes as CLIP's zero-shot classifier does.

Every head computes its logits in float32 with autocast off (:class:`Head`): under bf16 autocast
the [B, C] product of thousands of classes rounds to 8 significant bits, and near-equal classes
then tie or swap their order (3.2% of arg-maxes flip at 8,142 classes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sage_cli.schema import HeadInitName, names

HEAD_INITS = names(HeadInitName)


class Head(nn.Module):
    """Base of the heads: ``logits(features)`` in float32, autocast off, whatever precision the caller runs in."""

    normalized_input: bool  # whether the head reads v(x), the L2-normalised feature, or f(x)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        with torch.autocast(features.device.type, enabled=False):
            return self.logits(features.float())  # [B, C] float32

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """[B, C] logits of float32 ``features`` [B, E]."""
        raise NotImplementedError


class CosineHead(Head):
    """``scale * normalize(features) @ normalize(weight).T``; ``weight`` [C, E] is trainable."""

    normalized_input = True  # reads v(x), the L2-normalised feature

    def __init__(self, class_embeddings: torch.Tensor, scale: float = 25.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(class_embeddings.detach().clone().float())  # [C, E]
        self.scale = float(scale)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(features, dim=-1) @ F.normalize(self.weight, dim=-1).t()  # [B, C]

    def extra_repr(self) -> str:
        return f"classes={self.weight.shape[0]}, dim={self.weight.shape[1]}, scale={self.scale}"


class LinearHead(Head):
    """``features @ weight.T + bias`` on the raw feature; bias starts at zero."""

    normalized_input = False

    def __init__(self, class_embeddings: torch.Tensor, scale: float = 25.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(class_embeddings.detach().clone().float())  # [C, E]
        self.bias = nn.Parameter(torch.zeros(class_embeddings.shape[0]))  # [C]

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(features, self.weight, self.bias)  # [B, C]


class L2NormedHead(Head):
    """``features @ normalize(weight).T`` on the raw feature (LIFT's ``L2NormedClassifier``)."""

    normalized_input = False

    def __init__(self, class_embeddings: torch.Tensor, scale: float = 25.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(class_embeddings.detach().clone().float())  # [C, E]

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return features @ F.normalize(self.weight, dim=-1).t()  # [B, C]


HEADS: dict[str, type[Head]] = {"cosine": CosineHead, "linear": LinearHead, "l2": L2NormedHead}


def build_head(name: str, class_vectors: torch.Tensor, scale: float) -> Head:
    """Head ``name`` with its weight set to ``class_vectors`` [C, E]."""
    return HEADS[name](class_vectors, scale)
