"""SageClassifier: a frozen CLIP image tower (with or without adapters) plus a cosine head."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from sage_cli.errors import SageError
from sage_cli.model.adapters import GuidanceBank, SGAdapter
from sage_cli.model.config import AdapterConfig, compute_default_bottleneck
from sage_cli.model.guidance import build_guidance_tokens
from sage_cli.model.head import CosineHead
from sage_cli.model.surgery import get_vision_blocks, inject_adapters, iter_adapter_parameters

logger = logging.getLogger(__name__)


class SageClassifier(nn.Module):
    """logits = s * cos(v(x), w) with v(x) the normalised image feature of the (adapted) tower.

    Only adapter and head parameters are trainable; :meth:`trainable_state_dict` holds exactly
    those (never the backbone), keyed by their names in this module.
    """

    def __init__(self, visual: nn.Module, head: CosineHead, config: AdapterConfig) -> None:
        super().__init__()
        self.visual = visual
        self.head = head
        self.config = config

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """v(x): L2-normalised image features [B, E] (what ``encode_image(normalize=True)`` gives)."""
        features = self.visual(images)
        if isinstance(features, tuple):  # towers built with output_tokens=True
            features = features[0]
        return F.normalize(features, dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(images))  # [B, C]

    def forward_with_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [B, C], features [B, E]) from one pass."""
        features = self.encode(images)
        return self.head(features), features

    def train(self, mode: bool = True) -> SageClassifier:
        # The frozen tower stays in eval mode (no patch dropout); adapters and head follow ``mode``.
        super().train(mode)
        self.visual.eval()
        for module in self.adapters():
            module.train(mode)
        return self

    def adapters(self) -> list[SGAdapter]:
        return [m for m in self.modules() if isinstance(m, SGAdapter)]

    def checkpoint_names(self) -> list[str]:
        """Names of the parameters a checkpoint holds: every adapter parameter and the head."""
        names = [name for name, _ in iter_adapter_parameters(self)]
        return names + [f"head.{name}" for name, _ in self.head.named_parameters()]

    def summary(self) -> dict[str, object]:
        """Resolved settings for run records: method, bottleneck, blocks, guidance tokens, counts."""
        adapters = self.adapters()
        guidance = adapters[0].guidance if adapters else None
        return {
            "method": self.config.method,
            "bottleneck": adapters[0].bottleneck if adapters else None,
            "adapter_blocks": len(adapters),
            "guidance_tokens": guidance.num_tokens if guidance is not None else None,
            "num_classes": self.head.weight.shape[0],
            "trainable_params": self.num_trainable,
        }

    @property
    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Adapter + head tensors (detached), keyed by name; never a backbone weight."""
        params = dict(self.named_parameters())
        return {name: params[name].detach() for name in self.checkpoint_names()}

    def load_trainable_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load what :meth:`trainable_state_dict` wrote; a SageError on any key or shape mismatch."""
        params = dict(self.named_parameters())
        expected = set(self.checkpoint_names())
        missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
        if missing or unexpected:
            raise SageError(
                f"adapter checkpoint does not fit this model (method {self.config.method}): "
                f"missing {_preview(missing)}, unexpected {_preview(unexpected)}"
            )
        for name in sorted(expected):
            if tuple(state_dict[name].shape) != tuple(params[name].shape):
                raise SageError(
                    f"adapter checkpoint tensor {name} has shape {tuple(state_dict[name].shape)}, "
                    f"this model expects {tuple(params[name].shape)}"
                )
        with torch.no_grad():
            for name in expected:
                params[name].copy_(state_dict[name])


def _preview(names: list[str], limit: int = 3) -> str:
    if not names:
        return "none"
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def build_classifier(
    clip_model: nn.Module, class_embeddings: torch.Tensor, cfg: AdapterConfig
) -> SageClassifier:
    """Freeze ``clip_model``, inject adapters into its image tower in place (sage/lift), add the head.

    ``class_embeddings`` [C, E]: the L2-normalised class vectors of the text cache; they initialise
    the head and (sage) are the guidance tokens.
    """
    device = next(clip_model.parameters()).device
    class_embeddings = _check_class_embeddings(clip_model, class_embeddings).to(device)
    clip_model.requires_grad_(False)
    visual = clip_model.visual
    if cfg.use_adapters:
        _add_adapters(visual, class_embeddings, cfg, device)
    head = CosineHead(class_embeddings, cfg.logit_scale).to(device)
    if cfg.method == "zeroshot":
        head.requires_grad_(False)
    classifier = SageClassifier(visual, head, cfg)
    classifier.train(clip_model.training)
    logger.info("classifier %s: %d trainable parameters", cfg.method, classifier.num_trainable)
    return classifier


def _add_adapters(
    visual: nn.Module, class_embeddings: torch.Tensor, cfg: AdapterConfig, device: torch.device
) -> None:
    num_classes = class_embeddings.shape[0]
    bottleneck = cfg.bottleneck or compute_default_bottleneck(num_classes, len(get_vision_blocks(visual)))
    if bottleneck % cfg.attn_heads:
        raise SageError(f"--attn-heads {cfg.attn_heads} must divide the bottleneck size {bottleneck}")
    bank = None
    if cfg.use_guidance:
        bank = GuidanceBank(build_guidance_tokens(class_embeddings, cfg.guidance_tokens))

    def make_adapter(width: int) -> SGAdapter:
        return SGAdapter(width, bottleneck, bank, cfg.attn_heads, cfg.activation)

    injected = inject_adapters(visual, make_adapter, cfg.blocks)
    for adapter in injected.values():
        adapter.to(device)
    logger.info(
        "adapters: %d blocks, bottleneck %d, guidance %s",
        len(injected), bottleneck, f"{bank.num_tokens} tokens" if bank is not None else "off",
    )


def _check_class_embeddings(clip_model: nn.Module, class_embeddings: torch.Tensor) -> torch.Tensor:
    if class_embeddings.ndim != 2 or class_embeddings.shape[0] < 1:
        shape = tuple(class_embeddings.shape)
        raise SageError(f"class embeddings must be a [C, E] matrix; got shape {shape}")
    width = getattr(clip_model.visual, "output_dim", None)
    if width is not None and class_embeddings.shape[1] != width:
        raise SageError(
            f"class embeddings have dimension {class_embeddings.shape[1]} but the model's image "
            f"features have {width}: the text cache comes from another model"
        )
    return class_embeddings.detach().float()
