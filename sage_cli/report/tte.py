"""Test-time ensembling: several views of each image, logits averaged (LIFT's ``tte_mode``s).

Modes (``TTE_MODES``), each a transform PIL image -> ``[V, 3, H, W]`` normalised views:

- ``five-crop`` (LIFT's default): resize the shorter side to ``image_size + expand`` px and take
  the five ``image_size`` crops (four corners and the centre); V = 5.
- ``ten-crop``: the five crops and their horizontal mirrors (torchvision's ``TenCrop``); V = 10.
- ``flip``: the plain eval view (resize, centre crop) and its horizontal mirror; V = 2.

``expand`` is LIFT's ``expand`` (24 px for ViT-B/16, 21 for ViT-L/14); the resize uses the
backbone's interpolation. :func:`compute_ensembled_logits` folds the view axis back by averaging
the logits, as LIFT does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torchvision import transforms as T

TTE_MARGIN = 24  # px added to the image size before cropping (LIFT's default ``expand``)
TTE_MODES = ("five-crop", "ten-crop", "flip")
VIEWS = {"five-crop": 5, "ten-crop": 10, "flip": 2}
NUM_CROPS = VIEWS["five-crop"]

_INTERPOLATION = {
    "bicubic": T.InterpolationMode.BICUBIC,
    "bilinear": T.InterpolationMode.BILINEAR,
    "nearest": T.InterpolationMode.NEAREST,
}


def build_tte_transform(
    backbone_record: dict[str, Any], mode: str = "five-crop", expand: int = TTE_MARGIN
) -> Callable[[Any], torch.Tensor]:
    """PIL image -> ``[V, 3, H, W]`` normalised views of ``mode``, from a backbone record (``LoadedClip.record``)."""
    if mode not in VIEWS:
        raise ValueError(f"unknown test-time ensembling mode {mode!r}; the modes are: {', '.join(TTE_MODES)}")
    height, width = backbone_record["image_size"]
    interpolation = _INTERPOLATION.get(str(backbone_record.get("interpolation", "bicubic")), T.InterpolationMode.BICUBIC)
    to_tensor = T.Compose([T.ToTensor(), T.Normalize(backbone_record["mean"], backbone_record["std"])])
    if mode == "flip":
        resize, crop = T.Resize(min(height, width), interpolation=interpolation), T.CenterCrop((height, width))

        def views(image: Any) -> list[Any]:
            view = crop(resize(image))
            return [view, T.functional.hflip(view)]
    else:
        resize = T.Resize(min(height, width) + expand, interpolation=interpolation)
        crops = T.FiveCrop((height, width)) if mode == "five-crop" else T.TenCrop((height, width))

        def views(image: Any) -> list[Any]:
            return list(crops(resize(image)))  # (tl, tr, bl, br, centre[, the same mirrored])

    def transform(image: Any) -> torch.Tensor:
        return torch.stack([to_tensor(view) for view in views(image.convert("RGB"))])

    return transform


def build_five_crop_transform(backbone_record: dict[str, Any]) -> Callable[[Any], torch.Tensor]:
    """PIL image -> ``[5, 3, H, W]``: LIFT's default protocol (``five-crop``, 24 px)."""
    return build_tte_transform(backbone_record, "five-crop", TTE_MARGIN)


def compute_ensembled_logits(model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """Logits [B, C] of ``images`` [B, 3, H, W], or the mean over views of ``images`` [B, V, 3, H, W]."""
    if images.ndim == 4:
        return model(images).float()
    batch, views = images.shape[:2]
    logits = model(images.flatten(0, 1)).float()  # [B * V, C]
    return logits.view(batch, views, -1).mean(dim=1)
