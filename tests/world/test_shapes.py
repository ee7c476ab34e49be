"""The shapes world generator: determinism, classes, image format, geometry, domains, captions."""

from __future__ import annotations

import numpy as np
import pytest

from sage_cli.world import shapes
from sage_cli.world.shapes import CLEAN, SHIFTED, Domain, balanced_labels, class_names, generate


def test_same_seed_same_images_and_captions() -> None:
    labels = np.arange(0, 80, 3)
    a, b = generate(labels, 11, CLEAN), generate(labels, 11, CLEAN)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.captions == b.captions
    np.testing.assert_array_equal(a.labels, labels)


def test_different_seed_different_images() -> None:
    labels = np.arange(0, 80, 3)
    a, b = generate(labels, 11, SHIFTED), generate(labels, 12, SHIFTED)
    assert not np.array_equal(a.images, b.images)
    # Every image differs, not just a few pixels.
    assert (np.abs(a.images.astype(int) - b.images.astype(int)).reshape(len(labels), -1).mean(1) > 5).all()


def test_class_names() -> None:
    names = class_names()
    assert len(names) == shapes.NUM_CLASSES == 80
    assert len(set(names)) == 80
    assert names[0] == "red circle"
    assert names[1] == "red square"
    assert names[8] == "orange circle"
    assert names[-1] == "white heart"
    # class id = colour * 8 + shape
    purple_star = names.index("purple star")
    assert purple_star == 6 * 8 + 3
    colour, shape = shapes.split_class_id(np.array([purple_star]))
    assert (colour[0], shape[0]) == (6, 3)


def test_image_shape_dtype_and_range() -> None:
    batch = generate(np.array([0, 17, 79]), 0, CLEAN, image_size=16)
    assert batch.images.shape == (3, 16, 16, 3)
    assert batch.images.dtype == np.uint8
    assert batch.labels.dtype == np.int64
    big = generate(np.arange(80), 0, SHIFTED)
    assert big.images.shape == (80, 32, 32, 3)
    assert big.images.min() < 40 and big.images.max() > 215  # uses the range, not a sliver of it


@pytest.mark.parametrize("bad", [[-1], [80], [[1, 2]]])
def test_bad_labels_raise(bad: list) -> None:
    with pytest.raises(ValueError, match="class ids"):
        generate(np.array(bad), 0)


def test_balanced_labels_counts() -> None:
    labels = balanced_labels(3, np.random.default_rng(0))
    assert labels.shape == (240,)
    np.testing.assert_array_equal(np.bincount(labels, minlength=80), np.full(80, 3))
    assert not np.array_equal(labels, np.sort(labels))  # shuffled


@pytest.mark.parametrize(
    ("shape", "inside", "outside"),
    [
        ("circle", [(0, 0), (0.7, 0.7)], [(0.75, 0.75)]),
        ("ring", [(0.8, 0), (0, -0.9)], [(0, 0), (0.3, 0.2), (1.01, 0)]),
        ("square", [(0, 0), (0.69, 0.69)], [(0.72, 0)]),  # corners at (+-0.707, +-0.707)
        ("triangle", [(0, -0.9), (0, 0.45)], [(0, 0.55), (0.6, -0.5)]),  # apex up, base at y = 0.5
        ("star", [(0, -0.95), (0, 0)], [(0, 0.5), (0.5, -0.5)]),
        ("hexagon", [(0, -0.95), (0.85, 0)], [(0.9, 0), (0.0, -1.01)]),
        ("cross", [(0, 0.95), (0.95, 0), (0.3, 0.3)], [(0.5, 0.5), (0.9, 0.9)]),
        ("heart", [(0, 0.05), (0.5, -0.3)], [(0, -0.6), (0.9, 0.9)]),
    ],
)
def test_shape_geometry(shape: str, inside: list, outside: list) -> None:
    pts = np.asarray(inside + outside, dtype=np.float64)
    got = shapes._inside_shape(shape, pts[:, 0], pts[:, 1])
    assert got.tolist() == [True] * len(inside) + [False] * len(outside)


def test_shape_is_drawn_in_its_colour() -> None:
    # A large shape's centre pixel is the class colour (up to jitter 0.05 and noise 0.04 -> +-40 levels).
    labels = np.array([class_names().index(n) for n in ("red circle", "blue square", "yellow hexagon")])
    batch = generate(labels, 5, CLEAN)
    rng = np.random.default_rng(5)
    radius = rng.uniform(0.30, 0.65, size=3)
    centre = rng.uniform(-1.0, 1.0, size=(3, 2)) * (0.95 - radius)[:, None]
    px = np.floor((centre + 1.0) / 2.0 * 32).astype(int)  # (x, y) -> pixel column, row
    expected = np.array([shapes.COLOURS[n.split()[0]] for n in ("red", "blue", "yellow")]) * 255
    for i in range(3):
        got = batch.images[i, px[i, 1], px[i, 0]].astype(float)
        assert np.abs(got - expected[i]).max() < 40, (i, got, expected[i])


def test_shifted_domain_differs_from_clean() -> None:
    labels = np.arange(80)
    clean = generate(labels, 3, CLEAN).images.astype(np.float64)
    shifted = generate(labels, 3, SHIFTED).images.astype(np.float64)
    # Texture: the top rows vary far more in the shifted domain. 2x2 block means damp the pixel noise.
    def roughness(images: np.ndarray) -> float:
        top = images[:, :4].reshape(len(images), 2, 2, 16, 2, 3).mean(axis=(2, 4))  # [N, 2, 16, 3]
        return float(np.median(top.std(axis=(1, 2)).mean(axis=-1)))

    assert roughness(clean) < 10.0
    assert roughness(shifted) > 2.0 * roughness(clean)
    # Warm cast: red exceeds blue on average in shifted images, not in clean ones.
    assert abs(clean[..., 0].mean() - clean[..., 2].mean()) < 10.0
    assert shifted[..., 0].mean() - shifted[..., 2].mean() > 25.0


def test_domain_validation() -> None:
    with pytest.raises(ValueError, match="unknown textures"):
        Domain("odd", textures=("dots",))
    with pytest.raises(ValueError, match="cast_strength"):
        Domain("odd", cast_strength=1.5)


def test_captions_name_the_class() -> None:
    labels = np.arange(80)
    batch = generate(labels, 9, SHIFTED)
    names = class_names()
    for label, caption in zip(labels, batch.captions):
        colour, shape = names[label].split()
        assert colour in caption and shape in caption, caption
    assert len(set(c.split()[1] if c.startswith("a ") else c for c in batch.captions)) > 5  # varied templates
    assert any("striped" in c or "checkered" in c for c in batch.captions)
