"""World v3 (`--domain v3`): looks per class, their descriptions, ImageNet-LT's group sizes; v2 left as it was."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from sage_cli.errors import SageError
from sage_cli.world import SHAPES_DESCRIPTIONS_V3
from sage_cli.world.attributes import save_class_descriptions
from sage_cli.world.shapes import (
    DOMAINS,
    FINE,
    MODE_SIZES,
    NUM_CLASSES,
    V3,
    class_colour_offsets,
    class_modes,
    class_names,
    describe_looks,
    generate,
)
from sage_cli.world.shapes_lt import compute_group_counts, prepare_shapes_lt, resolve_domain


def test_v3_is_appended_after_the_v2_domains() -> None:
    # Evaluation streams are seeded by the position in DOMAINS: the earlier domains keep theirs.
    assert list(DOMAINS)[-1] == "v3" and list(DOMAINS).index("shades-only") == len(DOMAINS) - 2


def test_fine_renders_as_before() -> None:
    # Mean pixel of 8 images of world v2's default domain, recorded before v3 was added.
    batch = generate(np.arange(0, 80, 10), 7, FINE)
    np.testing.assert_allclose(batch.images.reshape(8, -1).mean(axis=1),
                               [120.87, 120.5, 129.2, 130.65, 136.54, 131.72, 141.09, 131.3], atol=0.05)


def test_class_modes_are_distinct_looks_with_offsets_of_the_given_norms() -> None:
    modes = class_modes(V3)
    assert modes.size.shape == modes.background.shape == (NUM_CLASSES, V3.modes)
    looks = modes.size * len(V3.backgrounds) + modes.background  # [C, M]
    assert all(len(set(row)) == V3.modes for row in looks.tolist())  # no look twice in a class
    assert len({tuple(sorted(row)) for row in looks.tolist()}) > 10  # classes differ in their looks
    # offset = family (per colour) + class + mode; with only the mode's, each has norm mode_shift.
    only_mode = dataclasses.replace(V3, family_shift=0.0, class_shift=0.0)
    np.testing.assert_allclose(np.linalg.norm(class_modes(only_mode).offset, axis=-1), V3.mode_shift)
    only_family = dataclasses.replace(V3, mode_shift=0.0, class_shift=0.0)
    family = class_modes(only_family).offset  # [C, M, 3]: the same for the 8 classes of a colour, every mode
    np.testing.assert_allclose(family, np.broadcast_to(family[::8][np.arange(NUM_CLASSES) // 8], family.shape))
    np.testing.assert_allclose(np.linalg.norm(family, axis=-1), V3.family_shift)
    only_class = dataclasses.replace(V3, mode_shift=0.0, family_shift=0.0)
    np.testing.assert_allclose(class_modes(only_class).offset[:, 0], class_colour_offsets(only_class))


def test_v3_images_show_only_their_class_looks() -> None:
    labels = np.repeat([5, 42], 60)
    batch = generate(labels, 3, V3)
    words = describe_looks(V3)
    for label, caption in zip(labels, batch.captions):
        # v3 images carry world v1's captions: size and background words come from the image.
        for word in ("gradient", "striped", "checkered", "small", "large"):
            if word in caption:
                assert any(word in look for look in words[label]), (caption, words[label])
    again = generate(labels, 3, V3)
    np.testing.assert_array_equal(batch.images, again.images)


def test_shipped_v3_descriptions_are_the_generated_ones(tmp_path) -> None:
    # The default variant's looks (seed 1). Regenerate with
    # save_class_descriptions(SHAPES_DESCRIPTIONS_V3, class_names(), describe_looks(resolve_domain("v3"))).
    fresh = save_class_descriptions(tmp_path / "d.json", class_names(), describe_looks(resolve_domain("v3")))
    assert SHAPES_DESCRIPTIONS_V3.read_text() == fresh.read_text()
    data = json.loads(fresh.read_text())
    assert list(data) == class_names() and all(len(s) == V3.modes for s in data.values())
    assert all(s.startswith(f"a {size} {name} on a ") and s.endswith(" background.")
               for name, sentences in data.items() for s in sentences
               for size in [s.split()[1]] if size in MODE_SIZES)


def test_group_counts_match_imagenet_lt_shares() -> None:
    counts = compute_group_counts(80, 50.0, 200)
    assert counts[0] == 200 and counts[-1] == 4 and counts == sorted(counts, reverse=True)
    assert (sum(c > 100 for c in counts), sum(c < 20 for c in counts)) == (31, 11)
    assert counts[30] == 101 and counts[31] == 100 and counts[68] == 20 and counts[69] == 19
    assert sum(counts) == 6463
    assert compute_group_counts(80, 1.0, 81) == [81] * 80
    with pytest.raises(SageError, match="must span the groups"):
        compute_group_counts(80, 100.0, 100)


def test_prepare_v3_defaults(tmp_path) -> None:
    manifest, names = prepare_shapes_lt(tmp_path / "w", domain="v3", val_per_class=0, test_per_class=1,
                                        imbalance_ratio=50.0, max_count=103)
    train = manifest[manifest["split"] == "train"]
    counts = np.bincount(train["label"], minlength=80)
    assert counts[0] == 103 and counts[-1] == 2 and len(names) == 80


def test_v3_count_defaults_reach_the_record_options(tmp_path) -> None:
    from sage_cli.prepare import PrepareConfig, _shapes_lt_options

    v3 = _shapes_lt_options(PrepareConfig(dataset="shapes-lt", out=tmp_path / "a", domain="v3"))
    assert v3 == {"imbalance_ratio": 50.0, "max_count": 200, "variant": 0, "domain": "v3"}
    given = _shapes_lt_options(PrepareConfig(dataset="shapes-lt", out=tmp_path / "b", domain="v3", max_count=81,
                                             imbalance_ratio=1))
    assert given["max_count"] == 81 and given["imbalance_ratio"] == 1
    default = _shapes_lt_options(PrepareConfig(dataset="shapes-lt", out=tmp_path / "c"))
    assert default == v3  # world v3 is the default
    fine = _shapes_lt_options(PrepareConfig(dataset="shapes-lt", out=tmp_path / "c", domain="fine"))
    assert fine == {"imbalance_ratio": 100.0, "max_count": 300, "variant": 0, "domain": "fine"}
    with pytest.raises(SageError, match="must span the groups"):
        prepare_shapes_lt(tmp_path / "d", domain="v3", max_count=100)
    assert not (tmp_path / "d").exists()
