"""Writes a prepared dataset, a sage-tiny text cache and a finished sage run with today's code."""
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sage_cli import artifacts
from sage_cli.encode_text import EncodeTextConfig, run as encode
from sage_cli.train import build_train_config, run

root = Path(sys.argv[1])
prepared = root / "prepared"
images = prepared / "images"
images.mkdir(parents=True)
rng = np.random.default_rng(0)
colours = ((220, 40, 40), (40, 200, 60), (50, 70, 230), (230, 210, 40))
rows = {"sample_id": [], "path": [], "label": [], "split": []}
counts = (4, 3, 2, 1)
for split, per in [("train", counts), ("val", (1,) * 4)]:
    for label, n in enumerate(per):
        for _ in range(n):
            i = len(rows["sample_id"])
            px = np.clip(np.array(colours[label]) + rng.integers(-60, 60, size=(8, 8, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(images / f"{i}.png")
            for k, v in zip(rows, (i, f"{i}.png", label, split)):
                rows[k].append(v)
artifacts.write_table(prepared, artifacts.MANIFEST, rows)
total = sum(counts)
artifacts.write_table(prepared, artifacts.CLASSES, {
    "class_id": list(range(4)), "name": ["red square", "green circle", "blue triangle", "yellow star"],
    "train_count": list(counts), "prior": [c / total for c in counts], "group": ["many", "medium", "few", "few"]})
artifacts.write_record(prepared, artifacts.PREPARE_RECORD, artifacts.build_record(
    "prepare", {"dataset": "v1-fixture", "seed": 0}, dataset="v1-fixture", image_root="images",
    counts={"train": total, "val": 4}, group_thresholds={"many": 3, "few": 2}))
torch.manual_seed(0)
encode(EncodeTextConfig(prepared=prepared, out=root / "text", model="sage-tiny", pretrained="none",
                        templates="single", device="cpu"))
options = {"method": "sage", "prepared": prepared, "text_cache": root / "text", "out": root / "run",
           "epochs": 2, "batch_size": 4, "num_workers": 0, "augment": False, "device": "cpu", "lr": 0.05,
           "bottleneck": 2}
run(build_train_config(options))
