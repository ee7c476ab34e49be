"""Generated ImageNet-like JPEGs: photo-like sizes, content and file sizes, without a download.

ImageNet's training JPEGs average about 110 KB at about 400x350 px. A smooth synthetic image
compresses to a fraction of that and decodes faster than a photograph, which flatters every
input pipeline; so each image here is a smooth colour field (objects and background), plus
mid-frequency texture, plus per-pixel noise, with the amplitudes chosen so that JPEG quality 93
gives ImageNet's mean file size. Sizes vary around 400x350 (width 300..500, height 260..440).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

QUALITY = 93
TEXTURE_AMPLITUDE = 40.0
NOISE_SIGMA = 26.0


def generate_image(rng: np.random.Generator) -> Image.Image:
    """One photo-like RGB image of about 400x350 px."""
    width, height = int(rng.integers(300, 501)), int(rng.integers(260, 441))
    field = rng.uniform(0, 255, size=(5, 6, 3)).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(field).resize((width, height), Image.BICUBIC), dtype=np.float32)
    coarse = rng.normal(0, 1, size=(height // 2 + 1, width // 2 + 1)).astype(np.float32)
    texture = np.asarray(Image.fromarray(((coarse + 4) * 32).clip(0, 255).astype(np.uint8)).resize(
        (width, height), Image.BILINEAR), dtype=np.float32) / 32 - 4  # [H, W], ~unit variance
    noise = rng.normal(0, NOISE_SIGMA, size=(height, width, 3)).astype(np.float32)
    pixels = smooth + TEXTURE_AMPLITUDE * texture[..., None] + noise
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def write_images(directory: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` JPEGs ``img_00000.jpg``... in ``directory`` (kept if already there)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        path = directory / f"img_{index:05d}.jpg"
        image = generate_image(rng)  # drawn even when the file exists: the set is a function of the seed
        if not path.exists():
            image.save(path, quality=QUALITY)
        paths.append(path)
    return paths


def describe_images(paths: list[Path]) -> dict[str, float]:
    """Mean file size (KB) and mean width / height of ``paths``."""
    sizes = [p.stat().st_size for p in paths]
    dims = [Image.open(p).size for p in paths]
    return {
        "count": len(paths),
        "mean_kb": float(np.mean(sizes) / 1000),
        "mean_width": float(np.mean([w for w, _ in dims])),
        "mean_height": float(np.mean([h for _, h in dims])),
        "jpeg_quality": QUALITY,
    }
