"""The cosine classifier head: logits = s * cos(v(x), w_y), w initialised from class embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CosineHead(nn.Module):
    """``scale * normalize(features) @ normalize(weight).T``; ``weight`` [C, E] is trainable."""

    def __init__(self, class_embeddings: torch.Tensor, scale: float = 25.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(class_embeddings.detach().clone().float())  # [C, E]
        self.scale = float(scale)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        weight = F.normalize(self.weight, dim=-1).to(features.dtype)
        return self.scale * F.normalize(features, dim=-1) @ weight.t()  # [B, C]

    def extra_repr(self) -> str:
        return f"classes={self.weight.shape[0]}, dim={self.weight.shape[1]}, scale={self.scale}"
