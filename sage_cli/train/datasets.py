"""The train and eval datasets of a run: JPEGs through PIL (the plain path), an image cache, or
cached frozen features (:func:`use_cached_features`, head-only methods).

With ``--image-cache`` the pixels come from :mod:`sage_cli.image_cache` (decoded once, memory-
mapped) and go through the tensor transforms of :func:`~sage_cli.train.transforms.build_cached_transforms`;
without it, every image is decoded with PIL and transformed as LIFT does. Both give the same
augmentation distribution and the same eval tensors (docs/training.md, "Fast input path").
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from sage_cli.backbone import LoadedClip
from sage_cli.data import ManifestDataset
from sage_cli.errors import SageError
from sage_cli.feature_cache import FeatureDataset, compute_key_inputs, feature_dir, load_or_compute_features
from sage_cli.image_cache import CachedImageDataset, load_image_cache
from sage_cli.train.config import TrainConfig
from sage_cli.train.inputs import TrainInputs
from sage_cli.train.transforms import build_cached_transforms, build_transforms


def build_datasets(config: TrainConfig, inputs: TrainInputs, clip: LoadedClip) -> tuple[Dataset, Dataset | None]:
    """(train set, eval set or None) of the run, from the image cache when ``config`` names one."""
    data, eval_split = inputs.data, inputs.eval_split
    if config.data.image_cache is None:
        train_tf, eval_tf = build_transforms(clip, config.data.augment)
        skip_bad = config.data.skip_bad
        train_set = ManifestDataset(data.split("train"), data.image_root, train_tf, skip_bad=skip_bad)
        eval_set = (ManifestDataset(data.split(eval_split), data.image_root, eval_tf, skip_bad=skip_bad)
                    if eval_split else None)
        return train_set, eval_set
    cache = load_image_cache(config.data.image_cache, data, clip.record)
    train_tf, eval_tf = build_cached_transforms(clip.record, config.data.augment)
    train_view = "train" if config.data.augment else "eval"
    train_set = CachedImageDataset(cache, data.split("train"), train_view, train_tf)
    eval_set = CachedImageDataset(cache, data.split(eval_split), "eval", eval_tf) if eval_split else None
    return train_set, eval_set


def use_cached_features(
    config: TrainConfig, inputs: TrainInputs, classifier: nn.Module, datasets: tuple[Dataset, Dataset | None],
    clip_record: dict, device: torch.device, world_size: int = 1,
) -> tuple[Dataset, Dataset | None, str]:
    """``--feature-cache``: the frozen tower's h(x), the feature the head reads, for the train and
    eval splits (computed once from ``datasets``, the un-augmented eval tensors, then read from
    disk), and ``classifier`` switched to read them in place of images, so that the Trainer trains
    the head on them unchanged.

    Returns (train set, eval set, the cache key's directory).
    """
    if world_size > 1:
        raise SageError("--feature-cache trains in one process (seconds on a CPU); run it without torchrun")
    key_inputs = compute_key_inputs(clip_record, inputs.data, device, classifier.head_feature,
                                    config.run.precision)
    out: list[Dataset | None] = []
    for split, dataset in (("train", datasets[0]), (inputs.eval_split, datasets[1])):
        if dataset is None:
            out.append(None)
            continue
        rows = inputs.data.split(split)
        features, _ = load_or_compute_features(
            config.data.feature_cache, key_inputs, split, classifier.encode_head_input, dataset,
            rows["sample_id"].to_numpy(), device, config.data.micro_batch, config.data.num_workers,
            config.run.precision)
        out.append(FeatureDataset(features, rows["label"].to_numpy()))
    classifier.read_cached_features()  # the head now reads the cached features
    return out[0], out[1], str(feature_dir(config.data.feature_cache, key_inputs))


def describe_input(config: TrainConfig) -> str:
    """Where the run's pixels (or features) come from, for train.json's ``preprocessing``."""
    if config.data.feature_cache is not None:
        return f"cached frozen features ({config.data.feature_cache})"
    if config.data.image_cache is not None:
        return f"image cache ({config.data.image_cache})"
    return "JPEG decode (PIL)"
