"""The benchmark recipes in ``data_manifests/``: split-file names and published statistics.

``sage_cli/data_manifests`` is a symlink to the top-level ``data_manifests/`` folder, so the repo
keeps one copy and an installed package still ships them. A prepared dataset whose figures differ
from its recipe's gets one warning per figure: a different or truncated split file is the usual
cause of numbers that do not reproduce.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from sage_cli.errors import SageError

logger = logging.getLogger(__name__)

RECIPE_DIR = Path(__file__).resolve().parent.parent / "data_manifests"
RECIPES = {"imagenet-lt": "imagenet_lt", "places-lt": "places_lt", "inat2018": "inat2018",
           "cifar100-lt": "cifar100_lt"}
_FIGURES = {"classes": "classes", "train": "train images", "val": "val images", "test": "test images",
            "max_count": "largest class (train)", "min_count": "smallest class (train)"}


def load_recipe(dataset: str) -> dict[str, Any]:
    """The parsed recipe of a benchmark (``yaml.safe_load``); SageError if it is missing."""
    path = RECIPE_DIR / f"{RECIPES[dataset]}.yaml"
    try:
        recipe = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SageError(f"{path}: cannot read the {dataset} recipe ({exc.strerror}); reinstall sage") from None
    if not isinstance(recipe, dict) or "statistics" not in recipe:
        raise SageError(f"{path}: not a dataset recipe (no 'statistics')")
    return recipe


def expected_statistics(recipe: dict[str, Any], imbalance_ratio: float | None = None) -> dict[str, int]:
    """The published figures; for CIFAR those of ``imbalance_ratio`` (empty for another ratio)."""
    stats = dict(recipe["statistics"])
    by_ratio = recipe.get("by_imbalance_ratio")
    if by_ratio is not None:
        ratio = {float(k): v for k, v in by_ratio.items()}.get(float(imbalance_ratio or 0))
        if ratio is None:
            return {}
        stats.update(ratio)
    return {k: int(v) for k, v in stats.items()}


def compare_statistics(name: str, actual: dict[str, int], expected: dict[str, int]) -> list[str]:
    """One warning per figure in ``expected`` that ``actual`` does not match (also logged)."""
    warnings = []
    for key, want in expected.items():
        got = actual.get(key)
        if got is None or got == want:
            continue
        warnings.append(
            f"{name}: {_FIGURES.get(key, key)} is {got:,}, the published split has {want:,} "
            "(a different or truncated split file?)"
        )
        logger.warning(warnings[-1])
    return warnings
