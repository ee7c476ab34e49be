"""Compensation estimators: the factor delta [C] subtracted from the logit adjustment.

Chosen by name in :data:`ESTIMATORS`: "semantic" (text-anchored shrinkage estimate, needs the
image features), "count" (lambda * log(1 + kappa / n_y)), "zero-shot" (the frozen zero-shot
classifier's own label bias on the training images, estimated once before training) or "none"
(plain logit adjustment). Estimator statistics are buffers, so the loss's ``state_dict()``
checkpoints them. See docs/method.md for the derivation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from sage_cli.collectives import all_gather_rows, is_distributed
from sage_cli.config import option_label
from sage_cli.errors import SageError

if TYPE_CHECKING:
    from sage_cli.schema import LossConfig


class CompensationEstimator(nn.Module):
    """Estimates delta [C]; ``update`` sees each training batch's (detached) features and labels."""

    needs_features: bool = False
    needs_zero_shot: bool = False  # fit once, before training, from the frozen tower (fit_zero_shot)

    def __init__(self, class_counts: torch.Tensor, text_embeddings: torch.Tensor, cfg: LossConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("class_counts", class_counts.detach().clone().float())  # [C]

    @property
    def num_classes(self) -> int:
        return self.class_counts.shape[0]

    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Fold one batch into the running statistics (no-op unless the estimator keeps any)."""

    def delta(self) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict[str, object] | None:
        """What the run record keeps of the estimate (None: nothing beyond the config)."""
        return None


class NoCompensation(CompensationEstimator):
    """delta = 0: plain logit adjustment."""

    def delta(self) -> torch.Tensor:
        return torch.zeros_like(self.class_counts)


class CountCompensation(CompensationEstimator):
    """delta_y = lam * log(1 + kappa / n_y): a count-only proxy, needs no features."""

    def delta(self) -> torch.Tensor:
        return self.cfg.lam * torch.log1p(self.cfg.kappa / self.class_counts)


class SemanticCompensation(CompensationEstimator):
    """delta_y = lam * (kappa / (n_y + kappa))^2 * ||m_y - t'_y||^2 / S^2, clamped to [0, delta_max].

    m_y: EMA mean of v(x) over class y; S^2: EMA of the pooled mean squared distance of v(x) to
    its class mean; t'_y = t_y - mean_c(t_c) + mean_x(v(x)): the text vector moved across the
    modality gap, with mean_x the EMA of the batch feature mean. delta = 0 until every class has
    been seen once.
    """

    needs_features = True

    def __init__(self, class_counts: torch.Tensor, text_embeddings: torch.Tensor, cfg: LossConfig) -> None:
        super().__init__(class_counts, text_embeddings, cfg)
        text = F.normalize(text_embeddings.detach().float(), dim=-1)
        num_classes, dim = text.shape
        self.register_buffer("centred_text", text - text.mean(dim=0))  # t_y - mean_c(t_c), [C, E]
        self.register_buffer("class_means", torch.zeros(num_classes, dim))  # m_y, [C, E]
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))  # [C]
        self.register_buffer("feature_mean", torch.zeros(dim))  # mean_x v(x), [E]
        self.register_buffer("spread", torch.zeros(()))  # S^2
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        features, labels = gather_batch(features.detach().float(), labels)  # every rank folds in the global batch
        # Full [C, E] updates rather than boolean indexing: no host sync on a GPU.
        sums, counts, sq_norms = _class_sums(features, labels, self.num_classes)
        present = counts > 0  # [C]
        keep = torch.where(present, torch.where(self.seen, self.cfg.ema, 0.0), 1.0)[:, None]  # [C, 1]
        batch_means = sums / counts.clamp_min(1)[:, None]  # [C, E]
        self.class_means.mul_(keep).add_((1 - keep) * batch_means)
        self.seen |= present
        means = self.class_means
        # sum_i ||f_i - m_y||^2 = sum_i ||f_i||^2 - 2 m_y . sum_i f_i + n ||m_y||^2 (0 for absent classes)
        sq_dist = sq_norms - 2 * (means * sums).sum(-1) + counts * means.pow(2).sum(-1)  # [C]
        seen_any = counts.sum() > 0  # False for a batch whose images were all skipped (on every rank)
        total = counts.sum().clamp_min(1)
        momentum = torch.where(self.num_updates > 0, self.cfg.ema, 0.0)  # first batch: take it
        momentum = torch.where(seen_any, momentum, 1.0)  # an empty batch changes nothing
        self.spread.mul_(momentum).add_((1 - momentum) * sq_dist.sum().clamp_min(0) / total)
        self.feature_mean.mul_(momentum).add_((1 - momentum) * sums.sum(0) / total)
        self.num_updates += seen_any.long()

    def delta(self) -> torch.Tensor:
        anchors = self.centred_text + self.feature_mean  # t'_y, [C, E]
        distance = (self.class_means - anchors).pow(2).sum(-1)  # [C]
        shrink = (self.cfg.kappa / (self.class_counts + self.cfg.kappa)) ** 2
        delta = self.cfg.lam * shrink * distance / self.spread.clamp_min(1e-12)
        # zero until every class has been seen once (a where, not an if: no host sync)
        return torch.where(self.seen.all(), delta.clamp(0.0, self.cfg.delta_max), 0.0)


class ZeroShotCompensation(CompensationEstimator):
    """delta_y = -lam * (log q_y - mean_c log q_c), clamped to [-delta_max, delta_max].

    q [C] is the frozen zero-shot classifier's label prior on the training images
    (:func:`compute_zero_shot_prior`), fitted once before training by :meth:`fit_zero_shot`. A
    class the zero-shot classifier over-predicts (q_y > 1/C) gets a negative delta, so training
    with ``z + tau log pi - delta`` pushes its logits down, and an under-predicted one up: the
    correction of generalized logit adjustment (Zhu et al., NeurIPS 2023) moved into the loss.
    Until fitted q is uniform and delta is 0.
    """

    needs_zero_shot = True

    def __init__(self, class_counts: torch.Tensor, text_embeddings: torch.Tensor, cfg: LossConfig) -> None:
        super().__init__(class_counts, text_embeddings, cfg)
        self.register_buffer("text", F.normalize(text_embeddings.detach().float(), dim=-1))  # t_y, [C, E]
        self.register_buffer("zero_shot_prior", torch.full((self.num_classes,), 1.0 / self.num_classes))  # q, [C]
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def fit_zero_shot(self, features: torch.Tensor, labels: torch.Tensor, logit_scale: float) -> None:
        """Estimate q from the frozen tower's training features [N, E] and labels [N]."""
        prior = compute_zero_shot_prior(features, labels, self.text.to(features.device), logit_scale)
        self.zero_shot_prior.copy_(prior.to(self.zero_shot_prior.device))
        self.fitted.fill_(True)

    def delta(self) -> torch.Tensor:
        log_prior = self.zero_shot_prior.clamp_min(1e-12).log()  # [C]
        delta = -self.cfg.lam * (log_prior - log_prior.mean())
        return delta.clamp(-self.cfg.delta_max, self.cfg.delta_max)

    def describe(self) -> dict[str, object]:
        return {"zero_shot_prior": [round(float(q), 6) for q in self.zero_shot_prior],
                "delta": [round(float(d), 6) for d in self.delta()], "fitted": bool(self.fitted)}


def compute_zero_shot_prior(
    features: torch.Tensor, labels: torch.Tensor, text: torch.Tensor, logit_scale: float
) -> torch.Tensor:
    """q [C]: the zero-shot softmax ``softmax(s cos(v(x), t))`` averaged class-balanced over the images.

    Each class's images are averaged first, then the classes (every class weighs 1/C, however many
    images it has), so q is the label distribution the frozen classifier predicts for a balanced
    set: uniform for an unbiased one, whatever the training counts. ``features`` [N, E] and ``text``
    [C, E] are normalised here; a class without images is refused.
    """
    num_classes = text.shape[0]
    probs = (logit_scale * F.normalize(features.float(), dim=-1) @ F.normalize(text.float(), dim=-1).t()).softmax(-1)
    counts = torch.bincount(labels, minlength=num_classes).float()  # [C]
    if bool((counts == 0).any()):
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise SageError(f"{option_label('compensation')} zero-shot: classes {missing[:5]} have no training images to estimate from")
    per_class = torch.zeros(num_classes, num_classes, device=probs.device).index_add_(0, labels, probs)  # [C, C]
    return (per_class / counts[:, None]).mean(0)  # [C], sums to 1


def gather_batch(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The micro-batch's float32 features [B, E] and labels [B] of every rank, in rank order (under DDP;
    the inputs themselves in one process): one all-gather of [B_r, E + 1] rows, labels as an exact float
    column, where all-reducing the statistics would move [C, E + 2]."""
    if not is_distributed():
        return features, labels
    rows = all_gather_rows(torch.cat([features, labels[:, None].to(features.dtype)], dim=1))  # [B, E + 1]
    return rows[:, :-1], rows[:, -1].long()


def _class_sums(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class feature sums [C, E], counts [C] and summed squared norms [C]."""
    dim = features.shape[1]
    packed = torch.zeros(num_classes, dim + 2, device=features.device, dtype=features.dtype)
    packed[:, :dim].index_add_(0, labels, features)
    packed[:, dim].index_add_(0, labels, torch.ones_like(labels, dtype=features.dtype))
    packed[:, dim + 1].index_add_(0, labels, features.pow(2).sum(-1))
    return packed[:, :dim], packed[:, dim], packed[:, dim + 1]


ESTIMATORS: dict[str, type[CompensationEstimator]] = {
    "semantic": SemanticCompensation,
    "count": CountCompensation,
    "zero-shot": ZeroShotCompensation,
    "none": NoCompensation,
}


def _unknown_estimator(name: str) -> str:
    return f"{option_label('compensation')} must be one of {', '.join(ESTIMATORS)}; got {name!r}"


def build_estimator(
    name: str, class_counts: torch.Tensor, text_embeddings: torch.Tensor, cfg: LossConfig
) -> CompensationEstimator:
    """Look ``name`` up in :data:`ESTIMATORS`; a SageError listing the valid names otherwise."""
    if name not in ESTIMATORS:
        raise SageError(_unknown_estimator(name))
    return ESTIMATORS[name](class_counts, text_embeddings, cfg)
