"""The report's training curves: loss and eval top-1/few against step, from each run's history.

A run evaluated only at the end (``--eval-every 0``) has one eval point: it is drawn as a marker
with its value written beside it, and the panel says "final eval only".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from matplotlib.figure import Figure


def plot_curves(report: dict[str, Any], colour: Callable[[int], str]) -> Figure | None:
    """Training loss and eval top-1/few against step; a run evaluated once is a labelled marker."""
    runs = [(i, r) for i, r in enumerate(report["runs"]) if r.get("history")]
    if not runs:
        return None
    fig = Figure(figsize=(7.2, 3.3), layout="constrained")
    loss_ax, val_ax = fig.subplots(1, 2)
    evals = {i: [e for e in r["history"]["eval"] if e.get("top1") is not None] for i, r in runs}
    final_only = all(len(points) <= 1 for points in evals.values())
    for i, run in runs:
        train = run["history"]["train"]
        if train:
            loss_ax.plot([t["step"] for t in train], [t["loss"] for t in train], color=colour(i), lw=1.4,
                         label=run["name"], marker="o" if len(train) == 1 else None, ms=5)
        if final_only:
            _plot_lone_eval(val_ax, colour(i), i, run["name"], evals[i])
        elif evals[i]:
            _plot_eval_curve(val_ax, colour(i), run["name"], evals[i])
    loss_ax.set(xlabel="step", ylabel="training loss", title="Training loss")
    split = next((e.get("split") for _, r in runs for e in r["history"]["eval"] if e.get("split")), "val")
    if final_only:  # eval_every 0: one point per run, at the last step
        values = [100 * e[k] for points in evals.values() for e in points for k in ("top1", "few") if e.get(k) is not None]
        val_ax.set(xlabel="step", ylabel="top-1 (%)", title=f"final {split} eval only: top-1 ●, few ▲")
        if values:  # a few points either side, never a range of hundredths around one value
            val_ax.set_ylim(max(-3.0, min(values) - 4), min(103.0, max(values) + 4))
        if any(r["history"]["train"] for _, r in runs):
            lo, hi = loss_ax.get_xlim()
            val_ax.set_xlim(lo, hi + 0.12 * (hi - lo))  # room for the values written right of the markers
        val_ax.legend(fontsize=8, loc="lower left")
    else:
        val_ax.set(xlabel="step", ylabel="top-1 (%)", title=f"{split} top-1 (solid) and few (dotted)")
    loss_ax.legend(fontsize=8)
    return fig


def _plot_eval_curve(ax: Any, colour: str, name: str, points: list[dict[str, Any]]) -> None:
    ax.plot([e["step"] for e in points], [100 * e["top1"] for e in points], color=colour, lw=1.6,
            marker="o", ms=3.5, label=name)
    few = [e for e in points if e.get("few") is not None]
    if few:
        ax.plot([e["step"] for e in few], [100 * e["few"] for e in few], color=colour, lw=1.1,
                ls=":", marker="^", ms=3)


def _plot_lone_eval(ax: Any, colour: str, i: int, name: str, points: list[dict[str, Any]]) -> None:
    """A run evaluated once (at the end): markers with their values written beside them."""
    if not points:
        return
    step = points[-1]["step"]
    side = 1 if i % 2 == 0 else -1  # alternate sides so that close values do not print over each other
    for key, marker, side in (("top1", "o", side), ("few", "^", -side)):
        value = points[-1].get(key)
        if value is None:
            continue
        ax.plot([step], [100 * value], color=colour, marker=marker, ms=6, ls="none",
                label=name if key == "top1" else None, gid=f"lone-eval-{key}-{i}")
        ax.annotate(f"{100 * value:.1f}", (step, 100 * value), xytext=(7 * side, 0), textcoords="offset points",
                    ha="left" if side > 0 else "right", va="center", fontsize=7.5, color=colour)
