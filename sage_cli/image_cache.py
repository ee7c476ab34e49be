"""The decoded-image cache: a prepared dataset's images decoded once, pre-resized, as raw uint8.

Decoding a JPEG costs more than everything else the input path does per image, and a training
run decodes every image once per epoch; so ``sage cache-images`` decodes them once into a cache
directory, an artifact of its own (``image_cache.json`` fingerprints the prepared dataset and the
geometry), and every later run and report reads pixels straight from a memory-mapped file.

Two views (one raw file each, rows ``[H, W, 3]`` uint8 RGB back to back; ``image_index.parquet``
holds each sample's offset and size):

- ``train`` (the train split): the decoded image, shrunk with the model's interpolation (PIL,
  antialiased) so that its shorter side is at most ``short_side``; aspect ratio kept, never
  enlarged. RandomResizedCrop's scale (a fraction of the image area) and ratio are invariant to
  a uniform resize, so crops of the cached image cover the same regions of the original, with
  the same distribution, as crops of the original do (:mod:`sage_cli.train.transforms`).
- ``eval`` (every split): the model's eval geometry (open_clip's resize + centre crop, applied by
  open_clip's own transforms to the decoded image), so that the eval tensors equal the plain
  path's exactly; the train split is there too, for no-augmentation passes (frozen features).

The memory map is opened lazily in each process and never pickled, so DataLoader workers and DDP
ranks each map the same read-only file.

The cache is sealed: ``image_cache.json`` holds its own sha256, that of ``image_index.parquet``
(checked at every open: it is small) and the size and sha256 of each view's raw file, hashed as it
is written. A view file of another size is refused at once (truncated); its content is hashed again
only when its identity on disk (size, inode, mtime, ctime) differs from the one remembered in
``.verified.json`` after the last check, so that a 100 GB cache costs a full read once after it
changes (about a minute at disk speed), not at every run; a file changed in place (a zeroed or
rewritten view) changes its mtime/ctime and is hashed, and refused, before anything trains on it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from sage_cli import artifacts
from sage_cli.backbone import build_backbone
from sage_cli.data import Key, PreparedData, cpu_seeded, load_image
from sage_cli.errors import SageError
from sage_cli.locks import lock_output_dir

logger = logging.getLogger(__name__)

STAGE = "cache-images"
RECORD = "image_cache.json"
VIEWS = ("train", "eval")
VIEW_FILES = {"train": "train.u8", "eval": "eval.u8"}
OUTPUTS = (artifacts.IMAGE_INDEX.filename, *VIEW_FILES.values())
VERIFIED = ".verified.json"  # view file -> its identity on disk when its sha256 was last checked
DEFAULT_SHORT_SIDE = 320
FORMAT = "raw uint8 RGB rows [H, W, 3], C order, back to back; offsets in image_index.parquet"

PixelTransform = Callable[[torch.Tensor], torch.Tensor]  # uint8 [3, H, W] -> float [3, h, w]


@dataclass(frozen=True)
class Geometry:
    """What decides a cache's pixels besides the images: the train view's short side and the model's
    eval preprocessing (size, interpolation, resize mode, eval resize: ``--eval-resize``)."""

    short_side: int
    image_size: tuple[int, int]
    interpolation: str
    resize_mode: str
    eval_resize: str = "clip"

    @classmethod
    def from_record(cls, backbone: dict[str, Any], short_side: int = DEFAULT_SHORT_SIDE) -> Geometry:
        return cls(int(short_side), tuple(backbone["image_size"]), backbone.get("interpolation", "bicubic"),
                   backbone.get("resize_mode", "shortest"), backbone.get("eval_resize", "clip"))

    def to_dict(self) -> dict[str, Any]:
        geometry = {"short_side": self.short_side, "image_size": list(self.image_size),
                    "interpolation": self.interpolation, "resize_mode": self.resize_mode}
        # open_clip's resize leaves no key: the fingerprint of a cache made before --eval-resize
        return {**geometry, "eval_resize": self.eval_resize} if self.eval_resize != "clip" else geometry


@dataclass(frozen=True)
class GeometricSteps:
    """The PIL -> PIL steps of an eval transform (picklable, for a process pool)."""

    steps: tuple[Any, ...]

    def __call__(self, image: Image.Image) -> Image.Image:
        for step in self.steps:
            image = step(image)
        return image


def split_eval_transform(eval_transform: Any) -> tuple[GeometricSteps, Any]:
    """(the geometric steps of open_clip's eval Compose, its Normalize): PIL -> PIL, then the rest.

    The cache stores the geometric steps' output; what follows them (to tensor, normalise) is
    applied on read, so the eval tensors are the plain path's exactly.
    """
    steps = list(getattr(eval_transform, "transforms", []))
    names = [type(step).__name__ for step in steps]
    tensor_at = next((i for i, name in enumerate(names) if name.endswith("ToTensor")), None)
    if tensor_at is None or names[tensor_at + 1:] != ["Normalize"]:
        raise SageError(f"cannot cache this eval transform (expected ... ToTensor, Normalize): {names}")
    return GeometricSteps(tuple(steps[:tensor_at])), steps[-1]


def compute_train_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the shorter side at most ``short_side``, aspect ratio kept (rounded)."""
    scale = short_side / min(width, height)
    if scale >= 1:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_for_train(image: Image.Image, short_side: int, interpolation: str) -> Image.Image:
    size = compute_train_size(*image.size, short_side)
    if size == image.size:
        return image
    return image.resize(size, resample=pil_filter(interpolation))


def pil_filter(interpolation: str) -> int:
    filters = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST,
               "lanczos": Image.LANCZOS}
    if interpolation not in filters:
        raise SageError(f"interpolation {interpolation!r}: not one of {', '.join(filters)}")
    return filters[interpolation]


# --------------------------------------------------------------------------------------------
# Building


@dataclass(frozen=True)
class CacheResult:
    """The cache directory and its record; ``skipped`` when it already held this exact cache."""

    out: Path
    record: dict[str, Any]
    skipped: bool = False


def compute_inputs(data: PreparedData, geometry: Geometry) -> dict[str, Any]:
    """What the cache's fingerprint covers: the prepared dataset, the geometry and the format."""
    return {
        "prepared": {"path": str(data.directory.resolve()), "fingerprint": data.record["fingerprint"]},
        "geometry": geometry.to_dict(),
        "format": FORMAT,
    }


def fingerprint_of(inputs: dict[str, Any]) -> str:
    """The part of the inputs that decides the pixels (the path may move; the content may not)."""
    return artifacts.sha256_json({k: v for k, v in inputs.items() if k != "prepared"}
                                 | {"prepared": inputs["prepared"]["fingerprint"]})


def build_image_cache(
    data: PreparedData, eval_transform: Any, geometry: Geometry, out: Path, force: bool = False, workers: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> CacheResult:
    """Decode every image of ``data`` into the two views under ``out``; see the module doc."""
    inputs = compute_inputs(data, geometry)
    fingerprint = fingerprint_of(inputs)
    if artifacts.guard_output_dir(out, RECORD, fingerprint, OUTPUTS, force):
        return CacheResult(out, artifacts.read_record(out, RECORD), skipped=True)
    (out / RECORD).unlink(missing_ok=True)  # the directory is incomplete until the record is back
    out.mkdir(parents=True, exist_ok=True)
    manifest = data.manifest.reset_index(drop=True)
    train_rows = manifest[manifest["split"] == "train"]
    geometric, _ = split_eval_transform(eval_transform)
    index: list[pd.DataFrame] = []
    counts: dict[str, int] = {}
    pixels: dict[str, dict[str, Any]] = {}
    for view, rows in (("train", train_rows), ("eval", manifest)):
        paths = [str(data.image_root / p) for p in rows["path"]]
        prepare = PreparedImage(view, geometry, geometric)
        sizes, sha256 = write_view(out / VIEW_FILES[view], paths, prepare, workers, view, progress)
        index.append(pd.DataFrame({"sample_id": rows["sample_id"].to_numpy(np.int64), "view": view,
                                   "offset": offsets_of(sizes), "height": sizes[:, 0], "width": sizes[:, 1]}))
        counts[view] = len(rows)
        pixels[VIEW_FILES[view]] = {"bytes": (out / VIEW_FILES[view]).stat().st_size, "sha256": sha256}
    artifacts.write_table(out, artifacts.IMAGE_INDEX, pd.concat(index, ignore_index=True))
    record = artifacts.build_record(STAGE, inputs, images=counts,
                                    bytes={v: pixels[f]["bytes"] for v, f in VIEW_FILES.items()}, pixels=pixels)
    record["fingerprint"] = fingerprint  # of the content: a moved prepared directory keeps its cache
    record = artifacts.seal_record(out, record, [artifacts.IMAGE_INDEX.filename])
    artifacts.write_record(out, RECORD, record)
    for name in VIEW_FILES.values():
        remember_verified(out, name, pixels[name]["sha256"])  # hashed as written: no second read
    return CacheResult(out, record)


@dataclass(frozen=True)
class PreparedImage:
    """Decode one image and shape it for a view (picklable, for a process pool)."""

    view: str
    geometry: Geometry
    geometric: GeometricSteps

    def __call__(self, path: str) -> np.ndarray:
        image = load_image(path)
        if self.view == "train":
            image = resize_for_train(image, self.geometry.short_side, self.geometry.interpolation)
        else:
            image = self.geometric(image).convert("RGB")
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))  # [H, W, 3]


def write_view(
    path: Path, paths: list[str], prepare: PreparedImage, workers: int, view: str,
    progress: Callable[[str, int, int], None] | None,
) -> tuple[np.ndarray, str]:
    """Write the rows of one view to ``path`` atomically; their (height, width) [N, 2] and the sha256
    of the file (hashed as it is written)."""
    sizes = np.zeros((len(paths), 2), dtype=np.int32)
    digest = hashlib.sha256()
    with artifacts.atomic_path(path) as tmp, open(tmp, "wb") as f:
        for i, pixels in enumerate(map_images(prepare, paths, workers)):
            sizes[i] = pixels.shape[:2]
            row = pixels.tobytes()
            digest.update(row)
            f.write(row)
            if progress is not None and ((i + 1) % 256 == 0 or i + 1 == len(paths)):
                progress(view, i + 1, len(paths))
        f.flush()
    return sizes, digest.hexdigest()


def map_images(prepare: PreparedImage, paths: list[str], workers: int) -> Iterator[np.ndarray]:
    if workers <= 0:
        yield from map(prepare, paths)
        return
    # fork where there is one: the children only decode with PIL (never CUDA), and start in
    # milliseconds instead of re-importing torch
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(workers) as pool:
        yield from pool.imap(prepare, paths, chunksize=32)


def offsets_of(sizes: np.ndarray) -> np.ndarray:
    """Byte offset of each row [N] from their (height, width) [N, 2]."""
    nbytes = sizes[:, 0].astype(np.int64) * sizes[:, 1] * 3
    return np.concatenate([[0], np.cumsum(nbytes)[:-1]]).astype(np.int64) if len(nbytes) else nbytes


# --------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class ImageCache:
    """A checked cache directory: its record, geometry and per-view index (sample_id -> row)."""

    directory: Path
    record: dict[str, Any]
    geometry: Geometry
    index: pd.DataFrame

    def rows(self, view: str, sample_ids: Iterable[int]) -> pd.DataFrame:
        """The index rows of ``view`` for ``sample_ids``, in their order; SageError if one is absent."""
        table = self.index[self.index["view"] == view].set_index("sample_id")
        ids = list(sample_ids)
        missing = pd.Index(ids).difference(table.index)
        if len(missing):
            raise SageError(f"{self.directory}: the {view} view has no image of sample {int(missing[0])}")
        return table.loc[ids].reset_index()


def check_image_cache_source(directory: str | os.PathLike[str], data: PreparedData) -> dict[str, Any]:
    """The record of the image cache in ``directory``; SageError unless it was built from ``data``."""
    directory = Path(directory)
    record = artifacts.read_record(directory, RECORD)
    built_from = record.get("inputs", {}).get("prepared", {})
    if built_from.get("fingerprint") != data.record["fingerprint"]:
        raise SageError(
            f"{directory}: image cache of another prepared dataset ({built_from.get('path')}), not "
            f"{data.directory}; run sage cache-images --prepared {data.directory} --out {directory} --force"
        )
    return record


def load_image_cache(directory: str | os.PathLike[str], data: PreparedData, backbone: dict[str, Any]) -> ImageCache:
    """Read ``directory`` and check it was built from ``data`` for ``backbone``'s eval geometry."""
    directory = Path(directory)
    record = check_image_cache_source(directory, data)
    geometry = Geometry(**{**record["inputs"]["geometry"],
                           "image_size": tuple(record["inputs"]["geometry"]["image_size"])})
    wanted = Geometry.from_record(backbone, geometry.short_side)
    if wanted != geometry:
        raise SageError(
            f"{directory}: image cache for eval geometry {geometry.to_dict()}, but {backbone['model']} "
            f"uses {wanted.to_dict()}; build a cache for this model"
        )
    pixels = record.get("pixels")
    if not isinstance(pixels, dict):
        raise SageError(f"{directory / RECORD}: records no sha256 of the pixels (an image cache of an earlier "
                        "sage); rebuild the cache with --force")
    for name in VIEW_FILES.values():
        check_view_file(directory, name, pixels.get(name) or {})
    index = artifacts.read_table(directory, artifacts.IMAGE_INDEX).to_pandas()
    return ImageCache(directory, record, geometry, index)


def check_view_file(directory: Path, name: str, expected: dict[str, Any]) -> None:
    """Refuse a view file that is missing, of another size than recorded, or (hashed when its identity
    on disk changed since its last check, see the module doc) of another sha256."""
    path = directory / name
    fix = f"rebuild the cache with sage cache-images --out {directory} --force"
    if not path.is_file():
        raise SageError(f"{path}: missing; {fix}")
    size = path.stat().st_size
    if size != expected.get("bytes"):
        raise SageError(f"{path}: {size} bytes, {directory / RECORD} records {expected.get('bytes')} (truncated or "
                        f"damaged); {fix}")
    if _load_verified(directory).get(name) == _identity(path, expected.get("sha256")):
        return
    logger.info("%s: checking the sha256 of %.1f GB (once; later runs skip it while the file is unchanged)",
                path, size / 1e9)
    if artifacts.sha256_file(path) != expected.get("sha256"):
        raise SageError(f"{path}: content differs from the sha256 recorded in {directory / RECORD} (damaged or "
                        f"changed since sage cache-images wrote it); {fix}")
    remember_verified(directory, name, expected["sha256"])


def _identity(path: Path, sha256: str | None) -> dict[str, Any]:
    info = path.stat()
    return {"bytes": info.st_size, "inode": info.st_ino, "mtime_ns": info.st_mtime_ns, "ctime_ns": info.st_ctime_ns,
            "sha256": sha256}


def _load_verified(directory: Path) -> dict[str, Any]:
    try:
        verified = json.loads((directory / VERIFIED).read_text())
    except (OSError, ValueError):
        return {}
    return verified if isinstance(verified, dict) else {}


def remember_verified(directory: Path, name: str, sha256: str) -> None:
    """Note that ``name`` has ``sha256`` as it is now on disk (skipped where the cache is read-only)."""
    verified = {**_load_verified(directory), name: _identity(directory / name, sha256)}
    with contextlib.suppress(OSError):
        artifacts.write_json_atomic(directory / VERIFIED, verified)


class CachedImageDataset(Dataset):
    """Samples of one split from one view of an :class:`ImageCache`: ``(image, label, sample_id)``.

    Keys as :class:`~sage_cli.data.ManifestDataset`'s (an index, or ``(index, seed)`` to run the
    transform under that torch seed), so the data order and resumption are unchanged.
    """

    def __init__(self, cache: ImageCache, samples: pd.DataFrame, view: str, transform: PixelTransform) -> None:
        rows = cache.rows(view, samples["sample_id"].tolist())
        self.path = str(cache.directory / VIEW_FILES[view])
        self.offsets = rows["offset"].to_numpy(np.int64)
        self.shapes = rows[["height", "width"]].to_numpy(np.int64)
        self.labels = samples["label"].to_numpy(dtype=np.int64)
        self.sample_ids = samples["sample_id"].to_numpy(dtype=np.int64)
        self.transform = transform
        self._pixels: np.memmap | None = None

    def __len__(self) -> int:
        return len(self.offsets)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pixels": None}  # each worker maps the file itself

    def read_pixels(self, index: int) -> torch.Tensor:
        """Row ``index`` as uint8 [3, H, W] (a copy, so the transform may write to it)."""
        if self._pixels is None:
            self._pixels = np.memmap(self.path, dtype=np.uint8, mode="r")
        height, width = self.shapes[index]
        start = self.offsets[index]
        row = np.array(self._pixels[start:start + height * width * 3]).reshape(height, width, 3)
        return torch.from_numpy(row).permute(2, 0, 1)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, int, int]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        pixels = self.read_pixels(index)
        if seed is None:
            image = self.transform(pixels)
        else:
            with cpu_seeded(seed):
                image = self.transform(pixels)
        return image, int(self.labels[index]), int(self.sample_ids[index])


# --------------------------------------------------------------------------------------------
# The stage


@dataclass(frozen=True)
class CacheImagesConfig:
    """``sage cache-images``: the prepared dataset, the backbone whose eval geometry to store, the train
    view's short side, the output directory and the decoding processes (0: this one)."""

    prepared: Path
    out: Path
    model: str
    pretrained: str
    short_side: int = DEFAULT_SHORT_SIDE
    workers: int = 0
    force: bool = False
    eval_resize: str = "clip"  # the run's --eval-resize and --interpolation (model: the model's own)
    interpolation: str = "model"

    def __post_init__(self) -> None:
        object.__setattr__(self, "prepared", Path(self.prepared))
        object.__setattr__(self, "out", Path(self.out))
        if self.short_side < 1:
            raise SageError(f"--short-side must be >= 1; got {self.short_side}")
        if self.workers < 0:
            raise SageError(f"--workers must be >= 0; got {self.workers}")
        if self.eval_resize not in ("lift", "clip"):
            raise SageError(f"--eval-resize must be lift or clip; got {self.eval_resize!r}")
        if self.interpolation not in ("model", "bilinear", "bicubic"):
            raise SageError(f"--interpolation must be model, bilinear or bicubic; got {self.interpolation!r}")


def run(config: CacheImagesConfig, progress: Callable[[str, int, int], None] | None = None) -> CacheResult:
    """Build (or find up to date) the image cache of ``config.prepared`` in ``config.out``."""
    from sage_cli.data import load_prepared_data

    data = load_prepared_data(config.prepared)
    from sage_cli.train.transforms import apply_preprocessing

    clip = build_backbone(config.model, config.pretrained, "cpu")
    clip = apply_preprocessing(clip, config.eval_resize, config.interpolation)
    geometry = Geometry.from_record(clip.record, config.short_side)
    if geometry.short_side < min(geometry.image_size):
        logger.warning("--short-side %d is below the model's %s px crops: train crops will be enlarged",
                       geometry.short_side, geometry.image_size)
    with lock_output_dir(config.out, STAGE):
        return build_image_cache(data, clip.preprocess_eval, geometry, config.out, config.force, config.workers,
                                 progress)
