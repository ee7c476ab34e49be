"""Initial head weights [C, E] from image features (``head.init``; "text" needs none of this).

- ``class-mean``: the normalised mean of each class's (L2-normalised) frozen image features;
- ``k-shot``: the same over each class's first ``shots`` training images (manifest order), LIFT's
  1/10/100-shot init;
- ``random`` (made by :func:`draw_random_rows`, no features needed): unit rows in directions drawn
  from torch's seeded generator, a probe trained from scratch (Imbalance-VLM's plain linear probe);
- ``linear-probe``: ridge regression of one-hot labels on the features,
  W = Y^T X (X^T X + lambda I)^-1 with lambda = 1, rows normalised: a deterministic closed-form
  linear probe (LIFT fits a logistic regression; the closed form needs no iterations or seed).

The features are the frozen tower's (computed before the PEFT module is inserted); the returned
rows are unit vectors, so a cosine head starts from their directions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sage_cli.config import option_label
from sage_cli.errors import SageError

RIDGE_LAMBDA = 1.0
DATA_FREE_INITS = ("text", "random")  # --head-init values that need no image features


def draw_random_rows(num_classes: int, dim: int) -> torch.Tensor:
    """[C, D] unit rows in uniformly random directions, from torch's global generator (seeded by the run)."""
    return F.normalize(torch.randn(num_classes, dim), dim=-1)


def compute_head_vectors(
    init: str, features: torch.Tensor, labels: torch.Tensor, num_classes: int, shots: int = 10,
) -> torch.Tensor:
    """[C, E] unit rows for ``init`` from ``features`` [N, E] (normalised) and ``labels`` [N]."""
    features, labels = features.float(), labels.long()
    missing = sorted(set(range(num_classes)) - set(labels.tolist()))
    if missing:
        raise SageError(f"{option_label('head_init')} {init}: classes {missing[:5]} have no training features")
    if init == "class-mean":
        return F.normalize(compute_class_means(features, labels, num_classes), dim=-1)
    if init == "k-shot":
        keep = select_first_shots(labels, num_classes, shots)
        return F.normalize(compute_class_means(features[keep], labels[keep], num_classes), dim=-1)
    if init == "linear-probe":
        return F.normalize(fit_ridge_probe(features, labels, num_classes), dim=-1)
    raise SageError(f"{option_label('head_init')} {init!r} is not computed from image features")


def compute_class_means(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class mean feature [C, E]."""
    sums = torch.zeros(num_classes, features.shape[1]).index_add_(0, labels, features)
    counts = torch.bincount(labels, minlength=num_classes).clamp_min(1).float()
    return sums / counts[:, None]


def select_first_shots(labels: torch.Tensor, num_classes: int, shots: int) -> torch.Tensor:
    """Indices of each class's first ``shots`` samples, in order."""
    seen = torch.zeros(num_classes, dtype=torch.long)
    keep = []
    for index, label in enumerate(labels.tolist()):
        if seen[label] < shots:
            seen[label] += 1
            keep.append(index)
    return torch.tensor(keep, dtype=torch.long)


def fit_ridge_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                    ridge: float = RIDGE_LAMBDA) -> torch.Tensor:
    """W [C, E] minimising ||X W^T - Y||^2 + ridge ||W||^2 (float64 solve)."""
    x = features.double()  # [N, E]
    y = F.one_hot(labels, num_classes).double()  # [N, C]
    gram = x.t() @ x + ridge * torch.eye(x.shape[1], dtype=torch.float64)  # [E, E]
    return torch.linalg.solve(gram, x.t() @ y).t().float()  # [C, E]
