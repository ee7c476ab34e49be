"""Images/s of the training input path: LIFT's (PIL decode + RandomResizedCrop + flip + normalise)
against the toolkit's fast path (crops from the decoded-image cache), per core and end to end.

Runs on generated ImageNet-like JPEGs (imagenet_like.py: ~400x350, ~110 KB), with ViT-B/16's
preprocessing (224 px, bicubic, CLIP mean / std), in one process with one torch thread. Modes are
timed in interleaved rounds (round robin) on the same images, so load from other processes on a
shared machine hits every mode alike; per-core figures are images per CPU second of this process
(and per wall second beside them), medians over rounds; ratios are taken within each round.

    .venv/bin/python benchmarks/input/bench_input.py --json benchmarks/input/cpu_t1.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import imagenet_like  # noqa: E402

from sage_cli import artifacts  # noqa: E402
from sage_cli.data import ManifestDataset, StepBatchSampler, build_loader, load_prepared_data  # noqa: E402
from sage_cli.image_cache import CachedImageDataset, Geometry, build_image_cache, load_image_cache  # noqa: E402
from sage_cli.train.transforms import build_cached_transforms, build_train_transform, to_uint8_transform  # noqa: E402

# ViT-B/16's preprocessing record (what build_backbone_record gives for ViT-B-16), without building it
VIT_B16 = {"model": "ViT-B-16", "image_size": [224, 224], "interpolation": "bicubic", "resize_mode": "shortest",
           "mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}


def build_eval_transform(record: dict[str, Any]) -> Any:
    from open_clip.transform import PreprocessCfg, image_transform_v2

    cfg = PreprocessCfg(size=tuple(record["image_size"]), mean=tuple(record["mean"]), std=tuple(record["std"]),
                        interpolation=record["interpolation"], resize_mode=record["resize_mode"])
    return image_transform_v2(cfg, is_train=False)


def write_prepared(directory: Path, images: list[Path]) -> Path:
    """A prepared dataset (every image in the train split, one class) in sage prepare's shape."""
    artifacts.write_table(directory, artifacts.MANIFEST, {
        "sample_id": list(range(len(images))), "path": [str(p) for p in images],
        "label": [0] * len(images), "split": ["train"] * len(images)})
    artifacts.write_table(directory, artifacts.CLASSES, {
        "class_id": [0], "name": ["x"], "train_count": [len(images)], "prior": [1.0], "group": ["many"]})
    record = artifacts.build_record("prepare", {"dataset": "bench-input", "n": len(images)}, dataset="bench-input",
                                    image_root=str(directory))
    artifacts.write_record(directory, artifacts.PREPARE_RECORD, record)
    return directory


def time_per_core(fn: Callable[[int], Any], first: int, count: int, n: int) -> tuple[float, float]:
    """(images per CPU second, images per wall second) of ``fn(i)`` over ``n`` calls from image ``first``.

    CPU time is this process's (one torch thread): what one core does, whatever else runs on
    the machine; the wall figure also counts the time other processes held the core.
    """
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(first, first + n):
        fn(i % count)
    return n / (time.process_time() - cpu), n / (time.perf_counter() - wall)


def time_loader(dataset: Any, workers: int, batch: int, images: int, warmup: int = 1,
                device: str | torch.device = "cpu") -> float:
    """Images/s of a DataLoader over the dataset (seeded sampler, as in training), counted after
    ``warmup`` batches, over at least ``images`` images; epochs follow each other as in training.

    The warm-up must cover the workers' first round (``2 * workers`` batches are requested at once,
    the DataLoader's prefetch): until those are consumed the rate is the workers' start, not their
    steady output. ``device`` "cuda" pins memory as training does.
    """
    sampler = StepBatchSampler(len(dataset), seed=0, batch_size=batch, micro_batch_size=batch)
    loader = build_loader(dataset, batch, workers, torch.device(device), batch_sampler=sampler)
    batches = iterate_epochs(loader, sampler)
    for _ in range(warmup):
        next(batches)
    start, seen = time.perf_counter(), 0
    while seen < images:
        seen += len(next(batches).labels)
    rate = seen / (time.perf_counter() - start)
    batches.close()
    del loader
    return rate


def iterate_epochs(loader: Any, sampler: StepBatchSampler) -> Iterator[Any]:
    """The loader's batches, epoch after epoch (the sampler set to each epoch in turn)."""
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def build_train_datasets(data: Any, cache_dir: Path, record: dict[str, Any]) -> tuple[Any, Any]:
    """(plain, fast): `sage train`'s training set of ``data`` through PIL decode (LIFT's pipeline)
    and through the image cache in ``cache_dir``, for the backbone ``record``'s preprocessing. Both
    stop at uint8 pixels, as in training (the loader normalises each batch, sage_cli.pixels)."""
    train = data.split("train")
    plain = ManifestDataset(train, data.image_root, to_uint8_transform(build_train_transform(record)))
    fast_tf, _ = build_cached_transforms(record, augment=True)
    fast = CachedImageDataset(load_image_cache(cache_dir, data, record), train, "train", fast_tf)
    return plain, fast


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-input-"))
    paths = imagenet_like.write_images(work / "jpegs", args.images, seed=0)
    prepared = write_prepared(work / "prepared", paths)
    data = load_prepared_data(prepared)
    geometry = Geometry.from_record(VIT_B16, args.short_side)
    start = time.perf_counter()
    build_image_cache(data, build_eval_transform(VIT_B16), geometry, work / f"cache{args.short_side}", force=True)
    cache_build = len(paths) / (time.perf_counter() - start)
    plain, fast = build_train_datasets(data, work / f"cache{args.short_side}", VIT_B16)
    modes = per_core_modes(paths, plain, fast)
    rounds: dict[str, list[float]] = {name: [] for name in modes}
    walls: dict[str, list[float]] = {name: [] for name in modes}
    for r in range(args.rounds):
        for name, fn in modes.items():
            cpu_rate, wall_rate = time_per_core(fn, r * args.per_round, len(paths), args.per_round)
            rounds[name].append(cpu_rate)
            walls[name].append(wall_rate)
    loader: dict[str, list[float]] = {}
    for workers in args.workers:
        for name, dataset in (("lift", plain), ("fast", fast)):
            loader[f"{name}_w{workers}"] = [time_loader(dataset, workers, args.batch, args.loader_images)]
    return summarise(args, paths, rounds, walls, loader, cache_build, work)


def per_core_modes(paths: list[Path], plain: ManifestDataset, fast: CachedImageDataset) -> dict[str, Callable]:
    """The pipelines timed per core, each called with an image index (and a seed, for the crops)."""
    from torchvision.io import decode_jpeg, read_file
    from torchvision.transforms import v2

    size = tuple(VIT_B16["image_size"])
    tensor_tf = v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.08, 1.0), interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
        v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(VIT_B16["mean"], VIT_B16["std"]),
    ])
    return {
        "lift": lambda i: plain[(i, i)],  # the toolkit's plain path is LIFT's pipeline
        "decode_jpeg_v2": lambda i: tensor_tf(decode_jpeg(read_file(str(paths[i])))),
        "pil_decode_only": lambda i: Image.open(paths[i]).convert("RGB"),
        "fast": lambda i: fast[(i, i)],
    }


def summarise(args: argparse.Namespace, paths: list[Path], rounds: dict[str, list[float]],
              walls: dict[str, list[float]], loader: dict[str, list[float]], cache_build: float,
              work: Path) -> dict[str, Any]:
    ratios = [f / lift for f, lift in zip(rounds["fast"], rounds["lift"])]
    wall_ratios = [f / lift for f, lift in zip(walls["fast"], walls["lift"])]
    return {
        "machine": {"cpu": cpu_model(), "cores_visible": len(os.sched_getaffinity(0)), "platform": platform.platform(),
                    "load_average_before_after": [args.load_before, list(os.getloadavg())]},
        "threads": args.threads, "torch": torch.__version__,
        "images": imagenet_like.describe_images(paths),
        "short_side": args.short_side,
        "cache_build_images_per_s": cache_build,
        "cache_bytes_per_image": (work / f"cache{args.short_side}" / "train.u8").stat().st_size / len(paths),
        "per_core_images_per_cpu_s": {k: statistics.median(v) for k, v in rounds.items()},
        "per_core_images_per_wall_s": {k: statistics.median(v) for k, v in walls.items()},
        "per_core_rounds_cpu": rounds,
        "fast_over_lift_per_round_cpu": ratios,
        "fast_over_lift_median_cpu": statistics.median(ratios),
        "fast_over_lift_median_wall": statistics.median(wall_ratios),
        "loader_images_per_s": {k: v[0] for k, v in loader.items()},
        "loader_batch": args.batch,
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256, help="generated JPEGs")
    parser.add_argument("--short-side", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--per-round", type=int, default=64, help="images per mode and round")
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--loader-images", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", help="directory for the JPEGs and the cache (default: a temp dir)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    args.load_before = list(os.getloadavg())
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
