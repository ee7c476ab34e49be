"""Images/s of `sage train --method linear --no-augment` with and without the feature cache.

ViT-B/16 with random weights (no download) on generated ImageNet-like JPEGs
(benchmarks/input/imagenet_like.py), one torch thread. Three runs of the same recipe:

- **images**: every epoch decodes and runs the frozen tower over every image (today's linear);
- **cache, first run**: one pass of the tower per split writes the feature cache, then the epochs
  train the head on it;
- **cache, reused**: a later run (another seed) finds the features on disk.

Images/s is training images seen / the run's wall time (`sage train` start to end, model build
included), and images / train_time_s of train.json beside it.

    .venv/bin/python benchmarks/train_speed/bench_linear_cache.py --json benchmarks/train_speed/cpu_linear_cache_t1.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "input"))
import imagenet_like  # noqa: E402

from sage_cli import artifacts  # noqa: E402
from sage_cli.encode_text import EncodeTextConfig  # noqa: E402
from sage_cli.encode_text import run as encode_text  # noqa: E402
from sage_cli.train import build_train_config  # noqa: E402
from sage_cli.train import run as train  # noqa: E402


def write_prepared(directory: Path, images: list[Path], num_classes: int) -> Path:
    labels = np.arange(len(images)) % num_classes
    artifacts.write_table(directory, artifacts.MANIFEST, {
        "sample_id": list(range(len(images))), "path": [str(p) for p in images], "label": labels.tolist(),
        "split": ["train"] * len(images)})
    counts = np.bincount(labels, minlength=num_classes)
    artifacts.write_table(directory, artifacts.CLASSES, {
        "class_id": list(range(num_classes)), "name": [f"class {i}" for i in range(num_classes)],
        "train_count": counts.tolist(), "prior": (counts / counts.sum()).tolist(), "group": ["many"] * num_classes})
    record = artifacts.build_record("prepare", {"dataset": "bench-linear", "n": len(images)}, dataset="bench-linear",
                                    image_root=str(directory))
    artifacts.write_record(directory, artifacts.PREPARE_RECORD, record)
    return directory


def time_run(options: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    record = train(build_train_config(options)).record
    wall = time.perf_counter() - start
    return {"wall_s": wall, "images_seen": record["images_seen"], "images_per_s_wall": record["images_seen"] / wall,
            "train_time_s": record["train_time_s"], "images_per_s_train": record["images_per_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = list(os.getloadavg())
    work = Path(tempfile.mkdtemp(prefix="bench-linear-"))
    prepared = write_prepared(work / "prepared", imagenet_like.write_images(work / "jpegs", args.images), args.classes)
    encode_text(EncodeTextConfig(prepared=prepared, out=work / "text", model=args.model, pretrained="none",
                                 templates="single", device="cpu"))
    base = {"prepared": prepared, "text_cache": work / "text", "method": "linear", "augment": False,
            "epochs": args.epochs, "batch_size": args.batch, "num_workers": 0, "device": "cpu", "seed": 0,
            "eval_every": 0}
    runs = {
        "images": time_run({**base, "out": work / "run_images"}),
        "cache_first_run": time_run({**base, "out": work / "run_cache", "feature_cache": work / "features"}),
        "cache_reused": time_run({**base, "out": work / "run_reused", "seed": 1, "feature_cache": work / "features"}),
    }
    result = {"model": args.model, "threads": args.threads, "images": args.images, "epochs": args.epochs,
              "batch": args.batch, "load_average_before_after": [load_before, list(os.getloadavg())],
              "cpu": imagenet_like_cpu(), "runs": runs,
              "reused_over_images_wall": runs["cache_reused"]["images_per_s_wall"] / runs["images"]["images_per_s_wall"]}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


def imagenet_like_cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
