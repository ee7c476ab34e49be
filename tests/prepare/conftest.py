"""Builders of fake dataset roots in tmp_path: split-file benchmarks, CIFAR pickles, folders, CSVs."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361", "n01494475"]
TRAIN_COUNTS = [120, 60, 25, 10, 3]  # many, medium, medium, few, few


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_split_root(root: Path, prefix: str, folders: list[str], counts: dict[str, list[int]],
                     files: dict[str, str], images: bool = True) -> Path:
    """Split files ``files[split]`` listing ``<split>/<folder>/<i>.jpg <label>`` lines; empty images."""
    for split, per_class in counts.items():
        lines = []
        for label, (folder, n) in enumerate(zip(folders, per_class)):
            for i in range(n):
                rel = f"{split}/{folder}/{prefix}_{label}_{i}.jpg"
                lines.append(f"{rel} {label}")
                if images:
                    (root / rel).parent.mkdir(parents=True, exist_ok=True)
                    (root / rel).touch()
        (root / files[split]).write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def imagenet_root(tmp_path: Path) -> Path:
    """A 5-class ImageNet-LT layout with a LOC_synset_mapping.txt."""
    root = tmp_path / "imagenet"
    root.mkdir()
    files = {s: f"ImageNet_LT_{s}.txt" for s in ("train", "val", "test")}
    write_split_root(root, "img", WNIDS, {"train": TRAIN_COUNTS, "val": [2] * 5, "test": [4] * 5}, files)
    mapping = ["tench, Tinca tinca", "goldfish, Carassius auratus", "great white shark, white shark",
               "cock", "hen"]
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} {n}\n" for w, n in zip(WNIDS, mapping)))
    return root


@pytest.fixture
def places_root(tmp_path: Path) -> Path:
    root = tmp_path / "places"
    root.mkdir()
    folders = ["a/airfield", "a/apartment_building/outdoor", "b/bakery/shop"]
    files = {s: f"Places_LT_{s}.txt" for s in ("train", "val", "test")}
    return write_split_root(root, "p", folders, {"train": [30, 12, 4], "val": [1] * 3, "test": [2] * 3}, files)


@pytest.fixture
def inat_root(tmp_path: Path) -> Path:
    root = tmp_path / "inat"
    root.mkdir()
    folders = ["Plantae/0", "Aves/1", "Insecta/2"]
    files = {"train": "iNaturalist18_train.txt", "test": "iNaturalist18_val.txt"}
    write_split_root(root, "i", folders, {"train": [40, 8, 2], "test": [3] * 3}, files)
    categories = [{"id": 2, "name": "Apis mellifera", "supercategory": "Insecta"},
                  {"id": 0, "name": "Quercus robur"}, {"id": 1, "name": "Turdus merula"}]
    (root / "categories.json").write_text(__import__("json").dumps(categories))
    return root


def write_cifar(root: Path, train_per_class: int = 500, test_per_class: int = 100, seed: int = 0) -> Path:
    """A fake ``cifar-100-python`` in the official format: pickled dicts with bytes keys."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = rng.permutation(np.repeat(np.arange(100), per_class))
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        payload = {b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
                   b"fine_labels": labels.tolist(), b"coarse_labels": (labels // 5).tolist(), b"data": data}
        (root / split).write_bytes(pickle.dumps(payload, protocol=2))
    meta = {b"fine_label_names": [f"class_{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"super_{i}".encode() for i in range(20)]}
    (root / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return root


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar(tmp_path_factory.mktemp("cifar") / "cifar-100-python")


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file's bytes under ``directory`` (to show that a refused run changed nothing)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}
