"""The decoded-image cache (sage cache-images) and the fast input path it feeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from sage_cli import artifacts
from sage_cli.cli import app
from sage_cli.data import ManifestDataset, StepBatchSampler, build_loader, load_image, load_prepared_data
from sage_cli.errors import SageError
from sage_cli.image_cache import (
    CacheImagesConfig,
    CachedImageDataset,
    compute_train_size,
    load_image_cache,
    run,
)
from sage_cli.backbone import build_backbone
from sage_cli.train.transforms import build_cached_transforms, build_train_transform

# (width, height) of the images: larger and smaller than the train view's short side 40, and square
SIZES = ((64, 48), (30, 52), (40, 40), (90, 36), (36, 36), (50, 70))
SHORT_SIDE = 40


def make_prepared(directory: Path, seed: int = 0, per_split: dict[str, int] | None = None) -> Path:
    """A prepared dataset of textured JPEGs of :data:`SIZES`, 2 classes, in the shape of sage prepare's."""
    per_split = per_split or {"train": 12, "val": 4, "test": 4}
    rng = np.random.default_rng(seed)
    images = directory / "images"
    images.mkdir(parents=True)
    rows: dict[str, list] = {"sample_id": [], "path": [], "label": [], "split": []}
    for split, count in per_split.items():
        for i in range(count):
            sample_id = len(rows["sample_id"])
            width, height = SIZES[sample_id % len(SIZES)]
            pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(images / f"{sample_id}.jpg", quality=90)
            for key, value in zip(rows, (sample_id, f"{sample_id}.jpg", i % 2, split)):
                rows[key].append(value)
    artifacts.write_table(directory, artifacts.MANIFEST, rows)
    train = per_split["train"]
    artifacts.write_table(directory, artifacts.CLASSES, {
        "class_id": [0, 1], "name": ["a", "b"], "train_count": [(train + 1) // 2, train // 2],
        "prior": [0.5, 0.5], "group": ["many", "few"],
    })
    record = artifacts.build_record("prepare", {"dataset": "cache-fixture", "seed": seed, **per_split},
                                    dataset="cache-fixture", image_root=str(images.resolve()))
    artifacts.write_record(directory, artifacts.PREPARE_RECORD, record)
    return directory


@pytest.fixture(scope="module")
def clip():
    return build_backbone("sage-tiny", "none", "cpu")


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory, clip):
    """(prepared data, image cache) built once for the module."""
    root = tmp_path_factory.mktemp("image-cache")
    prepared = make_prepared(root / "prepared")
    run(CacheImagesConfig(prepared=prepared, out=root / "cache", model="sage-tiny", pretrained="none",
                          short_side=SHORT_SIDE))
    data = load_prepared_data(prepared)
    return data, load_image_cache(root / "cache", data, clip.record)


def test_train_size_keeps_the_aspect_ratio_and_never_enlarges() -> None:
    assert compute_train_size(64, 48, 40) == (53, 40)  # 64 * 40 / 48 = 53.3
    assert compute_train_size(90, 36, 40) == (90, 36)  # short side already <= 40: kept
    assert compute_train_size(500, 375, 320) == (427, 320)
    assert compute_train_size(375, 500, 320) == (320, 427)


def test_train_view_holds_the_decoded_image_shrunk_with_pil(cached) -> None:
    data, cache = cached
    train = data.split("train")
    dataset = CachedImageDataset(cache, train, "train", lambda pixels: pixels)
    for i, path in enumerate(train["path"]):
        image = load_image(data.image_root / path)
        size = compute_train_size(*image.size, SHORT_SIDE)
        expected = np.asarray(image if size == image.size else image.resize(size, Image.BICUBIC))
        stored = dataset[i][0].permute(1, 2, 0).numpy()
        assert stored.shape == expected.shape and np.array_equal(stored, expected), path
    assert cache.record["images"] == {"train": 12, "eval": 20}


def test_eval_tensors_equal_the_plain_path_exactly(cached, clip) -> None:
    data, cache = cached
    _, eval_tf = build_cached_transforms(clip.record, augment=True)
    for split in ("train", "val", "test"):
        samples = data.split(split)
        fast = CachedImageDataset(cache, samples, "eval", eval_tf)
        plain = ManifestDataset(samples, data.image_root, clip.preprocess_eval)
        for i in range(len(samples)):
            got, expected = fast[i], plain[i]
            assert got[1:] == expected[1:]
            assert got[0].dtype == torch.uint8  # normalised on the device (sage_cli.pixels)
            assert torch.equal(eval_tf.normalize(got[0]), expected[0]), (split, i)


def test_train_crops_match_the_plain_path_for_the_same_seed(cached, clip) -> None:
    """Same seed, same image size: the same crop box and flip; pixels within PIL-vs-torch resampling."""
    data, cache = cached
    train = data.split("train")
    fast_tf, _ = build_cached_transforms(clip.record, augment=True)
    fast = CachedImageDataset(cache, train, "train", fast_tf)
    plain = ManifestDataset(train, data.image_root, build_train_transform(clip.record))
    std = torch.tensor(clip.record["std"]).view(3, 1, 1) * 255  # normalised units -> grey levels
    kept = [i for i in range(len(train)) if min(SIZES[int(train["sample_id"][i]) % len(SIZES)]) <= SHORT_SIDE]
    assert len(kept) == 8  # images stored at their decoded size
    finish = fast_tf.normalize
    for i in kept:
        for seed in (1, 2, 3):
            diff = ((finish(fast[(i, seed)][0]) - plain[(i, seed)][0]) * std).abs()
            assert diff.mean() < 1.0, (i, seed, float(diff.mean()))
        other = ((finish(fast[(i, 1)][0]) - plain[(i, 5)][0]) * std).abs()
        assert other.mean() > 10.0  # another seed's crop is another image: the bound above is tight


def test_workers_give_the_same_batches(cached, clip) -> None:
    data, cache = cached
    train_tf, _ = build_cached_transforms(clip.record, augment=True)
    dataset = CachedImageDataset(cache, data.split("train"), "train", train_tf)

    def batches(workers: int) -> list[torch.Tensor]:
        sampler = StepBatchSampler(len(dataset), seed=3, batch_size=4, micro_batch_size=4)
        loader = build_loader(dataset, 4, workers, torch.device("cpu"), batch_sampler=sampler)
        return [batch.images for batch in loader]

    single, parallel = batches(0), batches(2)
    assert len(single) == 3 and all(torch.equal(a, b) for a, b in zip(single, parallel))


def test_cache_refuses_another_prepared_dataset(cached, tmp_path: Path, clip) -> None:
    _, cache = cached
    other = load_prepared_data(make_prepared(tmp_path / "other", seed=1))
    with pytest.raises(SageError, match="image cache of another prepared dataset"):
        load_image_cache(cache.directory, other, clip.record)


def test_cache_refuses_another_eval_geometry(cached, clip) -> None:
    data, cache = cached
    with pytest.raises(SageError, match="eval geometry"):
        load_image_cache(cache.directory, data, {**clip.record, "image_size": [48, 48]})


def test_rebuild_is_skipped_and_other_inputs_are_refused(cached) -> None:
    data, cache = cached
    before = {p.name: p.stat().st_mtime_ns for p in cache.directory.iterdir()}
    same = CacheImagesConfig(prepared=data.directory, out=cache.directory, model="sage-tiny", pretrained="none",
                             short_side=SHORT_SIDE)
    assert run(same).skipped
    with pytest.raises(SageError, match="other inputs"):
        run(CacheImagesConfig(**{**same.__dict__, "short_side": 64}))
    assert {p.name: p.stat().st_mtime_ns for p in cache.directory.iterdir()} == before


def test_bad_short_side_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SageError, match="--short-side must be >= 1; got 0"):
        CacheImagesConfig(prepared=tmp_path, out=tmp_path / "c", model="sage-tiny", pretrained="none", short_side=0)


def test_command_writes_the_cache(tmp_path: Path) -> None:
    prepared = make_prepared(tmp_path / "prepared")
    result = CliRunner().invoke(app, ["cache-images", "--prepared", str(prepared), "--model", "sage-tiny",
                                      "--pretrained", "none", "--out", str(tmp_path / "cache"), "--short-side", "40"])
    assert result.exit_code == 0, result.output
    assert "train view 12 images" in result.output and "eval view 20 images" in result.output
    index = artifacts.read_table(tmp_path / "cache", artifacts.IMAGE_INDEX).to_pandas()
    assert len(index) == 32 and set(index["view"]) == {"train", "eval"}
    eval_bytes = (tmp_path / "cache" / "eval.u8").stat().st_size
    assert eval_bytes == 20 * 32 * 32 * 3  # sage-tiny's 32x32 eval crop of every image


def _train_config(prepared: Path, text: Path, out: Path, **options):
    from sage_cli.train import build_train_config

    base = {"prepared": prepared, "text_cache": text, "out": out, "method": "lift", "batch_size": 8,
            "device": "cpu", "num_workers": 0, "seed": 0, "max_steps": 3, "eval_every": 0}
    return build_train_config({**base, **options})


def test_training_from_the_cache_without_augmentation_equals_the_plain_path(
    synthetic_prepared: Path, synthetic_text_cache: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    from sage_cli.train import run as train

    run(CacheImagesConfig(prepared=synthetic_prepared, out=tmp_path / "cache", model="sage-tiny", pretrained="none"))
    plain = train(_train_config(synthetic_prepared, synthetic_text_cache, tmp_path / "plain", augment=False))
    fast = train(_train_config(synthetic_prepared, synthetic_text_cache, tmp_path / "fast", augment=False,
                               image_cache=tmp_path / "cache"))
    a, b = load_file(plain.out / "adapter.safetensors"), load_file(fast.out / "adapter.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert fast.record["final_eval"]["top1"] == plain.record["final_eval"]["top1"]
    cache_record = artifacts.read_record(tmp_path / "cache", "image_cache.json")
    assert fast.record["inputs"]["image_cache"]["fingerprint"] == cache_record["fingerprint"]
    assert "image_cache" not in plain.record["inputs"] and fast.record["fingerprint"] != plain.record["fingerprint"]
    augmented = train(_train_config(synthetic_prepared, synthetic_text_cache, tmp_path / "aug",
                                    image_cache=tmp_path / "cache"))
    assert augmented.record["steps"] == 3 and augmented.record["images_seen"] == 24


def test_training_refuses_the_cache_of_another_dataset(
    synthetic_prepared: Path, synthetic_text_cache: Path, cached, tmp_path: Path
) -> None:
    from sage_cli.train import run as train

    _, cache = cached
    with pytest.raises(SageError, match="image cache of another prepared dataset"):
        train(_train_config(synthetic_prepared, synthetic_text_cache, tmp_path / "run", image_cache=cache.directory))
    assert not (tmp_path / "run").exists()


def test_cpu_seeded_draws_as_manual_seed_and_restores_the_generator() -> None:
    from sage_cli.data import cpu_seeded

    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(7)
    with cpu_seeded(5):
        drawn = torch.rand(3)
    after = torch.rand(1)
    torch.manual_seed(7)
    assert torch.equal(drawn, expected) and torch.equal(after, torch.rand(1))


def test_decoding_in_worker_processes_writes_the_same_cache(cached, tmp_path: Path) -> None:
    data, cache = cached
    run(CacheImagesConfig(prepared=data.directory, out=tmp_path / "parallel", model="sage-tiny", pretrained="none",
                          short_side=SHORT_SIDE, workers=2))
    for name in ("train.u8", "eval.u8"):
        assert (tmp_path / "parallel" / name).read_bytes() == (cache.directory / name).read_bytes(), name
    index = artifacts.read_table(tmp_path / "parallel", artifacts.IMAGE_INDEX).to_pandas()
    assert index.equals(cache.index)


@pytest.mark.slow
def test_two_ddp_ranks_reading_the_cache_match_one_process(
    synthetic_prepared: Path, synthetic_text_cache: Path, tmp_path: Path
) -> None:
    import json
    import os
    import socket
    import subprocess
    import sys

    from safetensors.torch import load_file

    from sage_cli.train import run as train

    run(CacheImagesConfig(prepared=synthetic_prepared, out=tmp_path / "cache", model="sage-tiny", pretrained="none"))
    options = {"method": "lift", "batch_size": 8, "micro_batch_size": 4, "max_steps": 3, "num_workers": 1,
               "image_cache": tmp_path / "cache", "eval_every": 0}
    single = train(_train_config(synthetic_prepared, synthetic_text_cache, tmp_path / "one", **options))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**options, "seed": 0, "device": "cpu"}.items()]
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2",
               "--master-addr=127.0.0.1", f"--master-port={port}", "-m", "sage_cli", "train",
               "--prepared", str(synthetic_prepared), "--text-cache", str(synthetic_text_cache),
               "--out", str(tmp_path / "two"), *flags]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    record = json.loads((tmp_path / "two" / "train.json").read_text())
    assert record["world_size"] == 2 and record["images_seen"] == single.record["images_seen"] == 24
    a, b = load_file(single.out / "adapter.safetensors"), load_file(tmp_path / "two" / "adapter.safetensors")
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5, rtol=0), name


@pytest.fixture
def copied(cached, tmp_path: Path):
    """A copy of the module's cache (new files: their identity on disk is new), and the prepared data."""
    import shutil

    data, cache = cached
    return data, Path(shutil.copytree(cache.directory, tmp_path / "cache", copy_function=shutil.copy))


def test_a_zeroed_view_file_is_refused_before_anything_trains_on_it(copied, clip) -> None:
    # red team: a zeroed train.u8 trained silently on black images
    data, directory = copied
    load_image_cache(directory, data, clip.record)  # the copy checks out
    size = (directory / "train.u8").stat().st_size
    (directory / "train.u8").write_bytes(bytes(size))
    with pytest.raises(SageError) as info:
        load_image_cache(directory, data, clip.record)
    assert str(info.value) == (f"{directory / 'train.u8'}: content differs from the sha256 recorded in "
                               f"{directory / 'image_cache.json'} (damaged or changed since sage cache-images wrote "
                               f"it); rebuild the cache with sage cache-images --out {directory} --force")


def test_a_truncated_view_file_or_index_is_one_line(copied, clip) -> None:
    data, directory = copied
    view = directory / "eval.u8"
    size = view.stat().st_size
    view.write_bytes(view.read_bytes()[:-5])
    with pytest.raises(SageError) as info:
        load_image_cache(directory, data, clip.record)
    assert str(info.value) == (f"{view}: {size - 5} bytes, {directory / 'image_cache.json'} records {size} "
                               f"(truncated or damaged); rebuild the cache with sage cache-images --out {directory} "
                               "--force")
    index = directory / "image_index.parquet"
    index.write_bytes(index.read_bytes()[:100])
    with pytest.raises(SageError, match=rf"^{index}: content differs from the sha256 recorded in"):
        load_image_cache(directory, data, clip.record)


def test_a_rewritten_index_is_refused(copied, clip) -> None:
    # red team: a rewritten image_index.parquet (valid, other offsets) trained on the wrong images
    data, directory = copied
    index = artifacts.read_table(directory, artifacts.IMAGE_INDEX).to_pandas()
    index.loc[[0, 1], "offset"] = index.loc[[1, 0], "offset"].to_numpy()
    artifacts.write_table(directory, artifacts.IMAGE_INDEX, index)
    with pytest.raises(SageError, match=rf"^{directory / 'image_index.parquet'}: content differs from the sha256 "
                                        rf"recorded in {directory / 'image_cache.json'}"):
        load_image_cache(directory, data, clip.record)


def test_view_files_are_hashed_once_while_unchanged(copied, clip, monkeypatch) -> None:
    import os

    from sage_cli import image_cache

    data, directory = copied
    hashed: list[str] = []
    real_sha256 = artifacts.sha256_file
    monkeypatch.setattr(artifacts, "sha256_file", lambda path, *a: hashed.append(Path(path).name) or real_sha256(path))
    load_image_cache(directory, data, clip.record)
    assert sorted(n for n in hashed if n.endswith(".u8")) == ["eval.u8", "train.u8"]  # a copy: new files
    hashed.clear()
    load_image_cache(directory, data, clip.record)
    assert [n for n in hashed if n.endswith(".u8")] == []  # remembered by size, inode, mtime and ctime
    os.utime(directory / "train.u8", ns=(1, 1))  # touched: hashed again (and still good)
    load_image_cache(directory, data, clip.record)
    assert [n for n in hashed if n.endswith(".u8")] == ["train.u8"]
    assert image_cache.VERIFIED == ".verified.json" and (directory / ".verified.json").is_file()
