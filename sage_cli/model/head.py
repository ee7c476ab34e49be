"""Classifier heads, chosen by name from :data:`HEADS`; each starts from class vectors [C, E].

- ``cosine``: ``s * cos(v(x), w_y)`` (LIFT's default), on the L2-normalised feature;
- ``linear``: ``f(x) w_y^T + b_y`` on CLIP's raw image feature f(x);
- ``l2``: ``f(x) normalize(w_y)^T``, LIFT's L2-normalised classifier, on the raw feature.

The weight is initialised from [C, E] class vectors: the text embeddings, or image feature
means (:data:`HEAD_INITS`, computed by :mod:`sage_cli.model.head_init`). With the text init
every head ranks classes as CLIP's zero-shot classifier does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sage_cli.schema import HeadInitName, names

HEAD_INITS = names(HeadInitName)


class CosineHead(nn.Module):
    """``scale * normalize(features) @ normalize(weight).T``; ``weight`` [C, E] is trainable."""

    normalized_input = True  # reads v(x), the L2-normalised feature

    def __init__(self, class_embeddings: torch.Tensor, scale: float = 25.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(class_embeddings.detach().clone().float())  # [C, E]
        self.scale = float(scale)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        weight = F.normalize(self.weight, dim=-1).to(features.dtype)
        return self.scale * F.normalize(features, dim=-1) @ weight.t()  # [B, C]

    def extra_repr(self) -> str:
        return f"classes={self.weight.shape[0]}, dim={self.weight.shape[1]}, scale={self.scale}"


class LinearHead(nn.Module):
    """``features @ weight.T + bias`` on the raw feature; bias starts at zero."""

    normalized_input = False

    def __init__(self, class_embeddings: torch.Tensor, scale: float = 25.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(class_embeddings.detach().clone().float())  # [C, E]
        self.bias = nn.Parameter(torch.zeros(class_embeddings.shape[0]))  # [C]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(features, self.weight.to(features.dtype), self.bias.to(features.dtype))  # [B, C]


class L2NormedHead(nn.Module):
    """``features @ normalize(weight).T`` on the raw feature (LIFT's ``L2NormedClassifier``)."""

    normalized_input = False

    def __init__(self, class_embeddings: torch.Tensor, scale: float = 25.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(class_embeddings.detach().clone().float())  # [C, E]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features @ F.normalize(self.weight, dim=-1).to(features.dtype).t()  # [B, C]


HEADS: dict[str, type[nn.Module]] = {"cosine": CosineHead, "linear": LinearHead, "l2": L2NormedHead}


def build_head(name: str, class_vectors: torch.Tensor, scale: float) -> nn.Module:
    """Head ``name`` with its weight set to ``class_vectors`` [C, E]."""
    return HEADS[name](class_vectors, scale)
