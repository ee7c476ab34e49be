"""The training losses, selected by name from :data:`LOSSES` (LIFT's table 16 and LA).

Every loss takes ``(logits [B, C], labels [B], features [B, E] or None)`` and returns its batch
value ``sum_i t_i / sum_i m_i``: a sum of per-sample terms over the batch's *normaliser*
:meth:`ClassificationLoss.normaliser` (the batch size for a plain mean; ``sum_i w_{y_i}`` for the
reweighted losses, as ``F.cross_entropy(weight=w)``). The loop weights each micro-batch by its
normaliser over the step's total (all micro-batches, all ranks), so gradient accumulation and DDP
add up to the loss of the whole batch (LADE's estimator term excepted: it is per micro-batch, as
LIFT's is per GPU). The class counts n [C] (prior pi = n / sum n) are buffers set at construction.

- ``ce``: CE(z, y).
- ``la``: CE(z + tau log pi - delta, y), logit adjustment (Menon et al.) with the compensation
  delta of :mod:`sage_cli.losses.compensation`; with ``text_align`` beta > 0, plus
  beta * CE(s cos(v(x), t) + tau log pi - delta, y): the same loss through the frozen text
  classifier t (the class text vectors), which keeps the tuned image features aligned with it;
  with ``spread`` lambda_s > 0, plus the pairwise spread margin of :mod:`sage_cli.losses.spread`
  on the rival classes' logits (0.5 lambda_s r_y s^2 (w_j - w_y)^T Sigma (w_j - w_y)).
- ``bs``: balanced softmax (Ren et al.), CE(z + log pi - delta, y): LA at tau = 1.
- ``focal``: mean (1 - p_y)^gamma CE_i (Lin et al.).
- ``ldam``: CE(z - s m_y e_y, y), m_y proportional to n_y^(-1/4), max m = --ldam-margin, s the
  head's logit scale (Cao et al.; the margin is applied to the cosine, as LIFT does).
- ``cb``: class-balanced CE (Cui et al.), w_y = (1 - beta) / (1 - beta^n_y) normalised to mean 1
  over classes; ``sum_i w_{y_i} CE_i / sum_i w_{y_i}`` (LIFT's, PyTorch's ``weight=``), or with
  ``reweight_norm="samples"`` ``mean_i w_{y_i} CE_i`` (Cui et al.'s own code).
- ``grw``: generalised re-weighting (Zhang et al.), w_y = (n_y / N)^(-p) normalised to mean 1,
  p = --grw-exp; normalised as ``cb``.
- ``lade``: CE(z + log pi, y) - w sum_y pi_y (ReMINE bound of the logits' class-conditional
  spread) (Hong et al.), LIFT's formula with --lade-weight w and --lade-lambda.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from sage_cli.losses.compensation import CompensationEstimator, NoCompensation
from sage_cli.losses.spread import SpreadMargin
from sage_cli.schema import COMPENSATED_LOSSES

if TYPE_CHECKING:
    from sage_cli.schema import LossConfig


class HeadView(NamedTuple):
    """What a loss may read of the cosine head: its input h(x) [B, D] (before normalisation), its rows
    [C, D] (the parameter, so a term on them has a gradient) and its logit scale s."""

    inputs: torch.Tensor
    weight: torch.Tensor
    scale: float


class ClassificationLoss(nn.Module):
    """Base: the class counts and log prior as buffers; no use of the features."""

    needs_features = False
    needs_head = False

    def __init__(self, cfg: LossConfig, class_counts: torch.Tensor, estimator: CompensationEstimator,
                 logit_scale: float = 25.0) -> None:
        super().__init__()
        self.cfg = cfg
        counts = class_counts.detach().float()
        self.register_buffer("log_prior", (counts / counts.sum()).log())  # [C]

    def observe_empty(self, feature_dim: int, device: torch.device) -> None:
        """A micro-batch with no readable image (nothing to do unless statistics are kept)."""

    def normaliser(self, labels: torch.Tensor) -> float:
        """The denominator of this loss on a batch of ``labels`` [B] (host): its batch size here."""
        return float(labels.numel())

    def compensation(self) -> torch.Tensor | None:
        """The compensation factor delta [C] the loss subtracts now; None for a loss without one."""
        return None

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


class CrossEntropy(ClassificationLoss):
    """CE(z, y)."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels)


class CompensatedLALoss(ClassificationLoss):
    """CE(logits + tau * log(pi) - delta, y); in train mode the estimator sees the batch first.

    With ``cfg.text_align`` beta > 0 and ``text_embeddings`` [C, E], the same adjusted CE of the
    frozen text classifier on the image features, s * cos(v(x), t_y), is added with weight beta
    (docs/method.md#text-alignment).
    """

    def __init__(self, cfg: LossConfig, class_counts: torch.Tensor, estimator: CompensationEstimator,
                 logit_scale: float = 25.0, text_embeddings: torch.Tensor | None = None,
                 head_dim: int | None = None) -> None:
        super().__init__(cfg, class_counts, estimator, logit_scale)
        self.estimator = estimator
        self.text_align = float(cfg.text_align)
        self.scale = float(logit_scale)
        if self.text_align > 0:
            if text_embeddings is None:
                raise ValueError("text_align > 0 needs the class text embeddings")
            self.register_buffer("text", F.normalize(text_embeddings.detach().float(), dim=-1))  # t, [C, E]
        self.spread = None
        if cfg.spread > 0:
            if head_dim is None:
                raise ValueError("spread > 0 needs the width of the head's input (head_dim)")
            self.spread = SpreadMargin(class_counts, cfg.spread, cfg.kappa, cfg.ema, head_dim)

    @property
    def tau(self) -> float:
        return self.cfg.tau

    @property
    def needs_features(self) -> bool:
        """Whether :meth:`forward` needs the image features (the semantic estimator's statistics,
        the text-alignment term)."""
        return self.estimator.needs_features or self.text_align > 0

    def observe_empty(self, feature_dim: int, device: torch.device) -> None:
        """The statistics still meet the other ranks' all-reduce."""
        empty = torch.zeros(0, dtype=torch.long, device=device)
        if self.estimator.needs_features:
            self.estimator.update(torch.zeros(0, feature_dim, device=device), empty)
        if self.spread is not None:
            self.spread.update(torch.zeros(0, self.spread.covariance.shape[0], device=device), empty)

    def delta(self) -> torch.Tensor:
        """The current compensation factor [C]."""
        return self.estimator.delta()

    def compensation(self) -> torch.Tensor | None:
        return None if isinstance(self.estimator, NoCompensation) else self.estimator.delta()

    @property
    def needs_head(self) -> bool:
        """Whether :meth:`forward` needs the head's input and rows (the spread margin)."""
        return self.spread is not None

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, features: torch.Tensor | None = None,
                head: HeadView | None = None) -> torch.Tensor:
        if self.training:
            if features is None and self.estimator.needs_features:
                raise ValueError(f"the {self.cfg.compensation!r} compensation needs the image features")
            if features is not None and self.estimator.needs_features:
                self.estimator.update(features, labels)
        offset = self.tau * self.log_prior - self.estimator.delta()  # [C]
        adjusted = logits.float() + offset
        if self.spread is not None:
            if head is None:
                raise ValueError("the spread margin needs the head's input and rows (head=HeadView)")
            if self.training:
                self.spread.update(head.inputs, labels)
            adjusted = adjusted + self.spread(labels, head.weight, head.scale)  # [B, C]: 0 on the true class
        loss = F.cross_entropy(adjusted, labels)
        if self.text_align > 0:
            if features is None:
                raise ValueError("the text-alignment term needs the image features")
            text_logits = self.scale * F.normalize(features.float(), dim=-1) @ self.text.t()  # [B, C]
            loss = loss + self.text_align * F.cross_entropy(text_logits + offset, labels)
        return loss


class BalancedSoftmax(CompensatedLALoss):
    """CE(z + log pi - delta, y): logit adjustment with tau fixed at 1."""

    @property
    def tau(self) -> float:
        return 1.0


class FocalLoss(ClassificationLoss):
    """mean_i (1 - p_{y_i})^gamma CE_i."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        ce = F.cross_entropy(logits.float(), labels, reduction="none")  # [B]
        return ((1 - torch.exp(-ce)) ** self.cfg.focal_gamma * ce).mean()


class LDAMLoss(ClassificationLoss):
    """CE(z - s * m_y on the true class, y) with m_y = max_m * n_y^(-1/4) / max_c n_c^(-1/4)."""

    def __init__(self, cfg: LossConfig, class_counts: torch.Tensor, estimator: CompensationEstimator,
                 logit_scale: float = 25.0) -> None:
        super().__init__(cfg, class_counts, estimator, logit_scale)
        margins = class_counts.detach().float() ** -0.25
        self.register_buffer("margins", margins * (cfg.ldam_margin / margins.max()))  # [C]
        self.scale = float(logit_scale)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        logits = logits.float()
        shift = F.one_hot(labels, logits.shape[1]) * (self.scale * self.margins[labels])[:, None]  # [B, C]
        return F.cross_entropy(logits - shift, labels)


class ReweightedLoss(ClassificationLoss):
    """CE reweighted by class: w [C] from :meth:`compute_weights`, scaled to mean 1 over classes.

    ``cfg.reweight_norm`` "weights": ``sum_i w_{y_i} CE_i / sum_i w_{y_i}``, as LIFT's
    ``F.cross_entropy(weight=w)``; "samples": ``mean_i w_{y_i} CE_i``. The weights are computed in
    float32, as LIFT computes them (in float64, cb's weights at beta 0.9999 move by up to 3e-5).
    """

    def __init__(self, cfg: LossConfig, class_counts: torch.Tensor, estimator: CompensationEstimator,
                 logit_scale: float = 25.0) -> None:
        super().__init__(cfg, class_counts, estimator, logit_scale)
        weights = self.compute_weights(cfg, class_counts.detach().float().cpu())
        weights = weights / weights.mean()
        self.register_buffer("weights", weights)  # [C]
        self.host_weights = weights.double()  # [C], not a buffer: stays on the host for the normaliser
        self.by_weight = cfg.reweight_norm == "weights"

    @staticmethod
    def compute_weights(cfg: LossConfig, counts: torch.Tensor) -> torch.Tensor:
        """The unnormalised class weights [C] for ``counts`` [C] (float32)."""
        raise NotImplementedError

    def normaliser(self, labels: torch.Tensor) -> float:
        """sum_i w_{y_i} ("weights") or the batch size ("samples")."""
        if not self.by_weight:
            return super().normaliser(labels)
        return float(self.host_weights[labels.cpu()].sum())

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        if self.by_weight:
            return F.cross_entropy(logits.float(), labels, weight=self.weights)
        ce = F.cross_entropy(logits.float(), labels, reduction="none")  # [B]
        return (self.weights[labels] * ce).mean()


class ClassBalancedLoss(ReweightedLoss):
    """w_y = (1 - beta) / (1 - beta^n_y) (Cui et al.; LIFT's CB)."""

    @staticmethod
    def compute_weights(cfg: LossConfig, counts: torch.Tensor) -> torch.Tensor:
        return (1.0 - cfg.cb_beta) / (1.0 - cfg.cb_beta ** counts)


class GeneralizedReweightLoss(ReweightedLoss):
    """w_y = 1 / (n_y / N)^p with p = ``cfg.grw_exp`` (Zhang et al.; LIFT's GRW)."""

    @staticmethod
    def compute_weights(cfg: LossConfig, counts: torch.Tensor) -> torch.Tensor:
        return 1.0 / (counts / counts.sum()) ** cfg.grw_exp


class LADELoss(ClassificationLoss):
    """LIFT's LADE: CE(z + log pi, y) - w * sum_y pi_y * (ReMINE lower bound of class y)."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        logits = logits.float()
        num_classes = logits.shape[1]
        prior = self.log_prior.exp()  # [C]
        ce = F.cross_entropy(logits + self.log_prior, labels)
        member = (labels[None, :] == torch.arange(num_classes, device=labels.device)[:, None]).float()  # [C, B]
        counts = member.sum(-1)  # [C]
        first = (logits.t() * member).sum(-1) / (counts + 1e-8)  # mean logit of each class over its samples
        spread = (logits - torch.log(prior + 1e-9) + math.log(1.0 / num_classes + 1e-9)).t()  # [C, B]
        second = torch.logsumexp(spread, dim=-1) - math.log(logits.shape[0])  # [C]
        bound = first - second - self.cfg.lade_lambda * second ** 2  # [C]
        return ce - self.cfg.lade_weight * (bound * prior).sum()


LOSSES: dict[str, type[ClassificationLoss]] = {
    "ce": CrossEntropy,
    "la": CompensatedLALoss,
    "bs": BalancedSoftmax,
    "focal": FocalLoss,
    "ldam": LDAMLoss,
    "cb": ClassBalancedLoss,
    "grw": GeneralizedReweightLoss,
    "lade": LADELoss,
}
