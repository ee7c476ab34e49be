"""The spread margin: a pairwise training margin for classes whose few images understate their spread.

A class seen through n_y images looks tighter on its training images than it is on new ones: its
training cosine margins overstate its test margins, and the more so as n_y falls (measured on world
v3: few 0.124 -> 0.053 from train to val, many 0.089 -> 0.078; benchmarks/methods/TRIALS-v3.md).
In the spirit of implicit semantic augmentation (ISDA, Wang et al.), each training logit of a
rival class j is raised by half the variance the logit difference z_j - z_y would have if the
image were redrawn from its class with the unseen part of the spread:

    z'_ij = z_ij + 0.5 * lambda_s * r_y * V[y, j],    r_y = kappa / (n_y + kappa),
    V[y, j] = Var(z_j - z_y) = C[j, j] + C[y, y] - 2 C[y, j]

C [C, C]: the within-class covariance of the logits, pooled over every training image (residuals
to EMA class means of the logits, itself an EMA, detached). V[y, y] = 0, so the true class's own
logit is never moved; head classes (r_y -> 0) are left as they are. C is the covariance of
s cos(h, w) over images, i.e. s^2 W Sigma W^T at the current head for the pooled covariance Sigma
of the head's inputs: the issue's 0.5 lambda s^2 (w_j - w_y)^T Sigma_y (w_j - w_y) with
Sigma_y = r_y Sigma, read from the logits (no gradient through W in the margin). The margin is
pairwise, so unlike a class constant it cannot be undone by a threshold. Ours, not the paper's.

Memory: two [C, C] float32 buffers (80 classes: 51 KB; 1,000: 8 MB; 8,142: 530 MB).
"""

from __future__ import annotations

import torch
from torch import nn

from sage_cli.losses.compensation import gather_batch


class SpreadMargin(nn.Module):
    """The pairwise margin 0.5 lambda_s r_y V[y, j] [B, C] of a batch's labels; ``update`` folds in its logits."""

    def __init__(self, class_counts: torch.Tensor, weight: float, kappa: float, ema: float) -> None:
        super().__init__()
        counts = class_counts.detach().float()
        num_classes = counts.shape[0]
        self.weight = float(weight)
        self.ema = float(ema)
        self.register_buffer("shrink", kappa / (counts + kappa))  # r_y, [C]
        self.register_buffer("logit_means", torch.zeros(num_classes, num_classes))  # EMA mean logit vector per class
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))  # [C]
        self.register_buffer("covariance", torch.zeros(num_classes, num_classes))  # C, pooled within-class
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Fold one batch's (detached) logits [B, C] into the class means and the pooled covariance."""
        logits, labels = gather_batch(logits.detach().float(), labels)  # every rank folds in the global batch
        num_classes = self.logit_means.shape[0]
        counts = torch.zeros(num_classes, device=logits.device).index_add_(0, labels, torch.ones_like(labels,
                                                                                                       dtype=torch.float))
        sums = torch.zeros_like(self.logit_means).index_add_(0, labels, logits)  # [C, C]
        present = counts > 0
        keep = torch.where(present, torch.where(self.seen, self.ema, 0.0), 1.0)[:, None]  # first sight: take it
        self.logit_means.mul_(keep).add_((1 - keep) * sums / counts.clamp_min(1)[:, None])
        self.seen |= present
        residuals = logits - self.logit_means[labels]  # [B, C]
        batch = residuals.t() @ residuals / max(len(labels), 1)  # [C, C]
        momentum = torch.where(self.num_updates > 0, self.ema, 0.0)
        momentum = torch.where(counts.sum() > 0, momentum, 1.0)  # an empty batch changes nothing
        self.covariance.mul_(momentum).add_((1 - momentum) * batch)
        self.num_updates += (counts.sum() > 0).long()

    def pair_variance(self) -> torch.Tensor:
        """V [C, C]: V[y, j] = C[j, j] + C[y, y] - 2 C[y, j], the variance of z_j - z_y (0 on the diagonal)."""
        diagonal = self.covariance.diagonal()
        return (diagonal[None, :] + diagonal[:, None] - 2 * self.covariance).clamp_min(0)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        """The margins [B, C] added to the batch's adjusted logits (0 on each true class)."""
        return 0.5 * self.weight * self.shrink[labels, None] * self.pair_variance()[labels]
