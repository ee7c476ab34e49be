"""Training losses (:data:`LOSSES`) and the compensation estimators beside them (:data:`ESTIMATORS`).

The logit-adjusted family (``la``, ``bs``: :data:`COMPENSATED_LOSSES`) composes with a
distribution mismatch-aware compensation factor delta [C]::

    L = CE(z(x) + tau * log(pi) - delta, y)

``pi`` is the training label prior (a buffer); ``delta`` comes from the estimator named by
``compensation`` (:mod:`sage_cli.losses.compensation`). Predictions at test time use ``z(x)``
alone. The other losses (CE, focal, LDAM, class-balanced, GRW, LADE) are in
:mod:`sage_cli.losses.classification`. Adding one: a class there and a line in :data:`LOSSES`
(docs/methods.md).
"""

from __future__ import annotations

import torch

from sage_cli.config import option_label
from sage_cli.errors import SageError
from sage_cli.losses.classification import (
    LOSSES,
    BalancedSoftmax,
    ClassBalancedLoss,
    ClassificationLoss,
    CompensatedLALoss,
    CrossEntropy,
    FocalLoss,
    GeneralizedReweightLoss,
    LADELoss,
    LDAMLoss,
    ReweightedLoss,
)
from sage_cli.losses.compensation import (
    ESTIMATORS,
    CompensationEstimator,
    CountCompensation,
    NoCompensation,
    SemanticCompensation,
    ZeroShotCompensation,
    build_estimator,
    compute_zero_shot_prior,
)
from sage_cli.schema import COMPENSATED_LOSSES, LossConfig


def build_loss(
    cfg: LossConfig, class_counts: torch.Tensor, text_embeddings: torch.Tensor, logit_scale: float = 25.0,
    zero_shot_features: tuple[torch.Tensor, torch.Tensor] | None = None, head_dim: int | None = None,
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
    estimator = build_estimator(cfg.compensation, class_counts, text_embeddings.detach().cpu(), cfg)
    if estimator.needs_zero_shot:
        if zero_shot_features is None:
            raise SageError(f"{option_label('compensation')} {cfg.compensation} needs the frozen tower's features of the training "
                            "images (zero_shot_features)")
        features, labels = zero_shot_features
        estimator.fit_zero_shot(features.detach().float().cpu(), labels.detach().long().cpu(), logit_scale)
    extra: dict[str, object] = {}
    if cfg.text_align > 0:
        extra["text_embeddings"] = text_embeddings.detach().cpu()
    if cfg.spread > 0:  # the head's input width: D of a pre-proj head, else the joint space's E
        extra["head_dim"] = int(text_embeddings.shape[1]) if head_dim is None else int(head_dim)
    return LOSSES[cfg.loss](cfg, class_counts, estimator, logit_scale, **extra)


__all__ = [
    "COMPENSATED_LOSSES", "ESTIMATORS", "LOSSES", "BalancedSoftmax", "ClassBalancedLoss", "ClassificationLoss",
    "CompensatedLALoss", "CompensationEstimator", "CountCompensation", "CrossEntropy", "FocalLoss",
    "GeneralizedReweightLoss", "LADELoss", "LDAMLoss", "LossConfig", "NoCompensation", "ReweightedLoss",
    "SemanticCompensation", "ZeroShotCompensation", "build_estimator", "build_loss", "compute_zero_shot_prior",
]
