"""Training losses (:data:`LOSSES`) and the compensation estimators beside them (:data:`ESTIMATORS`).

The logit-adjusted family (``la``, ``bs``: :data:`COMPENSATED_LOSSES`) composes with a
distribution mismatch-aware compensation factor delta [C]::

    L = CE(z(x) + tau * log(pi) - delta, y)

``pi`` is the training label prior (a buffer); ``delta`` comes from the estimator named by
``--compensation`` (:mod:`sage_cli.losses.compensation`). Predictions at test time use ``z(x)``
alone. The other losses (CE, focal, LDAM, class-balanced, LADE) are in
:mod:`sage_cli.losses.classification`. Adding one: a class there and a line in :data:`LOSSES`
(docs/methods.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from sage_cli.errors import SageError
from sage_cli.methods import CompensationName, LossName
from sage_cli.losses.classification import (
    COMPENSATED_LOSSES,
    LOSSES,
    BalancedSoftmax,
    ClassBalancedLoss,
    ClassificationLoss,
    CompensatedLALoss,
    CrossEntropy,
    FocalLoss,
    LADELoss,
    LDAMLoss,
)
from sage_cli.losses.compensation import (
    ESTIMATORS,
    CompensationEstimator,
    CountCompensation,
    NoCompensation,
    SemanticCompensation,
    ZeroShotCompensation,
    _unknown_estimator,
    build_estimator,
    compute_zero_shot_prior,
)


@dataclass(frozen=True)
class LossConfig:
    """tau scales log(pi); lam, kappa, delta_max shape delta; ema is the running-stats momentum.

    ``loss`` and ``compensation`` None mean "the method's": :meth:`resolve` fills them from the
    method's spec (:class:`~sage_cli.train.TrainConfig` does so), and :func:`build_loss` refuses
    a config left unresolved rather than guess.
    """

    loss: LossName | None = None
    tau: float = 1.0
    compensation: CompensationName | None = None
    lam: float = 0.25  # tuned on Shapes-LT val (docs/world.md); the spec started from 1
    kappa: float = 16.0
    delta_max: float = 5.0
    ema: float = 0.9
    focal_gamma: float = 2.0
    ldam_margin: float = 0.5
    cb_beta: float = 0.9999
    lade_weight: float = 0.1
    lade_lambda: float = 0.1
    text_align: float = 0.0  # beta of the text-alignment term (LA family only); 0: none

    def __post_init__(self) -> None:
        if self.loss is not None and self.loss not in LOSSES:
            raise SageError(f"--loss must be one of {', '.join(LOSSES)}; got {self.loss!r}")
        if self.compensation is not None and self.compensation not in ESTIMATORS:
            raise SageError(_unknown_estimator(self.compensation))
        checks = [
            (self.tau >= 0, f"--tau must be >= 0; got {self.tau}"),
            (self.lam >= 0, f"--lam must be >= 0; got {self.lam}"),
            (self.kappa > 0, f"--kappa must be > 0; got {self.kappa}"),
            (self.delta_max >= 0, f"--delta-max must be >= 0; got {self.delta_max}"),
            (0 <= self.ema < 1, f"--ema must be in [0, 1); got {self.ema}"),
            (self.focal_gamma >= 0, f"--focal-gamma must be >= 0; got {self.focal_gamma}"),
            (self.ldam_margin > 0, f"--ldam-margin must be > 0; got {self.ldam_margin}"),
            (0 <= self.cb_beta < 1, f"--cb-beta must be in [0, 1); got {self.cb_beta}"),
            (self.lade_weight >= 0, f"--lade-weight must be >= 0; got {self.lade_weight}"),
            (self.lade_lambda >= 0, f"--lade-lambda must be >= 0; got {self.lade_lambda}"),
            (self.text_align >= 0, f"--text-align must be >= 0; got {self.text_align}"),
        ]
        for ok, message in checks:
            if not ok:
                raise SageError(message)

    def resolve(self, method: str) -> LossConfig:
        """This config with ``loss`` / ``compensation`` left None taken from ``method``'s spec."""
        from sage_cli.methods import resolve_loss_options

        loss, compensation = resolve_loss_options(method, self.loss, self.compensation)
        return dataclasses.replace(self, loss=loss, compensation=compensation)


def build_loss(
    cfg: LossConfig, class_counts: torch.Tensor, text_embeddings: torch.Tensor, logit_scale: float = 25.0,
    zero_shot_features: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> ClassificationLoss:
    """Loss ``cfg.loss`` for ``class_counts`` [C] (images per class) and text vectors [C, E].

    ``logit_scale`` is the head's s (LDAM's margin is applied to the cosine, so scaled by s; the
    zero-shot estimator's softmax uses it too). ``zero_shot_features``: the frozen tower's
    (features [N, E], labels [N]) on the training split, which an estimator with
    ``needs_zero_shot`` (``--compensation zero-shot``) is fitted from once, here.
    """
    class_counts = torch.as_tensor(class_counts).detach().float().cpu()
    num_classes = class_counts.shape[0] if class_counts.ndim == 1 else -1
    if num_classes < 1 or text_embeddings.ndim != 2 or text_embeddings.shape[0] != num_classes:
        raise SageError(
            f"class counts {tuple(class_counts.shape)} and text embeddings {tuple(text_embeddings.shape)} "
            f"disagree on the number of classes"
        )
    empty = torch.nonzero(class_counts <= 0).flatten().tolist()
    if empty:
        raise SageError(f"classes {empty[:5]} have no training images; every class needs at least one")
    if cfg.loss is None or cfg.compensation is None:
        raise SageError("the loss config is unresolved (loss / compensation None): call LossConfig.resolve(method)")
    if cfg.text_align > 0 and cfg.loss not in COMPENSATED_LOSSES:
        raise SageError(f"--text-align composes with the logit-adjusted losses ({', '.join(COMPENSATED_LOSSES)}) "
                        f"only; got --loss {cfg.loss}")
    estimator = build_estimator(cfg.compensation, class_counts, text_embeddings.detach().cpu(), cfg)
    if estimator.needs_zero_shot:
        if zero_shot_features is None:
            raise SageError(f"--compensation {cfg.compensation} needs the frozen tower's features of the training "
                            "images (zero_shot_features)")
        features, labels = zero_shot_features
        estimator.fit_zero_shot(features.detach().float().cpu(), labels.detach().long().cpu(), logit_scale)
    if cfg.text_align > 0:
        return LOSSES[cfg.loss](cfg, class_counts, estimator, logit_scale, text_embeddings=text_embeddings.detach().cpu())
    return LOSSES[cfg.loss](cfg, class_counts, estimator, logit_scale)


__all__ = [
    "COMPENSATED_LOSSES", "ESTIMATORS", "LOSSES", "BalancedSoftmax", "ClassBalancedLoss", "ClassificationLoss",
    "CompensatedLALoss", "CompensationEstimator", "CountCompensation", "CrossEntropy", "FocalLoss", "LADELoss",
    "LDAMLoss", "LossConfig", "NoCompensation", "SemanticCompensation", "ZeroShotCompensation", "build_estimator",
    "build_loss", "compute_zero_shot_prior",
]
