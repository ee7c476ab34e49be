"""The train and eval datasets of a run: JPEGs through PIL (the plain path) or an image cache.

With ``--image-cache`` the pixels come from :mod:`sage_cli.image_cache` (decoded once, memory-
mapped) and go through the tensor transforms of :func:`~sage_cli.train.transforms.build_cached_transforms`;
without it, every image is decoded with PIL and transformed as LIFT does. Both give the same
augmentation distribution and the same eval tensors (docs/training.md, "Fast input path").
"""

from __future__ import annotations

from torch.utils.data import Dataset

from sage_cli.backbone import LoadedClip
from sage_cli.data import ManifestDataset
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
