"""Test-time ensembling: five crops (four corners and the centre) of a slightly larger resize.

As in the method spec (LIFT's protocol): resize the shorter side to ``image_size + 24`` px, take
the five ``image_size`` crops, classify each and average the logits. The transform returns a
``[5, 3, H, W]`` tensor per image; :func:`compute_ensembled_logits` folds the crop axis back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torchvision import transforms as T

TTE_MARGIN = 24  # px added to the image size before cropping
NUM_CROPS = 5

_INTERPOLATION = {
    "bicubic": T.InterpolationMode.BICUBIC,
    "bilinear": T.InterpolationMode.BILINEAR,
    "nearest": T.InterpolationMode.NEAREST,
}


def build_five_crop_transform(backbone_record: dict[str, Any]) -> Callable[[Any], torch.Tensor]:
    """PIL image -> ``[5, 3, H, W]`` normalised crops, from a backbone record (``LoadedClip.record``)."""
    height, width = backbone_record["image_size"]
    interpolation = _INTERPOLATION.get(str(backbone_record.get("interpolation", "bicubic")), T.InterpolationMode.BICUBIC)
    to_tensor = T.Compose([T.ToTensor(), T.Normalize(backbone_record["mean"], backbone_record["std"])])
    resize = T.Resize(min(height, width) + TTE_MARGIN, interpolation=interpolation)
    five_crop = T.FiveCrop((height, width))

    def transform(image: Any) -> torch.Tensor:
        crops = five_crop(resize(image.convert("RGB")))  # (tl, tr, bl, br, centre)
        return torch.stack([to_tensor(crop) for crop in crops])

    return transform


def compute_ensembled_logits(model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """Logits [B, C] of ``images`` [B, 3, H, W], or the mean over crops of ``images`` [B, V, 3, H, W]."""
    if images.ndim == 4:
        return model(images).float()
    batch, views = images.shape[:2]
    logits = model(images.flatten(0, 1)).float()  # [B * V, C]
    return logits.view(batch, views, -1).mean(dim=1)
