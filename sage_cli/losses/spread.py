"""The spread margin: a pairwise training margin for classes whose few images understate their spread.

A class seen through n_y images looks tighter on its training images than it is on new ones: its
training cosine margins overstate its test margins, and the more so as n_y falls (measured on world
v3: few 0.124 -> 0.053 from train to val, many 0.089 -> 0.078; benchmarks/methods/TRIALS-v3.md).
In the spirit of implicit semantic augmentation (ISDA, Wang et al., NeurIPS 2019), each training
logit of a rival class j is raised by half the variance the logit difference z_j - z_y would have
if the image's head feature were redrawn with the spread its class's few images do not show:

    z'_ij = z_ij + 0.5 * lambda_s * r_y * s^2 * (w_j - w_y)^T Sigma (w_j - w_y),   r_y = kappa / (n_y + kappa)

w: the cosine head's normalised rows (the gradient flows through them: the head learns to put a
rare class's decision boundary where the pooled spread is small); s: the head's logit scale;
Sigma [D, D]: the within-class covariance of the head's normalised input h(x), pooled over the
batch's classes with two images or more (residuals to the batch's own class means), an EMA over
batches, detached. The margin of the true class is 0; head classes (r_y -> 0) are left alone.
It is pairwise and shaped by the head's own geometry, so unlike a class constant it cannot be
undone by a threshold. Ours, not the paper's (issue 25, candidate 2).

Cost: Sigma is [D, D] (768 x 768 on ViT-B/16); each step computes W Sigma ([C, D] x [D, D]) and the
batch's rows of W Sigma W^T ([B, C]).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sage_cli.losses.compensation import gather_batch


class SpreadMargin(nn.Module):
    """The pairwise margins [B, C] of a batch (0 on each true class); ``update`` folds in its head inputs."""

    def __init__(self, class_counts: torch.Tensor, weight: float, kappa: float, ema: float, dim: int) -> None:
        super().__init__()
        counts = class_counts.detach().float()
        self.weight = float(weight)
        self.ema = float(ema)
        self.register_buffer("shrink", kappa / (counts + kappa))  # r_y, [C]
        self.register_buffer("covariance", torch.zeros(dim, dim))  # Sigma [D, D], pooled within-class
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, head_input: torch.Tensor, labels: torch.Tensor) -> None:
        """Fold one batch's normalised head inputs [B, D] into the pooled within-class covariance."""
        features, labels = gather_batch(F.normalize(head_input.detach().float(), dim=-1), labels)
        dim = features.shape[1]
        num_classes = self.shrink.shape[0]
        counts = torch.zeros(num_classes, device=features.device).index_add_(0, labels, torch.ones_like(
            labels, dtype=features.dtype))
        means = torch.zeros(num_classes, dim, device=features.device).index_add_(0, labels, features)
        means = means / counts.clamp_min(1)[:, None]
        residuals = features - means[labels]  # 0 for a class's only image
        dof = (counts - 1).clamp_min(0).sum()  # sum over classes of (n_c - 1)
        batch = residuals.t() @ residuals / dof.clamp_min(1)
        momentum = torch.where(self.num_updates > 0, self.ema, 0.0)  # first informative batch: take it
        momentum = torch.where(dof > 0, momentum, 1.0)  # a batch of singletons changes nothing
        self.covariance.mul_(momentum).add_((1 - momentum) * batch)
        self.num_updates += (dof > 0).long()

    def forward(self, labels: torch.Tensor, head_weight: torch.Tensor, scale: float) -> torch.Tensor:
        """0.5 lambda_s r_y s^2 (w_j - w_y)^T Sigma (w_j - w_y) for each image's label y and every j: [B, C]."""
        rows = F.normalize(head_weight.float(), dim=-1)  # [C, D], with gradient
        spread = rows @ self.covariance  # [C, D]
        quadratic = (spread * rows).sum(-1)  # w_j^T Sigma w_j, [C]
        cross = spread[labels] @ rows.t()  # w_y^T Sigma w_j, [B, C]
        variance = (quadratic[None, :] + quadratic[labels, None] - 2 * cross).clamp_min(0)
        variance = variance.scatter(1, labels[:, None], 0.0)  # the true class: exactly 0
        return 0.5 * self.weight * scale ** 2 * self.shrink[labels, None] * variance
