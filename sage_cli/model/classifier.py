"""SageClassifier: a frozen CLIP image tower (tuned by a PEFT module) plus a head."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import ExitStack

import torch
import torch.nn.functional as F
from torch import nn

from sage_cli.errors import SageError
from sage_cli.model.adapters import SGAdapter
from sage_cli.model.features import PRE_PROJ, encode_tower, map_text_to_pre_projection, resolve_head_feature
from sage_cli.model.head import build_head
from sage_cli.model.head_init import draw_random_rows
from sage_cli.model.peft import PeftContext, inject_peft
from sage_cli.model.protocol import AdapterModule, mark_only_trainable
from sage_cli.schema import ModelConfig

logger = logging.getLogger(__name__)


class SageClassifier(nn.Module):
    """logits = head(h(x)) with h(x) the feature the head reads (``config.head.feature``) of the (tuned) tower.

    ``pre-proj`` (LIFT's): h(x) is the tower's class token after ``ln_post``, before ``proj``
    [B, W]; ``projected``: h(x) = f(x), CLIP's image feature [B, E] (:mod:`sage_cli.model.features`).
    Whatever the head reads, the features handed to the loss (:meth:`forward_with_features`) are
    v(x) = normalize(f(x)) in CLIP's joint space, where the class texts live: the compensation's
    statistics and the guidance's routing work there.

    ``tuned`` names the tower parameters the PEFT module trains (under ``visual``); with the head's
    they make :attr:`trainable_names`, the one list that sets ``requires_grad``, gives the
    optimizer its parameters and is what :meth:`trainable_state_dict` saves.

    With routed or gated guidance (a :class:`~sage_cli.model.adapters.GuidanceBank` with ``top_k``
    or ``gate``) every pass through the tower is two: the frozen tower first (adapters bypassed, no
    gradient), whose features pick each image's top-k guidance tokens and/or its zero-shot gate,
    then the tuned tower under that routing.
    """

    def __init__(self, visual: nn.Module, head: nn.Module, config: ModelConfig, tuned: Sequence[str] = ()) -> None:
        super().__init__()
        self.visual = visual
        self.head = head
        self.config = config
        self.head_feature = resolve_head_feature(visual, config.head.feature)  # what the head reads on this tower
        self.pre_projection = self.head_feature == PRE_PROJ
        # proj [W, E] of the tower, kept in a tuple so it is not registered twice (it is visual's).
        self._projection = (visual.proj,) if self.pre_projection else ()
        self.reads_features = False  # True: inputs are cached head features, not images (read_cached_features)
        self._compiled_pass: tuple[nn.Module, ...] = ()  # compile_tower's; a tuple: not registered as a submodule
        head_names = [f"head.{name}" for name, _ in head.named_parameters()] if config.head.train else []
        self.trainable_names: tuple[str, ...] = tuple(f"visual.{name}" for name in tuned) + tuple(head_names)
        mark_only_trainable(self, self.trainable_names)
        banks = {id(a.guidance): a.guidance for a in self.adapters()
                 if a.guidance is not None and a.guidance.needs_frozen_pass}
        self._routed_banks = tuple(banks.values())  # a tuple: not registered again as a submodule

    @property
    def joint_dim(self) -> int:
        """E: the width of CLIP's joint space, of v(x) and of the class texts."""
        return int(self._projection[0].shape[1]) if self.pre_projection else int(self.head.weight.shape[1])

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """v(x): L2-normalised image features [B, E] (what ``encode_image(normalize=True)`` gives)."""
        return F.normalize(self.encode_raw(images), dim=-1)

    def encode_raw(self, images: torch.Tensor) -> torch.Tensor:
        """f(x): the tower's image features [B, E], before normalisation (routed guidance: see the class)."""
        return self.encode_both(images)[1]

    def encode_head_input(self, images: torch.Tensor) -> torch.Tensor:
        """h(x): the feature the head reads, before normalisation ([B, W] pre-proj, [B, E] projected)."""
        return self.encode_both(images)[0]

    def encode_both(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h(x), f(x)) of one pass through the tower (two with routed guidance: see the class)."""
        if not self._routed_banks:
            return self.run_tower_both(images)
        with torch.no_grad(), ExitStack() as stack:
            for bank in self._routed_banks:
                stack.enter_context(bank.bypassed())
            frozen = self.run_tower_both(images)[1]  # [B, E]: the frozen tower's features
        with ExitStack() as stack:
            for bank in self._routed_banks:
                stack.enter_context(bank.routed(frozen))
            return self.run_tower_both(images)

    def run_tower(self, images: torch.Tensor) -> torch.Tensor:
        """One pass of the image tower as it is set now: f(x) [B, E]."""
        return self.run_tower_both(images)[1]

    def run_tower_both(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass of the image tower as it is set now: (h(x), f(x))."""
        if self.pre_projection and self.reads_features:  # images are cached h(x) [B, W]
            return images, images @ self._projection[0].to(images.dtype)
        if self._compiled_pass:
            return self._compiled_pass[0](images)
        return encode_tower(self.visual, images, self.pre_projection)

    def read_cached_features(self) -> None:
        """From now on the inputs are cached h(x) of the frozen tower (``--feature-cache``), not images."""
        self.visual = nn.Identity()
        self.reads_features = True
        self._compiled_pass = ()  # it ran the tower, which is gone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(images)[0]  # [B, C]

    def forward_with_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [B, C], v(x) [B, E]) from one pass."""
        return self.forward_with_head_input(images)[:2]

    def forward_with_head_input(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits [B, C], v(x) [B, E], the head's input [B, D]: normalised for a cosine head) from one pass."""
        head_input, raw = self.encode_both(images)
        features = F.normalize(raw, dim=-1)
        if self.head.normalized_input:
            head_input = features if not self.pre_projection else F.normalize(head_input, dim=-1)
        return self.head(head_input), features, head_input

    def compile_tower(self, **options: object) -> None:
        """``torch.compile`` the image tower in place (``options`` go to torch.compile); the head and
        whatever reads the logits (the loss) stay eager. Parameter names and the state dict do not
        change. Routed guidance compiles two graphs, the frozen pass's and the tuned one's. The
        compiled function is the whole pass the head reads (with a pre-projection head the tower's
        forward is not called: :func:`~sage_cli.model.features.encode_tower` runs its pieces)."""
        tower_pass = _TowerPass(self.visual, self.pre_projection)
        tower_pass.compile(**options)
        self._compiled_pass = (tower_pass,)

    def train(self, mode: bool = True) -> SageClassifier:
        # The frozen tower stays in eval mode (no patch dropout); inserted modules and head follow ``mode``.
        super().train(mode)
        self.visual.eval()
        for module in self.visual.modules():
            if isinstance(module, AdapterModule):
                module.train(mode)
        return self

    def adapters(self) -> list[SGAdapter]:
        return [m for m in self.modules() if isinstance(m, SGAdapter)]

    def checkpoint_names(self) -> list[str]:
        """Names of the tensors a checkpoint holds: exactly the trainable parameters."""
        return list(self.trainable_names)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [param for _, param in self.named_trainable_parameters()]

    def named_trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` of each trainable parameter, in :attr:`trainable_names` order."""
        params = dict(self.named_parameters())
        return [(name, params[name]) for name in self.trainable_names]

    def summary(self) -> dict[str, object]:
        """Resolved settings for run records: PEFT module, head, bottleneck, blocks, counts."""
        adapters = self.adapters()
        guidance = adapters[0].guidance if adapters else None
        return {
            "peft": self.config.peft.module if self.config.peft is not None else None,
            "head": self.config.head.kind,
            "head_feature": self.head_feature,
            "head_init": self.config.head.init,
            "bottleneck": adapters[0].bottleneck if adapters else None,
            "adapter_blocks": len(adapters),
            "guidance_tokens": guidance.num_tokens if guidance is not None else None,
            "guidance_topk": guidance.top_k if guidance is not None else None,
            "guidance_gate": guidance.gate if guidance is not None else None,
            "num_classes": self.head.weight.shape[0],
            "trainable_params": self.num_trainable,
        }

    @property
    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trainable tensors (detached), keyed by name; never a frozen backbone weight."""
        params = dict(self.named_parameters())
        return {name: params[name].detach() for name in self.trainable_names}

    def load_trainable_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load what :meth:`trainable_state_dict` wrote; a SageError on any key or shape mismatch."""
        params = dict(self.named_parameters())
        expected = set(self.trainable_names)
        missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
        if missing or unexpected:
            raise SageError(
                f"adapter checkpoint does not fit this model (PEFT module {self.summary()['peft']}): "
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


class _TowerPass(nn.Module):
    """(h(x), f(x)) of one tower pass as a module, so ``torch.compile`` captures exactly what runs."""

    def __init__(self, visual: nn.Module, pre_projection: bool) -> None:
        super().__init__()
        self.visual = visual
        self.pre_projection = pre_projection

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return encode_tower(self.visual, images, self.pre_projection)


def _preview(names: list[str], limit: int = 3) -> str:
    if not names:
        return "none"
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def build_classifier(
    clip_model: nn.Module, class_embeddings: torch.Tensor, cfg: ModelConfig,
    head_vectors: torch.Tensor | None = None,
) -> SageClassifier:
    """Freeze ``clip_model``, apply ``cfg.peft`` (if any) to its image tower in place, add ``cfg.head``.

    ``class_embeddings`` [C, E]: the L2-normalised class vectors of the text cache; they are the
    guidance tokens and the head's initial weight (mapped by normalize(t @ proj.T) for a pre-proj
    head) unless ``head_vectors`` [C, D] (another ``head.init``, in the head's feature space) is given;
    ``head.init`` random draws unit rows of that space's width from torch's (seeded) generator.
    """
    device = next(clip_model.parameters()).device
    class_embeddings = _check_class_embeddings(clip_model, class_embeddings).to(device)
    clip_model.requires_grad_(False)
    visual = clip_model.visual
    tuned: list[str] = []
    if cfg.peft is not None:
        tuned = inject_peft(cfg.peft.module, visual, PeftContext(cfg.peft, class_embeddings))
    if head_vectors is not None:
        vectors = head_vectors.detach().float().to(device)
    elif resolve_head_feature(visual, cfg.head.feature) == PRE_PROJ:
        vectors = map_text_to_pre_projection(class_embeddings, visual.proj)  # [C, W]
    else:
        vectors = class_embeddings
    if cfg.head.init == "random":  # from scratch: only the width comes from the text vectors
        vectors = draw_random_rows(*vectors.shape).to(vectors.device)
    head = build_head(cfg.head.kind, vectors, cfg.head.scale).to(device)
    classifier = SageClassifier(visual, head, cfg, tuned)
    classifier.train(clip_model.training)
    logger.info("classifier (%s): %d trainable parameters", cfg.peft.module if cfg.peft else "head only",
                classifier.num_trainable)
    return classifier


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
