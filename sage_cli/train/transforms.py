"""CLIP image preprocessing for training and evaluation, and a record of the protocol used.

Train: RandomResizedCrop (LIFT's scale 0.08..1) + horizontal flip at the model's image size, with
its mean / std and interpolation. Eval: open_clip's own eval transform (resize the shorter side,
centre crop). Both change accuracy by points, so train.json records them.
"""

from __future__ import annotations

from typing import Any

from torchvision import transforms as T

from sage_cli.backbone import LoadedClip
from sage_cli.data import Transform

CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
FLIP_P = 0.5


def build_train_transform(record: dict[str, Any]) -> Transform:
    """RandomResizedCrop + flip + normalise, at the backbone record's size and interpolation."""
    size = tuple(record["image_size"])
    interpolation = T.InterpolationMode(record.get("interpolation", "bicubic"))
    return T.Compose([
        T.RandomResizedCrop(size, scale=CROP_SCALE, ratio=CROP_RATIO, interpolation=interpolation, antialias=True),
        T.RandomHorizontalFlip(FLIP_P),
        T.ToTensor(),
        T.Normalize(record["mean"], record["std"]),
    ])


def build_transforms(clip: LoadedClip, augment: bool) -> tuple[Transform, Transform]:
    """(train, eval) transforms; ``augment`` False trains on the eval transform."""
    eval_transform = clip.preprocess_eval
    return (build_train_transform(clip.record) if augment else eval_transform), eval_transform


def describe_preprocessing(record: dict[str, Any], augment: bool) -> dict[str, Any]:
    """The crop protocol and interpolation, for train.json and the printed summary."""
    size = record["image_size"]
    interpolation = record.get("interpolation", "bicubic")
    resize_mode = record.get("resize_mode", "shortest")
    eval_protocol = f"resize ({resize_mode} side) to {size[0]} px + centre crop {size[0]}x{size[1]}"
    train_protocol = (
        f"RandomResizedCrop {size[0]}x{size[1]} scale {list(CROP_SCALE)} ratio [3/4, 4/3] + horizontal flip p={FLIP_P}"
        if augment else f"as eval ({eval_protocol})"
    )
    return {
        "image_size": list(size),
        "interpolation": interpolation,
        "resize_mode": resize_mode,
        "mean": record["mean"],
        "std": record["std"],
        "train": train_protocol,
        "eval": eval_protocol,
    }
