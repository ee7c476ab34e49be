"""Shapes-LT: exact long-tail counts, class order, written images and manifest, bad inputs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sage_cli.errors import SageError
from sage_cli.world.shapes import SHAPES, SHIFTED, class_names, generate
from sage_cli.world.shapes_lt import (
    DEFAULT_DOMAIN,
    SHAPES_LT_DOMAINS,
    compute_class_order,
    compute_train_counts,
    compute_variant_seed,
    prepare_shapes_lt,
    resolve_domain,
)


def test_default_train_counts_are_exact() -> None:
    counts = compute_train_counts(80, 100, 300)
    # floor(300 * 100 ** (-i / 79)), summed by hand once: 300 at the head, 3 at the tail.
    assert counts[0] == 300 and counts[-1] == 3
    assert counts[:5] == [300, 283, 266, 251, 237]
    assert sum(counts) == 5213
    assert all(a >= b for a, b in zip(counts, counts[1:]))


def test_small_counts() -> None:
    assert compute_train_counts(3, 4, 8) == [8, 4, 2]
    assert compute_train_counts(5, 1, 7) == [7] * 5


def test_class_order_interleaves_shapes_and_colours() -> None:
    order = compute_class_order()
    assert sorted(order) == list(range(80))
    shape_of = [c % len(SHAPES) for c in order]
    colour_of = [c // len(SHAPES) for c in order]
    for block in range(10):  # every block of 8 ranks has all 8 shapes and 8 distinct colours
        assert sorted(shape_of[block * 8 : block * 8 + 8]) == list(range(8))
        assert len(set(colour_of[block * 8 : block * 8 + 8])) == 8
    assert order == compute_class_order()  # fixed, no hidden state


def test_prepare_writes_manifest_and_images(tmp_path: Path) -> None:
    manifest, names = prepare_shapes_lt(tmp_path, imbalance_ratio=4, max_count=8, val_per_class=1, test_per_class=2,
                                        domain="fine")  # world v2's exponential profile
    counts = compute_train_counts(80, 4, 8)
    assert list(manifest.columns) == ["sample_id", "path", "label", "split"]
    assert manifest["sample_id"].tolist() == list(range(sum(counts) + 80 + 160))
    assert manifest["label"].dtype == np.int64 and manifest["sample_id"].dtype == np.int64
    train = manifest[manifest["split"] == "train"]
    assert np.bincount(train["label"], minlength=80).tolist() == counts
    for split, per_class in (("val", 1), ("test", 2)):
        part = manifest[manifest["split"] == split]
        assert np.bincount(part["label"], minlength=80).tolist() == [per_class] * 80
    world = class_names()
    assert names == [world[c] for c in compute_class_order()]
    for path in manifest["path"].iloc[[0, -1]]:
        image = np.asarray(Image.open(tmp_path / path))
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8


def test_prepare_pixels_are_the_default_domain(tmp_path: Path) -> None:
    manifest, _ = prepare_shapes_lt(tmp_path, imbalance_ratio=1, max_count=1, val_per_class=0, test_per_class=1)
    test = manifest[manifest["split"] == "test"]
    # The test split is rendered by one generate() call on stream [seed, 2] (80 images < one chunk); world v3's
    # variant 0 draws its class order, looks and shades from seed 1 (DOMAIN_VARIANT_OFFSET).
    assert DEFAULT_DOMAIN == "v3" and compute_variant_seed(DEFAULT_DOMAIN, 0) == 1
    world_ids = np.asarray(compute_class_order(1))[test["label"].to_numpy()]
    domain = resolve_domain(DEFAULT_DOMAIN, 0)
    assert domain == dataclasses.replace(SHAPES_LT_DOMAINS["v3"], class_shift_seed=1)
    expected = generate(world_ids, np.random.default_rng([0, 2]), domain).images
    written = np.stack([np.asarray(Image.open(tmp_path / p)) for p in test["path"]])
    np.testing.assert_array_equal(written, expected)


def test_prepare_is_deterministic_per_seed(tmp_path: Path) -> None:
    kwargs = dict(imbalance_ratio=1, max_count=2, val_per_class=0, test_per_class=1)
    m1, _ = prepare_shapes_lt(tmp_path / "a", seed=1, **kwargs)
    m2, _ = prepare_shapes_lt(tmp_path / "b", seed=1, **kwargs)
    m3, _ = prepare_shapes_lt(tmp_path / "c", seed=2, **kwargs)
    assert m1.equals(m2)
    first = m1["path"].iloc[0]
    assert (tmp_path / "a" / first).read_bytes() == (tmp_path / "b" / first).read_bytes()
    assert (tmp_path / "a" / first).read_bytes() != (tmp_path / "c" / first).read_bytes()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"imbalance_ratio": 0.5}, "--imbalance-ratio must be >= 1"),
        ({"max_count": 0}, "--max-count must be >= 1"),
        ({"max_count": 50, "imbalance_ratio": 100}, "leaves the rarest class no training image"),
        ({"max_count": 8, "imbalance_ratio": 4}, "must span the groups: .*--domain fine"),
        ({"test_per_class": 0}, "--test-per-class >= 1"),
        ({"val_per_class": -1}, "--val-per-class >= 0"),
    ],
)
def test_bad_arguments_fail_before_writing(tmp_path: Path, kwargs: dict, message: str) -> None:
    existing = tmp_path / "images" / "keep.txt"
    existing.parent.mkdir()
    existing.write_text("mine")
    with pytest.raises(SageError, match=message) as info:
        prepare_shapes_lt(tmp_path, **kwargs)
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["images", "keep.txt"]
    assert existing.read_text() == "mine"


def test_balanced_ratio_one_and_max_count(tmp_path: Path) -> None:
    manifest, _ = prepare_shapes_lt(tmp_path, imbalance_ratio=1, max_count=3, val_per_class=0, test_per_class=1)
    train = manifest[manifest["split"] == "train"]
    assert np.bincount(train["label"], minlength=80).tolist() == [3] * 80


def test_balanced_and_long_tailed_share_their_test_images(tmp_path: Path) -> None:
    # The balanced oracle is evaluated on exactly the long-tailed split's test images.
    kwargs = dict(val_per_class=0, test_per_class=1)
    lt, _ = prepare_shapes_lt(tmp_path / "lt", imbalance_ratio=60, max_count=120, **kwargs)  # world v3's groups
    bal, _ = prepare_shapes_lt(tmp_path / "bal", imbalance_ratio=1, max_count=2, **kwargs)
    a, b = lt[lt["split"] == "test"], bal[bal["split"] == "test"]
    assert a["label"].tolist() == b["label"].tolist()
    for pa, pb in zip(a["path"].iloc[[0, 41, 79]], b["path"].iloc[[0, 41, 79]]):
        assert (tmp_path / "lt" / pa).read_bytes() == (tmp_path / "bal" / pb).read_bytes()


def test_variant_reorders_classes_and_keeps_the_latin_square() -> None:
    base, other = compute_class_order(0), compute_class_order(3)
    assert other != base and sorted(other) == list(range(80))
    assert other == compute_class_order(3)
    for block in range(10):
        assert sorted(c % len(SHAPES) for c in other[block * 8 : block * 8 + 8]) == list(range(8))
    with pytest.raises(SageError, match="--variant must be >= 0"):
        compute_class_order(-1)


def test_domains_hard_is_world_v1(tmp_path: Path) -> None:
    kwargs = dict(imbalance_ratio=2, max_count=2, val_per_class=0, test_per_class=1)
    manifest, _ = prepare_shapes_lt(tmp_path / "hard", domain="hard", **kwargs)
    test = manifest[manifest["split"] == "test"]
    world_ids = np.asarray(compute_class_order())[test["label"].to_numpy()]
    expected = generate(world_ids, np.random.default_rng([0, 2]), SHIFTED).images
    written = np.stack([np.asarray(Image.open(tmp_path / "hard" / p)) for p in test["path"]])
    np.testing.assert_array_equal(written, expected)
    with pytest.raises(SageError, match="--domain must be one of fine, moderate, hard"):
        prepare_shapes_lt(tmp_path / "odd", domain="soft", **kwargs)
    assert not (tmp_path / "odd").exists()


def test_fine_domain_shades_follow_the_variant(tmp_path: Path) -> None:
    import dataclasses

    from sage_cli.world.shapes import FINE

    kwargs = dict(imbalance_ratio=2, max_count=2, val_per_class=0, test_per_class=1, domain="fine")
    for variant in (0, 2):
        manifest, _ = prepare_shapes_lt(tmp_path / str(variant), variant=variant, **kwargs)
        test = manifest[manifest["split"] == "test"]
        world_ids = np.asarray(compute_class_order(variant))[test["label"].to_numpy()]
        written = np.stack([np.asarray(Image.open(tmp_path / str(variant) / p)) for p in test["path"]])
        shades = dataclasses.replace(FINE, class_shift_seed=variant)
        expected = generate(world_ids, np.random.default_rng([0, 2]), shades).images
        np.testing.assert_array_equal(written, expected)
        if variant:  # another variant's classes wear other shades, not variant 0's
            assert not np.array_equal(written, generate(world_ids, np.random.default_rng([0, 2]), FINE).images)
