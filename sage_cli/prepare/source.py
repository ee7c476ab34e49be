"""What every dataset source hands the prepare stage: one manifest, class names, an image root."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


@dataclass
class SourceData:
    """A loaded dataset before checks: rows ``path, label, split`` with paths relative to ``image_root``."""

    manifest: pd.DataFrame
    names: list[str]
    image_root: Path
    generated: bool = False  # images written by prepare itself: no existence check needed
    group_counts: np.ndarray | None = None  # counts that define many/medium/few (default: train counts)
    unsplit: bool = False  # user data without splits: prepare makes a stratified one (.stratify)
    notes: dict[str, Any] = field(default_factory=dict)  # extra prepare.json fields
    warnings: list[str] = field(default_factory=list)

