"""What the shapes and colours of the world look like, in words: attribute captions and class descriptions.

World v2 ("open") captions describe an image by its class name, by its attributes ("a shape with
six equal sides, in a deep blue"), or by both, so that the toy CLIP's text tower learns what the
words for shapes and colours look like, not only the 80 names. Attributes are shared between
classes (circle and ring are both round, red and orange are both warm): every class of the
downstream task shares its shape with 9 and its colour with 7 others, which is how text can carry
a rare class ("purple star") that looks like common ones ("red star", "purple circle").

:func:`compute_class_descriptions` turns the same vocabulary into a few sentences per class (the
world's analogue of LLM-written descriptors), which ``sage encode-text --descriptions`` reads from
the file :func:`save_class_descriptions` writes (JSON ``{class name: [sentences]}``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sage_cli.artifacts import write_bytes_atomic

# Two phrasings of each shape's look (the first is also the descriptions file's).
SHAPE_ATTRIBUTES: dict[str, tuple[str, str]] = {
    "circle": ("a round disc with no corners", "a filled round shape"),
    "square": ("a shape with four equal sides and four corners", "a box shape with right angles"),
    "triangle": ("a shape with three sides and three corners", "a pointed shape with three straight edges"),
    "star": ("a five-pointed star", "a shape with five sharp points"),
    "hexagon": ("a shape with six equal sides", "a six-cornered shape with flat edges"),
    "cross": ("a plus sign: two crossing bars", "a shape with four straight arms"),
    "ring": ("a ring: a circle with a hole", "a round band with an empty centre"),
    "heart": ("a heart with two rounded lobes and a point", "a love heart shape"),
}
COLOUR_ATTRIBUTES: dict[str, tuple[str, str]] = {
    "red": ("a warm red colour", "the colour of a ripe tomato"),
    "orange": ("a warm orange colour, between red and yellow", "the colour of an orange fruit"),
    "yellow": ("a bright yellow colour", "the colour of a lemon"),
    "green": ("a grass green colour", "the colour of fresh leaves"),
    "cyan": ("a light blue-green colour", "the colour of shallow sea water"),
    "blue": ("a deep blue colour", "the colour of a clear night sky"),
    "purple": ("a violet colour", "a colour between red and blue"),
    "pink": ("a light pinkish red colour", "the colour of candy floss"),
    "brown": ("a dark earthy brown colour", "the colour of wood"),
    "white": ("a pure white colour", "the colour of snow"),
}

# Caption families of the open world; {name} is "<colour> <shape>", {shape_attr}/{colour_attr} a phrasing.
_NAME_TEMPLATES: tuple[str, ...] = (
    "a photo of a {colour} {shape}.",
    "a {size}{colour} {shape}.",
    "a {size}{colour} {shape} on a {bg} background.",
    "a picture of a {colour} {shape} in the {where}.",
    "{colour} {shape}",
    "a {colour} {shape} near the {where} of the image.",
)
_ATTRIBUTE_TEMPLATES: tuple[str, ...] = (
    "{shape_attr}, in {colour_attr}.",
    "a picture of {shape_attr} in {colour_attr}.",
    "{shape_attr} on a {bg} background, in {colour_attr}.",
    "an object in {colour_attr}: {shape_attr}.",
)
_BOTH_TEMPLATES: tuple[str, ...] = (
    "a {colour} {shape}: {shape_attr} in {colour_attr}.",
    "a {size}{colour} {shape}, {shape_attr}.",
    "a {colour} {shape}, which is {colour_attr}.",
    "{shape_attr}: a {colour} {shape} on a {bg} background.",
)
CAPTION_FAMILIES: tuple[tuple[str, ...], ...] = (_NAME_TEMPLATES, _ATTRIBUTE_TEMPLATES, _BOTH_TEMPLATES)
_FAMILY_P = (0.4, 0.3, 0.3)  # name / attributes only / both


def compute_open_captions(colours: Sequence[str], shapes: Sequence[str], size_words: Sequence[str],
                          where_words: Sequence[str], bg_words: Sequence[str], rng: np.random.Generator) -> list[str]:
    """One caption per image: a family (names 40%, attributes 30%, both 30%), a template, phrasings."""
    n = len(colours)
    family = rng.choice(len(CAPTION_FAMILIES), size=n, p=_FAMILY_P)
    pick = rng.integers(0, 1 << 30, size=n)  # one draw picks template and both phrasings
    phrasing = rng.integers(0, 2, size=(n, 2))
    captions = []
    for i in range(n):
        templates = CAPTION_FAMILIES[family[i]]
        colour, shape = colours[i], shapes[i]
        captions.append(templates[pick[i] % len(templates)].format(
            colour=colour, shape=shape, size=size_words[i], bg=bg_words[i], where=where_words[i],
            shape_attr=SHAPE_ATTRIBUTES[shape][phrasing[i, 0]],
            colour_attr=COLOUR_ATTRIBUTES[colour][phrasing[i, 1]],
        ))
    return captions


def compute_class_descriptions(names: Sequence[str]) -> dict[str, list[str]]:
    """Attribute sentences for each ``"<colour> <shape>"`` class name, in the given order.

    Each class gets four sentences built from its shape's and colour's first phrasing; they never
    repeat the pretraining captions word for word (those put the attributes in other frames).
    """
    descriptions = {}
    for name in names:
        colour, _, shape = name.partition(" ")
        if colour not in COLOUR_ATTRIBUTES or shape not in SHAPE_ATTRIBUTES:
            raise ValueError(f"{name!r} is not a class of the shapes world")
        shape_attr, colour_attr = SHAPE_ATTRIBUTES[shape][0], COLOUR_ATTRIBUTES[colour][0]
        descriptions[name] = [
            f"a {name}, {shape_attr}.",
            f"a {name} in {colour_attr}.",
            f"{shape_attr}, coloured in {colour_attr}.",
            f"a {shape} whose colour is {colour_attr}.",
        ]
    return descriptions


def compute_look_descriptions(names: Sequence[str], looks: Sequence[Sequence[str]]) -> dict[str, list[str]]:
    """World v3's descriptions: one sentence per look of each class (``looks[i]``, e.g. ``"small red star on a
    striped background"``), in the words of the pretraining captions' size and background phrases."""
    return {name: [f"a {look}." for look in class_looks] for name, class_looks in zip(names, looks)}


def save_class_descriptions(path: Path, names: Sequence[str], looks: Sequence[Sequence[str]] | None = None) -> Path:
    """Write the descriptions of ``names`` as JSON ``{class name: [sentences]}`` (atomically); with ``looks``,
    world v3's (:func:`compute_look_descriptions`)."""
    described = compute_class_descriptions(names) if looks is None else compute_look_descriptions(names, looks)
    write_bytes_atomic(Path(path), (json.dumps(described, indent=2) + "\n").encode("utf-8"))
    return Path(path)
