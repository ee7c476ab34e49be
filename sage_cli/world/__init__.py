"""The embedded shapes world and its toy CLIP: a small, fully local setting to run Sage end to end."""

from __future__ import annotations

from pathlib import Path

from sage_cli.world.shapes import (
    CLEAN,
    DOMAINS,
    NUM_CLASSES,
    SHIFTED,
    ZERO_SHOT_TEMPLATE,
    Domain,
    WorldBatch,
    balanced_labels,
    class_names,
    generate,
)

TOY_MODEL = "sage-toy"
# The shipped toy CLIP weights; pass as `--model sage-toy --pretrained <this path>`.
TOY_WEIGHTS: Path = Path(__file__).resolve().parent.parent / "assets" / "sage_toy.safetensors"
# Attribute sentences for every class of the world: `sage encode-text --descriptions <this path>`.
SHAPES_DESCRIPTIONS: Path = Path(__file__).resolve().parent.parent / "assets" / "shapes_descriptions.json"

__all__ = [
    "CLEAN",
    "DOMAINS",
    "NUM_CLASSES",
    "SHAPES_DESCRIPTIONS",
    "SHIFTED",
    "TOY_MODEL",
    "TOY_WEIGHTS",
    "ZERO_SHOT_TEMPLATE",
    "Domain",
    "WorldBatch",
    "balanced_labels",
    "class_names",
    "generate",
]
