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
_ASSETS = Path(__file__).resolve().parent.parent / "assets"
# The shipped toy CLIP weights: v1 (pretrained on the clean world) and v2 (v1 continued on the open world).
TOY_WEIGHTS_V1: Path = _ASSETS / "sage_toy.safetensors"
TOY_WEIGHTS_V2: Path = _ASSETS / "sage_toy_v2.safetensors"
# The default ones, which the demo uses; pass as `--model sage-toy --pretrained <this path>`.
TOY_WEIGHTS: Path = TOY_WEIGHTS_V2
# Attribute sentences for every class of the world: `sage encode-text --descriptions <this path>`.
SHAPES_DESCRIPTIONS: Path = _ASSETS / "shapes_descriptions.json"
# World v3's (`--domain v3`, variant 0): one sentence per look of each class, naming its size and background.
SHAPES_DESCRIPTIONS_V3: Path = _ASSETS / "shapes_descriptions_v3.json"

__all__ = [
    "CLEAN",
    "DOMAINS",
    "NUM_CLASSES",
    "SHAPES_DESCRIPTIONS",
    "SHAPES_DESCRIPTIONS_V3",
    "SHIFTED",
    "TOY_MODEL",
    "TOY_WEIGHTS",
    "TOY_WEIGHTS_V1",
    "TOY_WEIGHTS_V2",
    "ZERO_SHOT_TEMPLATE",
    "Domain",
    "WorldBatch",
    "balanced_labels",
    "class_names",
    "generate",
]
