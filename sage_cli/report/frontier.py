"""The head-tail frontier: a gain or a trade, for any run.

A class-wise additive offset (logit adjustment, a compensation constant) moves accuracy between
head and tail classes without making the classifier better. To tell a method that *helps the
tail* from one that only trades head for tail, each run is swept along one post-hoc scalar:

    predictions(t) = argmax_c  z_c(x) - t * log(pi_c)        (pi: the training prior)

over a fixed grid of t (:data:`FRONTIER_GRID`), on the **val** logits. The many-vs-few (and
overall) accuracy along t is the run's frontier. Against a reference run (its own, unadjusted
point: t = 0):

- *few at matched many*: on the run's curve, the few accuracy where its many accuracy equals the
  reference's, minus the reference's few. Above 0: the run's curve lies above the reference's
  point, a gain; a run that only moved the threshold lies on the reference's own curve (0).
- *overall at the reference's many*: the same for overall accuracy.

The t at which the run's val curve meets the reference's val many is then applied to the run's
**test** logits (val chooses, test reports). All figures are fractions, as in report.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sage_cli import metrics
from sage_cli.report.logits import compute_adjusted_logits

# t in [-1, 2] in steps of 0.05: t = 0 is the run as trained, t = 1 Menon et al.'s post-hoc adjustment.
FRONTIER_GRID: tuple[float, ...] = tuple(round(-1.0 + 0.05 * i, 2) for i in range(61))
FIGURES = ("overall", "many", "medium", "few")


def compute_point(logits: np.ndarray, labels: np.ndarray, groups: Sequence[str], prior: np.ndarray,
                  t: float) -> dict[str, float | None]:
    """Overall and per-group top-1 of the predictions ``argmax(z - t log pi)`` (ties: lowest class id)."""
    predictions = compute_adjusted_logits(logits, prior, t).argmax(axis=1)
    labels = np.asarray(labels)
    overall = float((predictions == labels).mean()) if len(labels) else None
    return {"overall": overall, **metrics.compute_group_accuracy(predictions, labels, groups)}


def compute_frontier(logits: np.ndarray, labels: np.ndarray, groups: Sequence[str], prior: np.ndarray,
                     grid: Sequence[float] = FRONTIER_GRID) -> dict[str, list[float | None]]:
    """The run's curve: ``t`` and, per t of ``grid``, overall / many / medium / few accuracy."""
    points = [compute_point(logits, labels, groups, prior, t) for t in grid]
    return {"t": [float(t) for t in grid], **{key: [p[key] for p in points] for key in FIGURES}}


def compute_at_many(curve: dict[str, list[float | None]], many: float) -> dict[str, float] | None:
    """Where ``curve`` reaches the many accuracy ``many``: t and every figure there, linearly interpolated.

    Between consecutive grid points whose many accuracies bracket ``many``. Where the curve meets
    it more than once (crossings, or a plateau at exactly ``many``), the best point there: highest
    few, then highest overall, then the smallest |t| (the least post-hoc change). None when the
    curve never reaches ``many`` (or a group has no samples).
    """
    if any(v is None for key in ("many", "few", "overall") for v in curve[key]):
        return None
    best: dict[str, float] | None = None
    values = curve["many"]
    for k in range(len(values) - 1):
        a, b = values[k], values[k + 1]
        if not min(a, b) <= many <= max(a, b):
            continue
        weights = (0.0, 1.0) if a == b else ((many - a) / (b - a),)  # a plateau: both of its points
        for w in weights:
            point = {key: (1 - w) * curve[key][k] + w * curve[key][k + 1]
                     for key in ("t", *FIGURES) if curve[key][k] is not None and curve[key][k + 1] is not None}
            if best is None or _rank(point) > _rank(best):
                best = point
    return best


def _rank(point: dict[str, float]) -> tuple[float, float, float]:
    return (point["few"], point["overall"], -abs(point["t"]))


def compare_with_reference(curve: dict[str, list[float | None]], reference_curve: dict[str, list[float | None]],
                           reference_many: float | None) -> dict[str, float | None]:
    """The run's curve against the reference's, both read at the reference's own many accuracy (t = 0).

    ``few_at_matched_many`` / ``overall_at_matched_many``: the run's best point at that many accuracy
    minus the reference's best point there (on its own curve, so a run that only moved the threshold
    scores 0, and the reference against itself scores 0). ``t`` / ``reference_t``: where each point is.
    All None when either curve never reaches that many accuracy.
    """
    none = {"t": None, "reference_t": None, "few_at_matched_many": None, "overall_at_matched_many": None}
    if reference_many is None:
        return none
    ours, theirs = compute_at_many(curve, reference_many), compute_at_many(reference_curve, reference_many)
    if ours is None or theirs is None:
        return none
    return {"t": ours["t"], "reference_t": theirs["t"], "few_at_matched_many": ours["few"] - theirs["few"],
            "overall_at_matched_many": ours["overall"] - theirs["overall"]}


def compute_frontier_comparison(
    run: dict[str, Any], reference: dict[str, Any], prior: np.ndarray, groups: Sequence[str],
    grid: Sequence[float] = FRONTIER_GRID, curves: dict[int, dict[str, list[float | None]]] | None = None,
) -> dict[str, Any]:
    """One run against the reference: the comparison on val, and the val-chosen t's applied to test.

    ``run`` / ``reference``: ``{"val": {"logits", "labels"}, "test": {"logits", "labels"} or None}``.
    ``curves``: val curves already computed, by ``id`` of the split dict (filled in as computed, so a
    reference shared by many runs is swept once). Returns ``{"curve": the run's val curve, "val":
    compare_with_reference(...), "test": the test differences run(t) - reference(reference_t) per
    figure, or None}``.
    """
    curves = {} if curves is None else curves
    for side in (run, reference):
        if id(side["val"]) not in curves:
            curves[id(side["val"])] = compute_frontier(side["val"]["logits"], side["val"]["labels"], groups, prior, grid)
    curve, reference_curve = curves[id(run["val"])], curves[id(reference["val"])]
    reference_many = (reference_curve["many"][list(grid).index(0.0)] if 0.0 in grid else
                      compute_point(reference["val"]["logits"], reference["val"]["labels"], groups, prior, 0.0)["many"])
    val = compare_with_reference(curve, reference_curve, reference_many)
    test = None
    if val["t"] is not None and run.get("test") is not None and reference.get("test") is not None:
        ours = compute_point(run["test"]["logits"], run["test"]["labels"], groups, prior, val["t"])
        theirs = compute_point(reference["test"]["logits"], reference["test"]["labels"], groups, prior,
                               val["reference_t"])
        test = {key: None if ours[key] is None or theirs[key] is None else ours[key] - theirs[key] for key in FIGURES}
    return {"curve": curve, "val": val, "test": test}


# Paired over seeds, per group against the reference: the val comparison and the test differences.
PAIRED = (("few_at_matched_many", "val"), ("overall_at_matched_many", "val"), ("few", "test"), ("overall", "test"),
          ("many", "test"))


def build_frontier_section(
    entries: Sequence[dict[str, Any]], groups: Sequence[dict[str, Any]], logits: dict[str, dict[str, Any]],
    prior: np.ndarray, class_groups: Sequence[str], reference: dict[str, Any] | None,
    grid: Sequence[float] = FRONTIER_GRID,
) -> dict[str, Any]:
    """report.json's ``frontier``: every run's val curve and, against the ``reference`` group, each run's
    comparison with the reference run of its seed and, per group, the paired summaries over seeds.

    ``logits``: run name -> ``{"val": {"logits", "labels"}, "test": {...} or None}``. Runs re-scored
    with a post-hoc tau are left out (their curve is their source's, shifted in t).
    """
    from sage_cli import stats

    runs = [e for e in entries if e.get("posthoc_tau") is None and e["name"] in logits]
    by_seed: dict[Any, str] = {}
    if reference is not None:
        by_seed = {e["seed"]: e["name"] for e in runs if e["group"] == reference["name"]}
    out_runs, curves = [], {}
    for entry in runs:
        data = logits[entry["name"]]
        row: dict[str, Any] = {"name": entry["name"], "group": entry["group"], "seed": entry["seed"]}
        partner = by_seed.get(entry["seed"], by_seed.get(None)) if by_seed else None
        if partner is not None and entry["group"] != reference["name"]:
            comparison = compute_frontier_comparison(data, logits[partner], prior, class_groups, grid, curves)
            row.update(curve=comparison["curve"], reference_run=partner, val=comparison["val"],
                       test=comparison["test"])
        else:
            if id(data["val"]) not in curves:
                curves[id(data["val"])] = compute_frontier(data["val"]["logits"], data["val"]["labels"], class_groups,
                                                           prior, grid)
            row["curve"] = curves[id(data["val"])]
        out_runs.append(row)
    paired = []
    for group in groups:
        members = [r for r in out_runs if r["group"] == group["name"] and "val" in r]
        if not members:
            continue
        figures = {}
        for key, split in PAIRED:
            values = [m[split][key] for m in members if m.get(split) is not None and m[split].get(key) is not None]
            figures[f"{split}_{key}"] = stats.summarise(values).to_dict() if values else None
        paired.append({"group": group["name"], "reference": reference["name"], "n": len(members), **figures})
    return {"grid": [float(t) for t in grid], "reference": None if reference is None else reference["name"],
            "runs": out_runs, "paired": paired}


def plot_frontier(report: dict[str, Any], colour: Any) -> Any:
    """Many against few accuracy (val, %) along t for each run: one colour per group, a dot at t = 0.

    ``colour(i)``: the colour of the i-th group. None when the report has no frontier.
    """
    from matplotlib.figure import Figure

    section = report.get("frontier")
    if not section or not section.get("runs"):
        return None
    order = list(dict.fromkeys(r["group"] for r in section["runs"]))
    fig = Figure(figsize=(7.2, 3.6), layout="constrained")
    ax = fig.add_subplot()
    zero = section["grid"].index(0.0) if 0.0 in section["grid"] else None
    for run in section["runs"]:
        curve = run["curve"]
        keep = [k for k in range(len(curve["t"])) if curve["many"][k] is not None and curve["few"][k] is not None]
        if not keep:
            continue
        i = order.index(run["group"])
        reference = run["group"] == section.get("reference")
        first = run is next(r for r in section["runs"] if r["group"] == run["group"])
        ax.plot([100 * curve["many"][k] for k in keep], [100 * curve["few"][k] for k in keep], color=colour(i),
                lw=2.0 if reference else 1.3, ls="--" if reference else "-", alpha=0.9,
                label=run["group"] + (" (reference)" if reference else "") if first else None)
        if zero is not None and zero in keep:
            ax.plot(100 * curve["many"][zero], 100 * curve["few"][zero], "o", color=colour(i), ms=5)
    ax.set(xlabel="many top-1 (%)", ylabel="few top-1 (%)",
           title="Head-tail frontier on val: z − t·log(prior), t from −1 to 2 (dot: t = 0)")
    ax.legend(fontsize=8, loc="lower left")
    return fig


__all__ = ["FRONTIER_GRID", "build_frontier_section", "plot_frontier", "compare_with_reference", "compute_at_many",
           "compute_frontier", "compute_frontier_comparison", "compute_point"]
