"""The shapes world: a procedurally generated, captioned image world (8 shapes x 10 colours).

Every image holds one coloured shape at a random position, size and rotation on a noisy
background. A :class:`Domain` says what the background looks like, whether a colour cast is
applied and how images are captioned. World v1: ``CLEAN`` (plain noisy backgrounds, no cast) is
what the first toy CLIP was pretrained on, ``SHIFTED`` (striped / checkered backgrounds at contrast
0.5, amber cast 0.35) its downstream domain (``sage prepare shapes-lt --domain hard``). World v2:
``OPEN`` (plain, gradient and mildly textured backgrounds, captions with attributes as well as names,
:mod:`sage_cli.world.attributes`) is the broader pretraining world; its downstream domains are
``FINE`` (mild textures, an amber cast and a fixed shade offset per class,
:func:`class_colour_offsets`) and ``MODERATE`` (stronger textures, no class shades).
``CAST_ONLY``, ``MILD_TEXTURE_ONLY`` and ``SHADES_ONLY`` split ``FINE`` into its components for the
domain-gap table (``CAST_ONLY`` and ``TEXTURE_ONLY`` split ``MODERATE``).

Rendering is vectorised numpy over whole batches: each pixel centre is mapped into the shape's own
frame (translate, rotate, scale) and tested against the shape (analytic for circle and ring, an
even-odd polygon test otherwise), at 2x supersampling then averaged down. Output is uint8 so an
image written to PNG and read back is bit-identical to the array the model saw. Everything is a
pure function of the seed.

This module is a measuring instrument: its design is fixed (docs/world.md) and must not be tuned
after the shipped toy weights were trained on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sage_cli.world.attributes import COLOUR_ATTRIBUTES, SHAPE_ATTRIBUTES, compute_open_captions

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "cross", "ring", "heart")

# Plain colour names with well separated hues/lightness (RGB in [0, 1]).
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.08, 0.08),
    "orange": (1.00, 0.55, 0.00),
    "yellow": (0.98, 0.92, 0.10),
    "green": (0.10, 0.68, 0.18),
    "cyan": (0.00, 0.82, 0.88),
    "blue": (0.10, 0.22, 0.92),
    "purple": (0.55, 0.12, 0.78),
    "pink": (1.00, 0.50, 0.78),
    "brown": (0.50, 0.28, 0.08),
    "white": (0.98, 0.98, 0.98),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
assert tuple(SHAPE_ATTRIBUTES) == SHAPES and tuple(COLOUR_ATTRIBUTES) == COLOUR_NAMES
NUM_CLASSES = len(SHAPES) * len(COLOURS)
ZERO_SHOT_TEMPLATE = "a photo of a {}."

_SUPERSAMPLE = 2
_COLOUR_JITTER = 0.05  # std of per-object RGB jitter
_RADIUS_RANGE = (0.30, 0.65)  # circumradius, in units of half the image side
_BACKGROUND_KINDS = ("plain", "gradient", "stripes", "checkers")
_CLASS_SHIFT_SEED = 15015  # the stream of class_colour_offsets, apart from every image seed
_MODE_SEED = 22022  # the stream of class_modes (world v3), apart from every image seed
_FAMILY_SEED = 22023  # the stream of the colour families' shared offsets (world v3)
# World v3's appearance modes: a mode is a (size, background) look; sizes as radius ranges, named as in captions.
MODE_SIZES: dict[str, tuple[float, float]] = {"small": (0.30, 0.40), "large": (0.55, 0.65)}


@dataclass(frozen=True)
class Domain:
    """Everything that distinguishes one domain of the world from another.

    ``textures`` empty means plain backgrounds (a random grey-ish tone with a gentle gradient);
    otherwise each image draws one texture from it, painted in two random colours mixed by
    ``texture_contrast``. ``backgrounds`` (world v2) overrides both: each image draws one kind from
    it (``plain``, ``gradient``, ``stripes``, ``checkers``), textures at a contrast drawn from
    ``contrast_range``. ``cast_strength`` blends the finished image towards ``cast_colour``.
    ``captions``: ``names`` (v1 templates) or ``open`` (names and attributes).
    """

    name: str
    textures: tuple[str, ...] = ()
    texture_contrast: float = 0.0
    cast_colour: tuple[float, float, float] = (1.0, 1.0, 1.0)
    cast_strength: float = 0.0
    noise_std: float = 0.04  # per-pixel Gaussian noise, in [0, 1] intensity units
    colour_jitter: float = _COLOUR_JITTER  # std of each object's RGB jitter
    backgrounds: tuple[str, ...] = ()
    contrast_range: tuple[float, float] = (0.0, 0.0)
    captions: str = "names"
    class_shift: float = 0.0  # norm of each class's fixed RGB offset (see class_colour_offsets)
    class_shift_seed: int = 0  # seeds the class offsets, and in world v3 the modes and family offsets
    modes: int = 0  # world v3: appearance modes per class (0: none; see class_modes)
    mode_shift: float = 0.0  # world v3: norm of each (class, mode)'s own RGB offset
    family_shift: float = 0.0  # world v3: norm of the RGB offset shared by all classes of one colour

    def __post_init__(self) -> None:
        unknown = set(self.textures) - {"stripes", "checkers"}
        unknown |= set(self.backgrounds) - set(_BACKGROUND_KINDS)
        if unknown:
            raise ValueError(f"domain {self.name!r}: unknown textures {sorted(unknown)}")
        if self.captions not in ("names", "open"):
            raise ValueError(f"domain {self.name!r}: captions must be names or open")
        if not 0.0 <= self.cast_strength <= 1.0:
            raise ValueError(f"domain {self.name!r}: cast_strength must be in [0, 1]")
        if min(self.class_shift, self.mode_shift, self.family_shift) < 0.0:
            raise ValueError(f"domain {self.name!r}: class_shift, mode_shift and family_shift must be >= 0")
        if self.modes and (not self.backgrounds or self.modes > len(MODE_SIZES) * len(self.backgrounds)):
            raise ValueError(f"domain {self.name!r}: modes need backgrounds, at most {len(MODE_SIZES)} x their number")


def class_colour_offsets(domain: Domain) -> np.ndarray:
    """Each world class's fixed RGB offset ``[NUM_CLASSES, 3]`` in this domain (zeros without a class shift).

    A direction drawn uniformly on the sphere per class (seeded by ``domain.class_shift_seed``), of
    norm ``domain.class_shift``: the downstream shade of a "red star" differs from that of a "red
    circle", a class-specific appearance that pretraining never saw and text cannot describe.
    """
    if domain.class_shift == 0.0:
        return np.zeros((NUM_CLASSES, 3), dtype=np.float64)
    direction = np.random.default_rng([_CLASS_SHIFT_SEED, domain.class_shift_seed]).normal(size=(NUM_CLASSES, 3))
    return domain.class_shift * direction / np.linalg.norm(direction, axis=1, keepdims=True)


@dataclass(frozen=True)
class ClassModes:
    """World v3's appearance modes of every class: ``size`` and ``background`` ``[C, M]`` (indices into
    :data:`MODE_SIZES` and ``domain.backgrounds``) and ``offset`` ``[C, M, 3]``, each mode's RGB offset
    (the class's colour family's shared offset + the class's own + the mode's own)."""

    size: np.ndarray
    background: np.ndarray
    offset: np.ndarray


def class_modes(domain: Domain) -> ClassModes:
    """The ``domain.modes`` looks of each world class (seeded by ``domain.class_shift_seed``).

    Each class draws ``modes`` distinct (size, background) pairs: a few images of a class show some
    of its looks, not all, and its descriptions name them (:func:`~sage_cli.world.attributes.compute_v3_descriptions`).
    Each mode also has a shade of its own (norm ``mode_shift``) that no text names, on top of the
    class's (``class_shift``, :func:`class_colour_offsets`) and its colour family's (``family_shift``).
    """
    looks = len(MODE_SIZES) * len(domain.backgrounds)
    rng = np.random.default_rng([_MODE_SEED, domain.class_shift_seed])
    pick = np.stack([rng.permutation(looks)[: domain.modes] for _ in range(NUM_CLASSES)])  # [C, M]
    offset = _random_offsets(rng, (NUM_CLASSES, domain.modes), domain.mode_shift)  # [C, M, 3]
    family = _random_offsets(np.random.default_rng([_FAMILY_SEED, domain.class_shift_seed]), (len(COLOURS),),
                             domain.family_shift)  # [colours, 3]
    colour_idx, _ = split_class_id(np.arange(NUM_CLASSES))
    offset = offset + (family[colour_idx] + class_colour_offsets(domain))[:, None, :]
    return ClassModes(size=pick // len(domain.backgrounds), background=pick % len(domain.backgrounds), offset=offset)


_BACKGROUND_WORDS = {"gradient": "gradient", "stripes": "striped", "checkers": "checkered"}


def describe_looks(domain: Domain) -> list[list[str]]:
    """Each world class's looks in words, ``"<size> <name> on a <background> background"`` (world v3)."""
    modes, sizes, names = class_modes(domain), list(MODE_SIZES), class_names()
    return [[f"{sizes[modes.size[c, m]]} {names[c]} on a {_BACKGROUND_WORDS[domain.backgrounds[modes.background[c, m]]]}"
             " background" for m in range(domain.modes)] for c in range(NUM_CLASSES)]


def _random_offsets(rng: np.random.Generator, shape: tuple[int, ...], norm: float) -> np.ndarray:
    """Offsets ``[*shape, 3]`` of the given norm in uniformly random directions (always drawn, so streams stay put)."""
    direction = rng.normal(size=(*shape, 3))
    return norm * direction / np.linalg.norm(direction, axis=-1, keepdims=True)


CLEAN = Domain("clean")
SHIFTED = Domain(
    "shifted",
    textures=("stripes", "checkers"),
    texture_contrast=0.5,
    cast_colour=(0.95, 0.62, 0.30),  # a warm amber cast
    cast_strength=0.35,
)
_AMBER = (0.95, 0.62, 0.30)
OPEN = Domain("open", backgrounds=_BACKGROUND_KINDS, contrast_range=(0.05, 0.3), captions="open")
MODERATE = Domain("moderate", textures=("stripes", "checkers"), texture_contrast=0.45, cast_colour=_AMBER,
                  cast_strength=0.2)
CAST_ONLY = Domain("cast-only", cast_colour=_AMBER, cast_strength=MODERATE.cast_strength)
TEXTURE_ONLY = Domain("texture-only", textures=MODERATE.textures, texture_contrast=MODERATE.texture_contrast)
# World v2's second downstream domain (docs/world.md): mild textures (within the open world's contrasts), the
# amber cast, and a fixed shade offset per class that pretraining never saw (class_colour_offsets),
# the analogue of a fine-grained dataset: what tells a class apart must partly be learnt from its own images.
FINE = Domain("fine", textures=("stripes", "checkers"), texture_contrast=0.2, cast_colour=_AMBER, cast_strength=0.2,
              class_shift=0.3)
MILD_TEXTURE_ONLY = Domain("mild-texture-only", textures=FINE.textures, texture_contrast=FINE.texture_contrast)
SHADES_ONLY = Domain("shades-only", class_shift=FINE.class_shift)
# World v3's downstream domain (docs/world.md): each class shows itself in a few looks (size x background, the
# open world's mild contrasts) that its descriptions name and its name does not, each look with a shade of its
# own; a shade shared by each colour family and one per class; colour jitter 0.08; the amber cast. Trial B of
# benchmarks/world/TRIALS-v3.md (its text and class order: trials E, F; the card in docs/world.md). See class_modes.
V3 = Domain("v3", backgrounds=("gradient", "stripes", "checkers"), contrast_range=(0.1, 0.3), cast_colour=_AMBER,
            cast_strength=0.2, modes=3, mode_shift=0.15, family_shift=0.05, class_shift=0.1, colour_jitter=0.08)
# Order matters: an evaluation stream is seeded by the domain's index here (append, never reorder).
DOMAINS: dict[str, Domain] = {d.name: d for d in (CLEAN, SHIFTED, OPEN, MODERATE, CAST_ONLY, TEXTURE_ONLY, FINE,
                                                  MILD_TEXTURE_ONLY, SHADES_ONLY, V3)}


@dataclass(frozen=True)
class WorldBatch:
    """Images ``[N, H, W, 3]`` uint8, class ids ``[N]`` int64 and one caption per image."""

    images: np.ndarray
    labels: np.ndarray
    captions: list[str]


def class_names() -> list[str]:
    """The world's class names, ``"<colour> <shape>"``; class id = colour * len(SHAPES) + shape."""
    return [f"{colour} {shape}" for colour in COLOUR_NAMES for shape in SHAPES]


def split_class_id(class_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(colour index, shape index) of each class id."""
    class_ids = np.asarray(class_ids, dtype=np.int64)
    return class_ids // len(SHAPES), class_ids % len(SHAPES)


def balanced_labels(per_class: int, rng: np.random.Generator) -> np.ndarray:
    """``per_class`` copies of every class id, shuffled."""
    labels = np.repeat(np.arange(NUM_CLASSES, dtype=np.int64), per_class)
    return rng.permutation(labels)


def generate(
    labels: np.ndarray,
    seed: int | np.random.Generator,
    domain: Domain = CLEAN,
    image_size: int = 32,
) -> WorldBatch:
    """Render one image (and caption) for each class id in ``labels``; a pure function of the seed."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 1 or (labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES)):
        raise ValueError(f"labels must be a 1-d array of class ids in [0, {NUM_CLASSES})")
    n = labels.size
    colour_idx, shape_idx = split_class_id(labels)
    if domain.modes:  # world v3: each image one of its class's looks
        modes, mode = class_modes(domain), rng.integers(0, domain.modes, size=n)
        size_range = np.asarray(list(MODE_SIZES.values()))[modes.size[labels, mode]]  # [N, 2]
        radius = size_range[:, 0] + (size_range[:, 1] - size_range[:, 0]) * rng.uniform(size=n)
        offset, kinds = modes.offset[labels, mode], modes.background[labels, mode]
    else:
        radius = rng.uniform(*_RADIUS_RANGE, size=n)
        offset, kinds = class_colour_offsets(domain)[labels], None
    centre = rng.uniform(-1.0, 1.0, size=(n, 2)) * (0.95 - radius)[:, None]  # keep the shape inside
    angle = rng.uniform(0.0, 2.0 * np.pi, size=n)
    rgb = np.asarray([COLOURS[c] for c in COLOUR_NAMES])[colour_idx]
    rgb = rgb + offset
    rgb = np.clip(rgb + rng.normal(0.0, domain.colour_jitter, size=(n, 3)), 0.0, 1.0)

    background, bg_words = _render_backgrounds(n, image_size, domain, rng, kinds)  # [N, S, S, 3]
    mask = _render_masks(shape_idx, centre, radius, angle, _pixel_grid(image_size * _SUPERSAMPLE))
    coverage = _downsample(mask[..., None])  # [N, S, S, 1], anti-aliased edges
    image = background * (1.0 - coverage) + rgb[:, None, None, :].astype(np.float32) * coverage
    image = image + rng.standard_normal(size=image.shape, dtype=np.float32) * domain.noise_std
    if domain.cast_strength > 0:
        cast = np.asarray(domain.cast_colour, dtype=np.float32) * domain.cast_strength
        image = (1.0 - domain.cast_strength) * image + cast
    images = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    if domain.captions == "open":
        sizes = [_size_word(r) for r in radius]
        wheres = [_where_word(cx, cy) for cx, cy in centre]
        captions = compute_open_captions([COLOUR_NAMES[c] for c in colour_idx], [SHAPES[k] for k in shape_idx],
                                         sizes, wheres, bg_words, rng)
    else:
        captions = compute_captions(labels, radius, centre, bg_words, rng)
    return WorldBatch(images=images, labels=labels, captions=captions)


def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1], x to the right and y downwards, each ``[size, size]``."""
    ticks = ((np.arange(size) + 0.5) / size * 2.0 - 1.0).astype(np.float32)
    y, x = np.meshgrid(ticks, ticks, indexing="ij")
    return x, y


def _downsample(hi: np.ndarray) -> np.ndarray:
    """Average ``_SUPERSAMPLE`` x ``_SUPERSAMPLE`` blocks of ``[N, H, W, C]``."""
    n, h, w, c = hi.shape
    f = _SUPERSAMPLE
    return hi.reshape(n, h // f, f, w // f, f, c).mean(axis=(2, 4), dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Shapes


def _regular_polygon(sides: int, start: float = -np.pi / 2) -> np.ndarray:
    theta = start + np.arange(sides) * 2.0 * np.pi / sides
    return np.stack([np.cos(theta), np.sin(theta)], axis=1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    theta = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)


def _cross(arm: float = 0.36) -> np.ndarray:
    a, b = arm, 1.0
    return np.array(
        [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)]
    )


def _heart(points: int = 32) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, points, endpoint=False)
    x = 16.0 * np.sin(t) ** 3
    y = -(13.0 * np.cos(t) - 5.0 * np.cos(2 * t) - 2.0 * np.cos(3 * t) - np.cos(4 * t))  # y down
    xy = np.stack([x, y + 2.5], axis=1)  # centre the outline
    return xy / np.abs(xy).max()


_POLYGONS: dict[str, np.ndarray] = {
    "square": _regular_polygon(4, start=-np.pi / 4),
    "triangle": _regular_polygon(3),
    "star": _star(),
    "hexagon": _regular_polygon(6),
    "cross": _cross(),
    "heart": _heart(),
}


def _inside_polygon(u: np.ndarray, v: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test of points (u, v) (any shape) against ``[E, 2]`` vertices."""
    inside = np.zeros(u.shape, dtype=bool)
    for (x1, y1), (x2, y2) in zip(vertices, np.roll(vertices, -1, axis=0)):
        if y1 == y2:
            continue  # a horizontal edge never crosses a horizontal ray
        crosses = (y1 > v) != (y2 > v)
        x_at = x1 + (v - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (u < x_at)
    return inside


def _inside_shape(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether points (u, v), in the shape's own unit frame, lie inside ``shape``."""
    r2 = u * u + v * v
    if shape == "circle":
        return r2 <= 1.0
    if shape == "ring":
        return (r2 <= 1.0) & (r2 >= 0.55**2)
    return _inside_polygon(u, v, _POLYGONS[shape])


def _render_masks(
    shape_idx: np.ndarray, centre: np.ndarray, radius: np.ndarray, angle: np.ndarray, coords: tuple
) -> np.ndarray:
    """Binary coverage ``[N, H, W]`` (float32) of each image's shape at its pose."""
    x, y = coords
    centre, radius = centre.astype(np.float32), radius.astype(np.float32)[:, None, None]
    dx = x[None] - centre[:, 0, None, None]  # [N, H, W]
    dy = y[None] - centre[:, 1, None, None]
    cos = np.cos(angle).astype(np.float32)[:, None, None] / radius
    sin = np.sin(angle).astype(np.float32)[:, None, None] / radius
    u = cos * dx + sin * dy  # rotate by -angle and scale into the shape's unit frame
    v = cos * dy - sin * dx
    mask = np.zeros(u.shape, dtype=np.float32)
    for k, shape in enumerate(SHAPES):
        rows = np.flatnonzero(shape_idx == k)
        if rows.size:
            mask[rows] = _inside_shape(shape, u[rows], v[rows])
    return mask


# --------------------------------------------------------------------------------------------
# Backgrounds


def _render_backgrounds(
    n: int, image_size: int, domain: Domain, rng: np.random.Generator, kinds: np.ndarray | None = None
) -> tuple[np.ndarray, list[str]]:
    """Backgrounds ``[N, S, S, 3]`` (float32, about [0, 1]) and a caption word for each.

    ``kinds`` ``[N]`` (indices into ``domain.backgrounds``) fixes each image's kind (world v3's modes)."""
    if domain.backgrounds:
        hi, words = _open_backgrounds(n, _pixel_grid(image_size * _SUPERSAMPLE), domain, rng, kinds)
        return _downsample(hi), words
    if not domain.textures:
        return _plain_backgrounds(n, _pixel_grid(image_size), rng)
    hi, words = _textured_backgrounds(n, _pixel_grid(image_size * _SUPERSAMPLE), domain, rng)
    return _downsample(hi), words


def _plain_backgrounds(n: int, coords: tuple, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    x, y = coords
    grey = rng.uniform(0.12, 0.72, size=(n, 1))
    base = np.clip(grey + rng.uniform(-0.04, 0.04, size=(n, 3)), 0.0, 1.0).astype(np.float32)  # tint
    slope = rng.uniform(-0.06, 0.06, size=(n, 2)).astype(np.float32)
    gradient = slope[:, 0, None, None] * x[None] + slope[:, 1, None, None] * y[None]  # [N, H, W]
    background = base[:, None, None, :] + gradient[..., None]
    words = ["dark" if g < 0.3 else "light" if g > 0.55 else "grey" for g in grey[:, 0]]
    return background, words


def _open_backgrounds(n: int, coords: tuple, domain: Domain, rng: np.random.Generator,
                      kinds: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """World v2 backgrounds: each image one kind of ``domain.backgrounds`` (drawn, or ``kinds``), textures at a
    drawn contrast."""
    kind = rng.integers(0, len(domain.backgrounds), size=n) if kinds is None else kinds
    contrast = rng.uniform(*domain.contrast_range, size=n)
    background = np.empty((n, *coords[0].shape, 3), dtype=np.float32)
    words = [""] * n
    for k, name in enumerate(domain.backgrounds):
        rows = np.flatnonzero(kind == k)
        if not rows.size:
            continue
        if name == "plain":
            part, part_words = _plain_backgrounds(rows.size, coords, rng)
        elif name == "gradient":
            part, part_words = _gradient_backgrounds(rows.size, coords, rng)
        else:
            part, part_words = _textured_backgrounds(rows.size, coords, domain, rng, (name,), contrast[rows])
        background[rows] = part
        for row, word in zip(rows, part_words):
            words[row] = word
    return background, words


def _gradient_backgrounds(n: int, coords: tuple, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """A linear blend between two muted colours along a random direction."""
    x, y = coords
    phi = rng.uniform(0.0, 2.0 * np.pi, size=n).astype(np.float32)[:, None, None]
    t = np.clip(0.5 + 0.5 * (np.cos(phi) * x[None] + np.sin(phi) * y[None]), 0.0, 1.0)[..., None]  # [N, H, W, 1]
    mid = rng.uniform(0.2, 0.7, size=(n, 1, 1, 1))
    c1 = np.clip(mid + rng.uniform(-0.25, 0.25, size=(n, 1, 1, 3)), 0.0, 1.0)
    c2 = np.clip(mid + rng.uniform(-0.25, 0.25, size=(n, 1, 1, 3)), 0.0, 1.0)
    return (c1 * (1.0 - t) + c2 * t).astype(np.float32), ["gradient"] * n


def _textured_backgrounds(
    n: int, coords: tuple, domain: Domain, rng: np.random.Generator,
    textures: tuple[str, ...] | None = None, contrast: np.ndarray | float | None = None,
) -> tuple[np.ndarray, list[str]]:
    x, y = coords
    textures = domain.textures if textures is None else textures
    contrast = domain.texture_contrast if contrast is None else np.asarray(contrast)[:, None]
    kind = rng.integers(0, len(textures), size=n)
    freq = rng.uniform(2.5, 6.0, size=n).astype(np.float32)[:, None, None]  # cycles across the image
    phi = rng.uniform(0.0, np.pi, size=n).astype(np.float32)[:, None, None]
    phase = rng.uniform(0.0, 2.0 * np.pi, size=(n, 2)).astype(np.float32)
    along = np.cos(phi) * x[None] + np.sin(phi) * y[None]  # [N, H, W]
    across = -np.sin(phi) * x[None] + np.cos(phi) * y[None]
    stripes = np.sin(np.pi * freq * along + phase[:, 0, None, None]) > 0
    checkers = stripes ^ (np.sin(np.pi * freq * across + phase[:, 1, None, None]) > 0)
    is_checkers = np.array([textures[k] == "checkers" for k in kind])
    pattern = np.where(is_checkers[:, None, None], checkers, stripes).astype(np.float32)
    mid = rng.uniform(0.25, 0.7, size=(n, 3))
    offset = rng.uniform(-0.5, 0.5, size=(n, 3)) * contrast
    c1 = np.clip(mid + offset, 0.0, 1.0).astype(np.float32)
    c2 = np.clip(mid - offset, 0.0, 1.0).astype(np.float32)
    p = pattern[..., None]
    background = c1[:, None, None, :] * p + c2[:, None, None, :] * (1.0 - p)
    words = ["checkered" if c else "striped" for c in is_checkers]
    return background, words


# --------------------------------------------------------------------------------------------
# Captions

_TEMPLATES: tuple[str, ...] = (
    "a photo of a {colour} {shape}.",
    "a {size}{colour} {shape}.",
    "a {size}{colour} {shape} on a {bg} background.",
    "a picture of a {colour} {shape} in the {where}.",
    "a drawing of a {size}{colour} {shape}.",
    "{colour} {shape}",
    "a {colour} {shape} near the {where} of the image.",
    "an image showing a {size}{colour} {shape}.",
    "a {bg} background with a {colour} {shape}.",
)


def _size_word(radius: float) -> str:
    return "small " if radius < 0.4 else "large " if radius > 0.55 else ""


def _where_word(cx: float, cy: float) -> str:
    row = "top" if cy < -0.2 else "bottom" if cy > 0.2 else ""
    col = "left" if cx < -0.2 else "right" if cx > 0.2 else ""
    return f"{row} {col}".strip() or "centre"


def compute_captions(
    labels: np.ndarray, radius: np.ndarray, centre: np.ndarray, bg_words: list[str], rng: np.random.Generator
) -> list[str]:
    """One caption per image from a randomly drawn template describing its class, size, place, background."""
    colour_idx, shape_idx = split_class_id(labels)
    template_idx = rng.integers(0, len(_TEMPLATES), size=len(labels))
    captions = []
    for i, t in enumerate(template_idx):
        size = _size_word(radius[i])
        captions.append(
            _TEMPLATES[t].format(
                colour=COLOUR_NAMES[colour_idx[i]],
                shape=SHAPES[shape_idx[i]],
                size=size,
                bg=bg_words[i],
                where=_where_word(centre[i, 0], centre[i, 1]),
            )
        )
    return captions
