"""Ranked predictions of one classifier on one split: the type every report module reads, and its ranking rule."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

TOP_K = 5


@dataclass(frozen=True)
class Predictions:
    """Ranked predictions of one classifier on one split, in sample order."""

    sample_ids: np.ndarray  # [N] int64
    labels: np.ndarray  # [N] int64
    top_classes: np.ndarray  # [N, k] int64, best first (ties: lower class id first)
    top_scores: np.ndarray  # [N, k] float32 softmax probabilities
    logits: np.ndarray | None = None  # [N, C] float16, only when asked for (--save-logits)

    @property
    def top1(self) -> np.ndarray:
        return self.top_classes[:, 0]

    @property
    def confidence(self) -> np.ndarray:
        """Max softmax probability per sample [N]."""
        return self.top_scores[:, 0]

    def __len__(self) -> int:
        return len(self.labels)


def compute_ranked_scores(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` classes and softmax scores of ``logits`` [B, C]; equal scores rank by class id."""
    probs = logits.float().softmax(dim=-1)
    scores, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    k = min(k, logits.shape[-1])
    return order[:, :k], scores[:, :k]
