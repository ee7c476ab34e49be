"""CLIP image preprocessing for training and evaluation, and a record of the protocol used.

Train: RandomResizedCrop (LIFT's scale 0.08..1) + horizontal flip at the model's image size, with
its mean / std and interpolation. Eval (:func:`build_eval_transform`): resize the shorter side,
centre crop; ``--eval-resize clip`` resizes to the crop size (open_clip's own eval transform),
``lift`` to size * 8 // 7 (LIFT's test transform: 224 -> 256 -> 224). ``--interpolation`` sets the
resize of both (LIFT: bilinear, torchvision's default; open_clip's CLIP configs: bicubic).
:func:`apply_preprocessing` puts a run's choices into its backbone record, which every later
stage (report, export, predict, the caches) reads. Both change accuracy by points, so train.json
records them.

The fast path (:mod:`sage_cli.image_cache`, :class:`CachedTrainTransform`) runs the same steps on
uint8 tensors of cached images: the same RandomResizedCrop parameters (drawn by the same
torchvision function from the same seed, so the same box for an image of the same size, and the
same regions of the original for a uniformly shrunk one), the same interpolation (torchvision's
antialiased uint8 kernel, within a fraction of a grey level of PIL's on average).

Training reads both paths as uint8 batches (:mod:`sage_cli.pixels`): the transforms of a run stop
at uint8 pixels (:func:`to_uint8_transform`) and the device normalises each batch exactly as
ToTensor + Normalize do.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torchvision import transforms as T
from torchvision.transforms import v2

from sage_cli.backbone import LoadedClip
from sage_cli.data import Transform
from sage_cli.pixels import Normalize, UInt8Transform, keep_pixels

CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
FLIP_P = 0.5


def to_rgb(image: Any) -> Any:
    """A PIL image in RGB (open_clip's and LIFT's loaders both convert)."""
    return image.convert("RGB")


def eval_resize_size(record: dict[str, Any]) -> int:
    """The shorter side the eval transform resizes to before its centre crop (see the module doc)."""
    short = min(record["image_size"])
    return short * 8 // 7 if record.get("eval_resize", "clip") == "lift" else short


def build_eval_transform(record: dict[str, Any]) -> Transform:
    """PIL image -> normalised [3, H, W]: the eval transform of a backbone record (a run's, an export's)."""
    if record.get("eval_resize", "clip") == "clip":
        from open_clip.transform import PreprocessCfg, image_transform_v2

        cfg = PreprocessCfg(size=tuple(record["image_size"]), mean=tuple(record["mean"]), std=tuple(record["std"]),
                            interpolation=record.get("interpolation", "bicubic"),
                            resize_mode=record.get("resize_mode", "shortest"))
        return image_transform_v2(cfg, is_train=False)
    interpolation = T.InterpolationMode(record.get("interpolation", "bicubic"))
    return T.Compose([
        T.Resize(eval_resize_size(record), interpolation=interpolation),
        T.CenterCrop(tuple(record["image_size"])),
        to_rgb,
        T.ToTensor(),
        T.Normalize(record["mean"], record["std"]),
    ])


def apply_preprocessing(clip: LoadedClip, eval_resize: str, interpolation: str = "model") -> LoadedClip:
    """``clip`` with a run's ``--eval-resize`` and ``--interpolation`` ("model": the model's own) in its
    record and transforms (what every later stage reads)."""
    own = clip.record.get("interpolation", "bicubic")
    record = {**clip.record, "interpolation": own if interpolation in (None, "model") else interpolation}
    if eval_resize != "clip":  # a record without the key is open_clip's resize (runs before the option)
        record["eval_resize"] = eval_resize
    if record == clip.record:
        return clip
    return dataclasses.replace(clip, record=record, preprocess_eval=build_eval_transform(record),
                               preprocess_train=build_train_transform(record))


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


def to_uint8_transform(transform: Transform) -> Transform:
    """``transform`` stopping at uint8 pixels: a Compose ending in ToTensor + Normalize becomes a
    :class:`~sage_cli.pixels.UInt8Transform` of its steps before them plus PILToTensor, finished by
    the same mean / std on the device. Any other transform is returned as it is (float batches)."""
    steps = list(getattr(transform, "transforms", ()))
    if len(steps) < 2 or not isinstance(steps[-2], T.ToTensor) or not isinstance(steps[-1], T.Normalize):
        return transform
    normalize = steps[-1]
    return UInt8Transform(T.Compose([*steps[:-2], T.PILToTensor()]), Normalize(normalize.mean, normalize.std))


class CachedTrainTransform:
    """:func:`build_train_transform`'s geometric steps on a cached uint8 [3, H, W] image, without
    PIL: uint8 [3, h, w] out (the device normalises, :mod:`sage_cli.pixels`).

    The crop box is drawn by the very function the plain path's RandomResizedCrop calls
    (``get_params``, same draws from the same generator), the flip by the same ``rand(1) < p``;
    the box is resized by torchvision's uint8 kernel with the same interpolation (antialiased).
    Called directly rather than through v2.Compose, whose dispatch costs ~0.1 ms a step.
    """

    def __init__(self, record: dict[str, Any]) -> None:
        self.size = list(record["image_size"])
        self.interpolation = v2.InterpolationMode(record.get("interpolation", "bicubic"))

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        top, left, height, width = T.RandomResizedCrop.get_params(pixels, list(CROP_SCALE), list(CROP_RATIO))
        crop = v2.functional.resize_image(pixels[:, top:top + height, left:left + width], self.size,
                                          interpolation=self.interpolation, antialias=True)
        if torch.rand(1) < FLIP_P:
            crop = crop.flip(-1)
        return crop  # uint8 [3, h, w]


def build_cached_transforms(record: dict[str, Any], augment: bool) -> tuple[UInt8Transform, UInt8Transform]:
    """(train, eval) transforms of cached pixels, stopping at uint8: the train view's crops, the
    eval view's tensors as stored.

    Without ``augment`` the train split is read from the eval view, like the plain path's eval transform.
    """
    normalize = Normalize(record["mean"], record["std"])
    eval_transform = UInt8Transform(keep_pixels, normalize)
    return (UInt8Transform(CachedTrainTransform(record), normalize) if augment else eval_transform), eval_transform


def build_transforms(clip: LoadedClip, augment: bool) -> tuple[Transform, Transform]:
    """(train, eval) transforms of a run (the record's: :func:`apply_preprocessing`), stopping at uint8 (:func:`to_uint8_transform`); ``augment``
    False trains on the eval transform."""
    eval_transform = to_uint8_transform(clip.preprocess_eval)
    train_transform = to_uint8_transform(build_train_transform(clip.record)) if augment else eval_transform
    return train_transform, eval_transform


def describe_preprocessing(record: dict[str, Any], augment: bool) -> dict[str, Any]:
    """The crop protocol and interpolation, for train.json and the printed summary."""
    size = record["image_size"]
    interpolation = record.get("interpolation", "bicubic")
    resize_mode = record.get("resize_mode", "shortest")
    eval_protocol = f"resize ({resize_mode} side) to {eval_resize_size(record)} px + centre crop {size[0]}x{size[1]}"
    train_protocol = (
        f"RandomResizedCrop {size[0]}x{size[1]} scale {list(CROP_SCALE)} ratio [3/4, 4/3] + horizontal flip p={FLIP_P}"
        if augment else f"as eval ({eval_protocol})"
    )
    return {
        "image_size": list(size),
        "interpolation": interpolation,
        "resize_mode": resize_mode,
        "eval_resize": record.get("eval_resize", "clip"),
        "mean": record["mean"],
        "std": record["std"],
        "train": train_protocol,
        "eval": eval_protocol,
    }
