"""The ``synthetic`` source: coloured shapes on noise, long-tailed, deterministic by seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230), "yellow": (230, 210, 40),
           "purple": (140, 60, 190), "orange": (245, 140, 30)}
SHAPES = ("circle", "square", "triangle", "cross")
SIZE = 32


def _mask(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    dx, dy = x - cx, y - cy
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        return (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)
    if shape == "triangle":
        return (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
    return ((np.abs(dx) <= r * 0.3) & (np.abs(dy) <= r)) | ((np.abs(dy) <= r * 0.3) & (np.abs(dx) <= r))


def generate_synthetic(out: Path, *, imbalance_ratio: float = 30.0, max_count: int = 150,
                       val_per_class: int = 10, test_per_class: int = 20,
                       seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """Write PNGs to ``out/images`` and return (manifest, class names): 24 classes, 150 down to 5."""
    names = [f"{c} {s}" for s in SHAPES for c in COLOURS]
    counts = [int(max_count * imbalance_ratio ** (-i / (len(names) - 1))) for i in range(len(names))]
    rng = np.random.default_rng(seed)
    images = Path(out) / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for split, per_class in (("train", counts), ("val", [val_per_class] * len(names)),
                             ("test", [test_per_class] * len(names))):
        for label, n in enumerate(per_class):
            colour_name, shape = names[label].split(" ")
            for _ in range(n):
                pixels = rng.integers(0, 90, size=(SIZE, SIZE, 3)).astype(np.int16)
                cx, cy, r = rng.uniform(10, 22), rng.uniform(10, 22), rng.uniform(6, 10)
                pixels[_mask(shape, cx, cy, r)] = COLOURS[colour_name]
                sample_id = len(rows)
                path = f"{split}/{sample_id:06d}.png"
                (images / split).mkdir(exist_ok=True)
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(images / path)
                rows.append((sample_id, f"images/{path}", label, split))
    manifest = pd.DataFrame(rows, columns=["sample_id", "path", "label", "split"])
    return manifest, names
