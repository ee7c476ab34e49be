"""The classification task: a classifier and its loss behind one ``forward(batch)``.

In the spirit of open_clip's and timm's ``task/``: the :class:`ClassificationTask` owns the
classifier and the loss; ``forward(batch)`` returns ``{"loss", "logits", "features", "samples"}``,
feeding the loss the image features when it needs them (the semantic compensation's statistics),
passing an empty micro-batch (every image unreadable) to the loss so its collective statistics
still meet the other ranks' (its loss a zero that reaches every trainable parameter, so that its
backward meets the other ranks' gradient all-reduce under DDP), and running under the one autocast
rule (:mod:`sage_cli.precision`).
The trainable parameters and their state dict come from the classifier's one adapter protocol
(:mod:`sage_cli.model.protocol`), so what trains is what is saved. The Trainer sees only this.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from sage_cli.config import option_label
from sage_cli.errors import SageError
from sage_cli.losses import build_loss
from sage_cli.losses.classification import HeadView
from sage_cli.model import SageClassifier, build_classifier
from sage_cli.model.head import CosineHead
from sage_cli.precision import autocast
from sage_cli.schema import LossConfig, ModelConfig


class ClassificationTask(nn.Module):
    """``classifier`` + ``loss`` on ``device``; see the module docstring."""

    def __init__(self, classifier: SageClassifier, loss: nn.Module, device: torch.device,
                 precision: str = "auto") -> None:
        super().__init__()
        self.classifier = classifier
        self.loss = loss
        self.device = torch.device(device)
        self.precision = precision  # --precision: the autocast the forward runs under

    def forward(self, batch: Sequence[Any]) -> dict[str, Any]:
        """Loss and logits of one micro-batch ``(images [B, 3, H, W] or None, labels [B], ...)``.

        ``loss`` is the batch mean (for a batch without images, :meth:`empty_loss`); ``samples`` its size.
        """
        images, labels = batch[0], batch[1]
        if images is None:
            self.loss.observe_empty(self.feature_dim, self.device)
            return {"loss": self.empty_loss(), "logits": None, "features": None, "samples": 0}
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        with autocast(self.device, self.precision):
            logits, features, head_input = self.classifier.forward_with_head_input(images)  # [B, C], [B, E], [B, D]
        head = self.classifier.head  # the spread margin reads the head's input and rows
        extra = {"head": HeadView(head_input, head.weight, head.scale)} if self.loss.needs_head else {}
        loss = self.loss(logits, labels, features if self.loss.needs_features else None, **extra)
        return {"loss": loss, "logits": logits, "features": features, "samples": int(len(labels))}

    def empty_loss(self) -> torch.Tensor:
        """0 as a function of every trainable parameter: its backward gives each of them a zero gradient.

        DDP all-reduces gradients from the backward of every rank's synced micro-batch; a rank whose
        micro-batch holds no image runs this backward so that it still takes part.
        """
        return torch.stack([p.sum() for p in self.trainable_parameters()]).sum() * 0.0

    def normaliser(self, batch: Sequence[Any]) -> float:
        """The loss's denominator on ``batch``'s labels (host; 0 for an empty batch): what the loop
        sums over a step's micro-batches and ranks to weight each one's loss."""
        return self.loss.normaliser(batch[1])

    @property
    def feature_dim(self) -> int:
        """E: the width of v(x), the features the loss sees (CLIP's joint space, whatever the head reads)."""
        return self.classifier.joint_dim

    def trainable_parameters(self) -> list[nn.Parameter]:
        return self.classifier.trainable_parameters()

    def named_trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return self.classifier.named_trainable_parameters()

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return self.classifier.trainable_state_dict()

    def load_trainable_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.classifier.load_trainable_state_dict(state_dict)

    @property
    def num_trainable(self) -> int:
        return self.classifier.num_trainable

    def summary(self) -> dict[str, object]:
        return self.classifier.summary()


def build_task(
    clip_model: nn.Module, class_embeddings: torch.Tensor, class_counts: torch.Tensor,
    model: ModelConfig, loss: LossConfig, device: torch.device, head_vectors: torch.Tensor | None = None,
    zero_shot_features: tuple[torch.Tensor, torch.Tensor] | None = None, precision: str = "auto",
) -> ClassificationTask:
    """The classifier of ``model`` on ``clip_model`` (changed in place) and the ``loss``.

    ``zero_shot_features``: the frozen tower's (features, labels) of the training split, for a
    compensation estimator fitted from them (``compensation="zero-shot"``).
    """
    classifier = build_classifier(clip_model, class_embeddings, model, head_vectors)
    loss_fn = build_loss(loss, class_counts, class_embeddings, model.head.scale, zero_shot_features,
                         head_dim=classifier.head.weight.shape[1]).to(device)
    if loss_fn.needs_head and not isinstance(classifier.head, CosineHead):
        raise SageError(f"{option_label('spread')} reads a cosine head's rows; got {option_label('head')} "
                        f"{model.head.kind}")
    return ClassificationTask(classifier, loss_fn, device, precision)
