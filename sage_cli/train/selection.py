"""Model selection during a run: the best evaluation by a named figure, and early stopping.

After each evaluation :meth:`Selection.observe` compares ``--select-metric`` (``top1``, ``few`` or
``mean-groups``, the mean of the many / medium / few top-1 present) with the best so far. Only a
strictly higher value is better, so among equal evaluations the earliest is kept. With
``--keep best`` the trainable weights of the best evaluation are held (on the CPU) to be written
into each checkpoint and, at the end, beside the last weights; with ``--patience N`` the run stops
after N evaluations in a row that were not better. Its state travels in every checkpoint, so a
resumed run keeps its best-so-far and its count.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch

from sage_cli.artifacts import GROUPS
from sage_cli.config import option_label
from sage_cli.errors import SageError
from sage_cli.schema import RunConfig

BEST = "best.safetensors"  # beside adapter.safetensors (the last step's), and in each checkpoint


def compute_selection_value(result: dict[str, Any], metric: str) -> float | None:
    """``metric`` of one evaluation's figures (None when it has no samples for it)."""
    if metric == "mean-groups":
        values = [result[g] for g in GROUPS if result.get(g) is not None]
        return sum(values) / len(values) if values else None
    if metric in ("top1", "few"):
        return result.get(metric)
    raise ValueError(f"unknown selection metric {metric!r}")


@dataclass
class Selection:
    """The best evaluation so far (``best``: step, epoch, metric, value), its weights under
    ``--keep best``, and how many evaluations since were not better."""

    metric: str
    patience: int
    keep_best: bool
    best: dict[str, Any] | None = None
    since_best: int = 0
    weights: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    @classmethod
    def from_config(cls, run: RunConfig) -> Selection:
        return cls(run.select_metric, run.patience, run.keep == "best")

    @property
    def active(self) -> bool:
        """Whether anything follows the evaluations (otherwise the run keeps its last weights only)."""
        return self.keep_best or self.patience > 0

    @property
    def exhausted(self) -> bool:
        """Whether ``patience`` evaluations in a row were not better: the run stops."""
        return self.patience > 0 and self.since_best >= self.patience

    def observe(self, result: dict[str, Any], weights: dict[str, torch.Tensor]) -> bool:
        """Take one evaluation (``step``, ``epoch``, ``split`` and its figures) and the weights it
        scored; True when it is the new best."""
        value = compute_selection_value(result, self.metric)
        if value is None:
            raise SageError(f"{option_label('select_metric')} {self.metric}: the {result.get('split')} split has no "
                            f"images for it at step {result['step']}; choose top1")
        if self.best is not None and value <= self.best["value"]:
            self.since_best += 1
            return False
        self.best = {"step": result["step"], "epoch": result["epoch"], "split": result.get("split"),
                     "metric": self.metric, "value": value}
        self.since_best = 0
        if self.keep_best:
            self.weights = {k: v.detach().to("cpu", copy=True) for k, v in weights.items()}
        return True

    def state(self) -> str:
        """The checkpointed part (the weights go in their own file)."""
        return json.dumps({"best": self.best, "since_best": self.since_best})

    def load_state(self, text: str | None, weights: dict[str, torch.Tensor] | None) -> None:
        state = json.loads(text) if text else {}
        self.best, self.since_best = state.get("best"), int(state.get("since_best", 0))
        self.weights = weights if self.keep_best and self.best is not None else None


