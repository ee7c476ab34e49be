"""Shapes-LT: the downstream long-tailed task, drawn from a downstream domain of the shapes world.

:func:`prepare_shapes_lt` writes PNGs under ``out_dir/images/<split>/`` and returns the manifest
rows (``sample_id, path, label, split`` with ``path`` relative to ``out_dir``) and the class names.
The train split is long-tailed. World v3 (the default, ``--domain v3``, :data:`~sage_cli.world.shapes.V3`)
keeps ImageNet-LT's group sizes (:func:`compute_group_counts`: 31 / 38 / 11 classes many / medium /
few, 200 down to 4 images); worlds v1 and v2 keep
``floor(max_count * imbalance_ratio ** (-i / (C - 1)))`` images for downstream class ``i`` of ``C``
(300 down to 3). Ratio 1 is balanced; val and test are balanced. Downstream class order is a Latin square over
shapes and colours, so every stretch of the tail mixes all shapes and many colours (head and tail
are not one shape, and every rare class shares its shape and its colour with common ones). The
``variant`` seeds that Latin square (which shape / colour leads it), apart from the image seed.
Other domains: ``fine`` (world v2, :data:`~sage_cli.world.shapes.FINE`: its per-class shades are seeded
by the ``variant`` too), ``moderate`` (world v2, :data:`~sage_cli.world.shapes.MODERATE`) and
``hard`` (world v1's ``SHIFTED``).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from sage_cli.errors import SageError
from sage_cli.world.shapes import COLOUR_NAMES, FINE, MODERATE, SHAPES, SHIFTED, V3, Domain, class_names, generate

IMAGE_DIR = "images"
_SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}
_ORDER_SEED = 20240607  # fixes which shape / colour leads the Latin square (variant 0); never tied to --seed
SHAPES_LT_DOMAINS: dict[str, Domain] = {"fine": FINE, "moderate": MODERATE, "hard": SHIFTED, "v3": V3}
DEFAULT_DOMAIN = "v3"  # world v3 (docs/world.md, instrument card); v2: "fine", v1: "hard"
# Each domain's train counts: the exponential profile (v1, v2) or ImageNet-LT's group sizes (v3), and defaults.
GROUP_PROFILE_DOMAINS = frozenset({"v3"})
DOMAIN_COUNT_DEFAULTS: dict[str, tuple[float, int]] = {"v3": (50.0, 200)}  # (imbalance ratio, max count)
COUNT_DEFAULTS = (100.0, 300)
# World v3's variant k draws its class order, looks and shades from seed k + 1: seed 1 is the class order whose
# frozen zero-shot accuracy is the flattest across the groups on a screening set of images no split holds
# (K4, docs/world.md; benchmarks/world/group_balance.py). Other domains: seed k.
DOMAIN_VARIANT_OFFSET: dict[str, int] = {"v3": 1}
IMAGENET_LT_GROUPS = (385, 479, 136)  # ImageNet-LT's classes many / medium / few (of 1,000)
_CHUNK = 512  # images rendered per call; part of the definition of the stream, do not change


def compute_class_order(variant: int = 0) -> list[int]:
    """World class ids in downstream order (index = downstream label, 0 = most frequent).

    Rank ``r`` takes shape ``s = r % 8`` and colour ``(r // 8 + s) % 10`` of seeded permutations of
    the shapes and colours: all 80 pairs, each block of 8 ranks holds every shape. ``variant`` 0 is
    the shipped order; another variant draws other permutations.
    """
    if variant < 0:
        raise SageError(f"--variant must be >= 0, got {variant}")
    rng = np.random.default_rng(_ORDER_SEED if variant == 0 else [_ORDER_SEED, variant])
    shape_perm = rng.permutation(len(SHAPES))
    colour_perm = rng.permutation(len(COLOUR_NAMES))
    order = []
    for rank in range(len(SHAPES) * len(COLOUR_NAMES)):
        s = rank % len(SHAPES)
        c = (rank // len(SHAPES) + s) % len(COLOUR_NAMES)
        order.append(int(colour_perm[c]) * len(SHAPES) + int(shape_perm[s]))
    return order


def compute_train_counts(num_classes: int, imbalance_ratio: float, max_count: int) -> list[int]:
    """``floor(max_count * imbalance_ratio ** (-i / (C - 1)))`` for ``i`` in ``0..C-1``."""
    # The tiny epsilon keeps exact values (e.g. 300 / 100 = 3) from flooring to one less.
    return [
        math.floor(max_count * imbalance_ratio ** (-i / max(1, num_classes - 1)) + 1e-9)
        for i in range(num_classes)
    ]


def compute_group_counts(num_classes: int, imbalance_ratio: float, max_count: int, many: int = 100, few: int = 20,
                         shares: tuple[int, int, int] = IMAGENET_LT_GROUPS) -> list[int]:
    """Train counts whose many (> ``many``) / medium / few (< ``few``) groups hold ``shares`` of the classes.

    The log-count falls linearly inside each group: many from ``max_count`` to ``many + 1``, medium
    from ``many`` to ``few``, few from ``few - 1`` to ``max_count / imbalance_ratio`` (floored), so
    with 80 classes ImageNet-LT's 38.5 / 47.9 / 13.6% become 31 / 38 / 11 classes. Ratio 1: balanced.
    """
    if imbalance_ratio == 1:
        return [max_count] * num_classes
    low = max_count / imbalance_ratio
    if max_count <= many + 1 or low >= few:
        raise SageError(f"--max-count {max_count} and --imbalance-ratio {imbalance_ratio:g} must span the groups: "
                        f"the most frequent class above {many + 1} images, the rarest below {few} (or --domain fine: "
                        "world v2's exponential profile)")
    n_many, n_few = (round(num_classes * share / sum(shares)) for share in (shares[0], shares[2]))
    counts = []
    for high, end, size in ((max_count, many + 1, n_many), (many, few, num_classes - n_many - n_few),
                            (few - 1, low, n_few)):
        steps = np.linspace(math.log(high), math.log(end), size) if size > 1 else np.array([math.log(high)])
        counts += [math.floor(math.exp(v) + 1e-9) for v in steps]
    return counts


def _validate(imbalance_ratio: float, max_count: int, val_per_class: int, test_per_class: int) -> None:
    if imbalance_ratio < 1:
        raise SageError(f"--imbalance-ratio must be >= 1, got {imbalance_ratio}")
    if max_count < 1:
        raise SageError(f"--max-count must be >= 1, got {max_count}")
    if max_count / imbalance_ratio < 1:
        raise SageError(
            f"--max-count {max_count} / --imbalance-ratio {imbalance_ratio} leaves the rarest class no "
            "training image; raise --max-count or lower --imbalance-ratio"
        )
    if val_per_class < 0 or test_per_class < 1:
        raise SageError(f"need --val-per-class >= 0 and --test-per-class >= 1, got {val_per_class}, {test_per_class}")


def _write_split(out_dir: Path, split: str, labels: np.ndarray, world_ids: np.ndarray, seed: int,
                 domain: Domain) -> list[str]:
    """Render the ``domain`` images of one split (downstream ``labels``) to PNG; return their relative paths."""
    rng = np.random.default_rng([seed, _SPLIT_STREAMS[split]])
    folder = out_dir / IMAGE_DIR / split
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for start in range(0, len(labels), _CHUNK):
        batch = generate(world_ids[labels[start : start + _CHUNK]], rng, domain)
        for offset, image in enumerate(batch.images):
            relative = f"{IMAGE_DIR}/{split}/{start + offset:06d}.png"
            Image.fromarray(image).save(out_dir / relative)
            paths.append(relative)
    return paths


def compute_variant_seed(domain: str, variant: int) -> int:
    """The seed of ``variant``'s class order and (for domains with class shades) its shades and looks."""
    return variant + DOMAIN_VARIANT_OFFSET.get(domain, 0)


def resolve_domain(domain: str, variant: int = 0) -> Domain:
    """The world :class:`Domain` a ``domain`` name renders in ``variant``: other variants of a domain with class
    shades (``fine``, ``v3``) draw other shades (and v3 other looks)."""
    world_domain = SHAPES_LT_DOMAINS[domain]
    if world_domain.class_shift:
        world_domain = dataclasses.replace(world_domain, class_shift_seed=compute_variant_seed(domain, variant))
    return world_domain


def prepare_shapes_lt(
    out_dir: Path,
    *,
    imbalance_ratio: float | None = None,
    max_count: int | None = None,
    val_per_class: int = 20,
    test_per_class: int = 50,
    seed: int = 0,
    domain: str = DEFAULT_DOMAIN,
    variant: int = 0,
) -> tuple[pd.DataFrame, list[str]]:
    """Write the Shapes-LT images under ``out_dir/images`` and return (manifest, class names).

    The manifest has ``sample_id`` (int64, 0.. in train, val, test order), ``path`` (relative to
    ``out_dir``), ``label`` (downstream class id, 0 = head) and ``split``. Same arguments -> the
    same pixels. ``imbalance_ratio`` and ``max_count`` default to the domain's
    (:data:`DOMAIN_COUNT_DEFAULTS`, else 100 and 300).
    """
    if domain not in SHAPES_LT_DOMAINS:
        raise SageError(f"--domain must be one of {', '.join(SHAPES_LT_DOMAINS)}, got {domain!r}")
    default_ratio, default_max = DOMAIN_COUNT_DEFAULTS.get(domain, COUNT_DEFAULTS)
    imbalance_ratio = default_ratio if imbalance_ratio is None else imbalance_ratio
    max_count = default_max if max_count is None else max_count
    _validate(imbalance_ratio, max_count, val_per_class, test_per_class)
    order = np.asarray(compute_class_order(compute_variant_seed(domain, variant)), dtype=np.int64)
    world_domain = resolve_domain(domain, variant)
    profile = compute_group_counts if domain in GROUP_PROFILE_DOMAINS else compute_train_counts
    counts = profile(len(order), imbalance_ratio, max_count)
    per_split = {
        "train": np.repeat(np.arange(len(order)), counts),
        "val": np.repeat(np.arange(len(order)), val_per_class),
        "test": np.repeat(np.arange(len(order)), test_per_class),
    }
    frames = []
    for split, labels in per_split.items():
        paths = _write_split(Path(out_dir), split, labels, order, seed, world_domain)
        frames.append(pd.DataFrame({"path": paths, "label": labels.astype(np.int64), "split": split}))
    manifest = pd.concat(frames, ignore_index=True)
    manifest.insert(0, "sample_id", np.arange(len(manifest), dtype=np.int64))
    names = class_names()
    return manifest, [names[i] for i in order]
