"""World v2: the open pretraining world, its attribute captions, the moderate domain, v1 left as it was."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sage_cli.world import shapes
from sage_cli.world.attributes import COLOUR_ATTRIBUTES, SHAPE_ATTRIBUTES
from sage_cli.world.shapes import CLEAN, DOMAINS, MODERATE, OPEN, SHIFTED, Domain, class_names, generate


@pytest.mark.parametrize(
    ("domain", "means"),
    [
        (CLEAN, [137.12, 92.11, 179.39, 118.32, 127.33, 126.87, 138.42, 58.36]),
        (SHIFTED, [125.33, 127.2, 133.33, 134.82, 139.58, 135.79, 144.71, 132.47]),
    ],
)
def test_world_v1_domains_render_as_before(domain: Domain, means: list[float]) -> None:
    # Mean pixel of 8 images, recorded from world v1's generator before v2 was added: v2 must not
    # move v1's random streams (the v1 toy CLIP and `--domain hard` depend on them). The tolerance
    # absorbs a last-bit difference of numpy's float32 sin / cos on another CPU, not a changed stream.
    batch = generate(np.arange(0, 80, 10), 7, domain)
    np.testing.assert_allclose(batch.images.reshape(8, -1).mean(axis=1), means, atol=0.05)


def test_domain_indices_of_v1_are_kept() -> None:
    # Evaluation streams are seeded by the position in DOMAINS: v1's two stay first.
    assert list(DOMAINS)[:2] == ["clean", "shifted"]
    assert {"open", "moderate", "cast-only", "texture-only"} <= set(DOMAINS)


def test_open_world_is_deterministic_and_varied() -> None:
    labels = np.arange(160) % 80
    a, b, c = generate(labels, 4, OPEN), generate(labels, 4, OPEN), generate(labels, 5, OPEN)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.captions == b.captions
    assert not np.array_equal(a.images, c.images)
    words = {w for caption in a.captions for w in ("gradient", "striped", "checkered", "dark", "light", "grey")
             if f"{w} background" in caption}
    assert words == {"gradient", "striped", "checkered", "dark", "light", "grey"}, words


def test_open_backgrounds_mix_plain_gradient_and_mild_textures() -> None:
    rng = np.random.default_rng(0)
    coords = shapes._pixel_grid(64)
    backgrounds, words = shapes._open_backgrounds(400, coords, OPEN, rng)
    assert backgrounds.shape == (400, 64, 64, 3)
    kinds = {w if w in ("gradient", "striped", "checkered") else "plain" for w in words}
    assert kinds == {"plain", "gradient", "striped", "checkered"}
    textured = np.array([w in ("striped", "checkered") for w in words])
    # Texture contrast is at most 0.3: the two paint colours differ by at most 0.3 per channel.
    pixels = backgrounds[textured].reshape(textured.sum(), -1, 3)
    spread = (pixels.max(axis=1) - pixels.min(axis=1)).max(axis=1)  # [N], largest channel difference
    assert float(spread.max()) <= 0.3 + 1e-6
    assert float(np.median(spread)) > 0.05  # and they are visible textures, not flat


def test_open_captions_use_names_attributes_or_both() -> None:
    labels = np.arange(400) % 80
    batch = generate(labels, 2, OPEN)
    names = class_names()
    has_name, has_attribute = [], []
    for label, caption in zip(labels, batch.captions):
        colour, shape = names[label].split()
        attributes = SHAPE_ATTRIBUTES[shape] + COLOUR_ATTRIBUTES[colour]
        has_name.append(f"{colour} {shape}" in caption)
        has_attribute.append(any(a in caption for a in attributes))
        assert has_name[-1] or has_attribute[-1], caption  # every caption says what the class is
        other = [a for s, a2 in SHAPE_ATTRIBUTES.items() if s != shape for a in a2]
        assert not any(a in caption for a in other), caption  # and never another shape's look
    has_name, has_attribute = np.array(has_name), np.array(has_attribute)
    # Families drawn 40 / 30 / 30 %: name only, attributes only, both (400 draws; +-10 points).
    assert 0.3 < (has_name & ~has_attribute).mean() < 0.5
    assert 0.2 < (~has_name & has_attribute).mean() < 0.4
    assert 0.2 < (has_name & has_attribute).mean() < 0.4


def test_moderate_domain_is_textured_with_an_amber_cast() -> None:
    labels = np.arange(80)
    plain = generate(labels, 3, CLEAN).images.astype(np.float64)
    moderate = generate(labels, 3, MODERATE).images.astype(np.float64)
    assert MODERATE.textures and MODERATE.cast_strength > 0 and MODERATE.captions == "names"
    assert moderate[..., 0].mean() - moderate[..., 2].mean() > plain[..., 0].mean() - plain[..., 2].mean() + 10
    top = moderate[:, :4].reshape(80, 2, 2, 16, 2, 3).mean(axis=(2, 4)).std(axis=(1, 2)).mean(axis=-1)
    assert float(np.median(top)) > 10.0  # textured, unlike the clean world (< 10 in test_shapes)


def test_components_of_the_moderate_shift() -> None:
    assert DOMAINS["cast-only"].cast_strength == MODERATE.cast_strength and not DOMAINS["cast-only"].textures
    assert DOMAINS["texture-only"].texture_contrast == MODERATE.texture_contrast
    assert DOMAINS["texture-only"].cast_strength == 0.0


def test_domain_v2_validation() -> None:
    with pytest.raises(ValueError, match="unknown textures"):
        Domain("odd", backgrounds=("plain", "dots"))
    with pytest.raises(ValueError, match="captions"):
        Domain("odd", captions="poems")


def test_class_colour_offsets_are_fixed_per_class_of_the_domains_norm() -> None:
    from sage_cli.world.shapes import FINE, class_colour_offsets

    assert not class_colour_offsets(MODERATE).any()  # domains without class shades keep their colours
    offsets = class_colour_offsets(FINE)
    assert offsets.shape == (80, 3)
    np.testing.assert_allclose(np.linalg.norm(offsets, axis=1), FINE.class_shift)
    np.testing.assert_array_equal(offsets, class_colour_offsets(FINE))  # a pure function of the domain
    other = class_colour_offsets(dataclasses.replace(FINE, class_shift_seed=1))
    assert np.abs(other - offsets).max() > 0.1  # another seed, other shades
    # Directions spread over the sphere, not one shared tint: the mean offset is far below the norm.
    assert np.linalg.norm(offsets.mean(axis=0)) < 0.3 * FINE.class_shift
    with pytest.raises(ValueError, match="class_shift"):
        Domain("odd", class_shift=-0.1)


def test_shades_move_each_class_colour_by_its_offset_and_nothing_else() -> None:
    from sage_cli.world.shapes import SHADES_ONLY, class_colour_offsets

    # The offsets draw no random numbers from the image stream: same seed, same poses and backgrounds.
    labels = np.repeat(np.arange(80), 2)
    plain = generate(labels, 11, CLEAN).images.astype(np.float64)
    shaded = generate(labels, 11, SHADES_ONLY).images.astype(np.float64)
    offsets = class_colour_offsets(SHADES_ONLY) * 255.0
    moved = np.abs(shaded - plain).max(axis=-1) > 0  # [N, H, W]
    checked = 0
    for i, label in enumerate(labels):
        assert moved[i].mean() < 0.6  # only the shape's pixels change, not the background
        m = moved[i]
        inside = m.copy()  # pixels whose 4 neighbours changed too: inside the shape, not its blended edge
        inside[1:-1, 1:-1] &= m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
        inside[[0, -1]] = inside[:, [0, -1]] = False
        if inside.sum() < 5:
            continue
        before, after = np.median(plain[i][inside], axis=0), np.median(shaded[i][inside], axis=0)
        unclipped = (np.minimum(before, after) > 25) & (np.maximum(before, after) < 230)  # per channel
        np.testing.assert_allclose((after - before)[unclipped], offsets[label][unclipped], atol=4.0)
        checked += int(unclipped.sum())
    assert checked > 150  # channels of the 160 images where the offset shows unclipped


def test_fine_domain_has_mild_textures_the_amber_cast_and_class_shades() -> None:
    from sage_cli.world.shapes import FINE, MILD_TEXTURE_ONLY, OPEN, SHADES_ONLY

    assert FINE.textures and FINE.texture_contrast <= OPEN.contrast_range[1]  # textures pretraining has seen
    assert FINE.cast_strength == DOMAINS["cast-only"].cast_strength and FINE.captions == "names"
    assert FINE.class_shift > 0
    assert MILD_TEXTURE_ONLY.texture_contrast == FINE.texture_contrast and MILD_TEXTURE_ONLY.cast_strength == 0
    assert SHADES_ONLY.class_shift == FINE.class_shift and not SHADES_ONLY.textures
    a, b = generate(np.arange(80), 5, FINE), generate(np.arange(80), 5, FINE)
    np.testing.assert_array_equal(a.images, b.images)
    assert list(DOMAINS)[6:9] == ["fine", "mild-texture-only", "shades-only"]  # appended, never reordered
