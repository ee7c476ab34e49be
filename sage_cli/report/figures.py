"""The report's figures, drawn with matplotlib (Agg, no pyplot state) from report.json alone.

:func:`build_figures` returns every figure that applies to a report, by name; :func:`render_svg`
gives the inline SVG report.html embeds (text kept as text, ids salted so a re-run is identical)
and :func:`save_figures` writes each as ``figures/NAME.pdf`` and ``figures/NAME.png`` for papers,
with fixed metadata so the bytes do not change between runs of the same report.

Figures: per-class accuracy against training count (binned means, faint offset dots), accuracy
by group (with mean class accuracy), prediction share by group, the reliability diagram, the
group-block confusion matrix, the full confusion matrix of each run (<= 100 classes), training
and validation curves from metrics.jsonl, per-class change against the reference run against
training count, and predictions per class against the true test count.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.lines
import matplotlib.patches
import matplotlib.ticker
import numpy as np
from matplotlib.figure import Figure

from sage_cli import artifacts
from sage_cli.artifacts import GROUPS
from sage_cli.report.curves import plot_curves
from sage_cli.report.frontier import plot_frontier

matplotlib.use("Agg")  # no display; also what savefig picks for a bare Figure

# Okabe-Ito: distinct for colour-blind readers; one per run, in order.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000")
BAND_FILL = {"many": "#eef2f7", "medium": "#f7f3ea", "few": "#f2eef5"}
MUTED = "#6b7280"
FULL_CONFUSION_MAX_CLASSES = 100
RC = {
    "svg.hashsalt": "sage-report",  # stable element ids: the same report gives the same bytes
    "svg.fonttype": "none",  # text stays text in the page (searchable, small)
    "font.family": "DejaVu Sans",  # shipped with matplotlib: the same glyphs everywhere
    "font.size": 9.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#9aa0a6",
    "axes.titlesize": 10.5,
    "axes.titleweight": "bold",
    "legend.frameon": False,
    "pdf.fonttype": 42,  # TrueType in PDFs, as journals ask
}
METADATA = {
    "svg": {"Date": None, "Creator": "sage report"},
    "pdf": {"CreationDate": None, "ModDate": None, "Creator": "sage report", "Producer": "sage report"},
    "png": {"Software": "sage report"},
}


def run_colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _percent(value: float | None) -> float:
    return math.nan if value is None else 100.0 * value


def _nice_top(peak: float, cap: float = 100.0) -> float:
    """An axis top a little above ``peak`` (percent), on a multiple of 5 or 10, at most ``cap``."""
    step = 5.0 if peak <= 40 else 10.0
    return min(cap, max(step, math.ceil((peak * 1.12 + 1e-9) / step) * step))


def _legend_below(ax: Any, runs: Sequence[tuple[int, str]], extra: Sequence[Any] = ()) -> None:
    """A legend under the axes: one colour patch per (run index, name)."""
    handles = [matplotlib.patches.Patch(color=run_colour(i), label=n) for i, n in runs] + list(extra)
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=min(len(handles), 5),
              fontsize=8.5)


# ---------------------------------------------------------------------------------------------
# Per-class accuracy against training count


def compute_binned_means(counts: np.ndarray, values: np.ndarray, bins: int = 8) -> list[tuple[float, float, int]]:
    """(geometric mean count, mean value, members) of ``bins`` log-spaced count bins; NaN values left out."""
    keep = ~np.isnan(values)
    counts, values = np.maximum(counts[keep], 1).astype(float), values[keep]
    if len(counts) == 0:
        return []
    lo, hi = math.log10(counts.min()), math.log10(counts.max())
    span = max(hi - lo, 1e-9)
    index = np.minimum(((np.log10(counts) - lo) / span * bins).astype(int), bins - 1)
    out = []
    for b in np.unique(index):
        inside = index == b
        out.append((float(10 ** np.log10(counts[inside]).mean()), float(values[inside].mean()), int(inside.sum())))
    return out


def compute_group_bands(counts: Sequence[int], groups: Sequence[str],
                        thresholds: dict[str, Any] | None = None) -> dict[str, tuple[float, float]]:
    """Count range of each non-empty group, widened to meet its neighbours.

    Neighbours meet at the dataset's thresholds (``{"many": M, "few": F}``: many has more than M
    training images, few fewer than F) when the groups follow them; otherwise (no thresholds, or
    groups set from other counts, as CIFAR-100-LT's IR-100 groups) at geometric midpoints of the
    nearest counts.
    """
    spans = {}
    for g in GROUPS:
        member = [max(c, 1) for c, grp in zip(counts, groups) if grp == g]
        if member:
            spans[g] = [float(min(member)), float(max(member))]
    ordered = sorted(spans, key=lambda g: spans[g][0])
    edges = _threshold_edges(counts, groups, thresholds)
    for low, high in zip(ordered, ordered[1:]):
        edge = edges.get((low, high), math.sqrt(spans[low][1] * spans[high][0]))
        spans[low][1] = spans[high][0] = edge
    return {g: (lo, hi) for g, (lo, hi) in spans.items()}


def _threshold_edges(counts: Sequence[int], groups: Sequence[str],
                     thresholds: dict[str, Any] | None) -> dict[tuple[str, str], float]:
    """(lower group, upper group) -> edge at the thresholds, if every class's group follows them."""
    if not thresholds or thresholds.get("many") is None or thresholds.get("few") is None:
        return {}
    many, few = float(thresholds["many"]), float(thresholds["few"])
    follows = all(g == ("many" if c > many else "few" if c < few else "medium") for c, g in zip(counts, groups))
    if not follows:
        return {}
    return {("few", "medium"): few, ("medium", "many"): many, ("few", "many"): math.sqrt(few * many)}


def _shade_groups(ax: Any, counts: np.ndarray, groups: Sequence[str], thresholds: dict[str, Any] | None = None) -> None:
    lo, hi = counts.min() / 1.3, counts.max() * 1.3
    for group, (a, b) in compute_group_bands(counts.tolist(), groups, thresholds).items():
        a, b = (lo if a == counts.min() else a), (hi if b == counts.max() else b)
        ax.axvspan(a, b, color=BAND_FILL[group], zorder=0, lw=0, gid=f"band-{group}")
        ax.text(math.sqrt(a * b), 1.0, group, transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                color=MUTED, fontsize=8.5)
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    steps = (1, 2, 5) if math.log10(hi / lo) <= 3.5 else (1,)
    ax.set_xticks([t for t in (m * 10.0**e for e in decades for m in steps) if lo <= t <= hi])
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("training images per class (log scale)")


def _dodge(n_runs: int, i: int, counts: np.ndarray) -> np.ndarray:
    """Counts shifted a little to the side per run (in log space) so that runs' dots do not cover each other."""
    span = math.log10(max(counts.max(), 2) / max(counts.min(), 1)) or 1.0
    offset = (i - (n_runs - 1) / 2) * 0.012 * span
    return counts * 10**offset


def plot_per_class(report: dict[str, Any]) -> Figure:
    classes = report["dataset"]["classes"]
    counts = np.maximum(np.asarray(classes["train_count"], dtype=float), 1)
    runs = report["runs"]
    fig = Figure(figsize=(7.2, 3.9), layout="constrained")
    ax = fig.add_subplot()
    _shade_groups(ax, counts, classes["group"], report["dataset"].get("group_thresholds"))
    alpha = max(0.12, min(0.5, 6 / max(len(counts), 1) ** 0.5 / max(len(runs), 1) ** 0.5))
    for i, run in enumerate(runs):
        acc = np.array([_percent(a) for a in run["metrics"]["per_class_accuracy"]])
        keep = ~np.isnan(acc)
        dots = ax.scatter(_dodge(len(runs), i, counts)[keep], acc[keep], s=9, color=run_colour(i), alpha=alpha,
                          lw=0, zorder=2)
        dots.set_gid(f"dots-{i}")
        means = compute_binned_means(counts, acc) if keep.sum() >= 12 else []
        if len(means) > 1:
            ax.plot([m[0] for m in means], [m[1] for m in means], color=run_colour(i), lw=2, marker="o", ms=4.5,
                    mec="white", mew=0.8, zorder=3)
    ax.set_ylim(-3, 103)
    ax.set_ylabel("per-class top-1 accuracy (%)")
    ax.grid(axis="y", color="#e3e6ea", lw=0.7, zorder=1)
    _legend_below(ax, [(i, r["name"]) for i, r in enumerate(runs)])
    return fig


# ---------------------------------------------------------------------------------------------
# Bars


def _grouped_bars(ax: Any, categories: Sequence[str], values: np.ndarray, labels: bool = True,
                  clear_of: Sequence[float] | None = None) -> None:
    """values[run, category] in percent (NaN: no bar, a dash).

    Value labels sit above their bar, and above ``clear_of[category]`` (a line drawn across the
    category) where the bar ends near it; from four runs on they stand upright so that neighbours
    do not touch. They have a white ground, so grid lines do not cross them.
    """
    runs = values.shape[0]
    width = min(0.8 / max(runs, 1), 0.28)
    x = np.arange(len(categories))
    upright = runs >= 4
    for r in range(runs):
        xs = x + (r - (runs - 1) / 2) * width
        heights = np.nan_to_num(values[r], nan=0.0)
        ax.bar(xs, heights, width * 0.92, color=run_colour(r), zorder=2)
        for c, (xv, v) in enumerate(zip(xs, values[r])):
            if math.isnan(v):
                ax.text(xv, 0.5, "–", ha="center", va="bottom", color=MUTED)
            elif labels and runs <= 6:
                line = clear_of[c] if clear_of is not None else math.nan
                base = max(v, line) if not math.isnan(line) else v
                ax.annotate(f"{v:.1f}", (xv, base), xytext=(0, 3 if base > v else 1.5), textcoords="offset points",
                            ha="center", va="bottom", rotation=90 if upright else 0, fontsize=7.5 if runs > 3 else 8,
                            zorder=4, gid="value-label",
                            bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none"})
    ax.set_xticks(x, categories)
    ax.grid(axis="y", color="#e3e6ea", lw=0.7, zorder=0)


def _label_headroom(runs: int) -> float:
    """How much above the tallest bar the axis must reach for the value labels (a factor)."""
    return 1.22 if runs >= 4 else 1.0


def plot_groups(report: dict[str, Any]) -> Figure:
    keys = ("top1", "many", "medium", "few", "mean_class_accuracy")
    values = np.array([[_percent(r["metrics"].get(k)) for k in keys] for r in report["runs"]])
    fig = Figure(figsize=(7.2, 3.3), layout="constrained")
    ax = fig.add_subplot()
    _grouped_bars(ax, ["overall", "many", "medium", "few", "mean class"], values)
    peak = float(np.nanmax(values)) if np.isfinite(values).any() else 10.0
    ax.set_ylim(0, _nice_top(peak * _label_headroom(len(values)), cap=110.0 if len(values) >= 4 else 100.0))
    ax.set_ylabel("top-1 accuracy (%)")
    _legend_below(ax, [(i, r["name"]) for i, r in enumerate(report["runs"])])
    return fig


def plot_share(report: dict[str, Any]) -> Figure:
    runs = report["runs"]
    shares = np.array([[_percent(r["metrics"]["prediction_share"][g]["predicted"]) for g in GROUPS] for r in runs])
    truth = np.array([_percent(runs[0]["metrics"]["prediction_share"][g]["true"]) for g in GROUPS])
    fig = Figure(figsize=(7.2, 3.3), layout="constrained")
    ax = fig.add_subplot()
    _grouped_bars(ax, [f"{g} (true {t:.1f})" if not math.isnan(t) else g for g, t in zip(GROUPS, truth)], shares,
                  clear_of=truth)
    line = None
    for c, t in enumerate(truth):
        if not math.isnan(t):
            (line,) = ax.plot([c - 0.45, c + 0.45], [t, t], color="#333", lw=1.4, ls=(0, (5, 3)), zorder=3)
    peak = np.nanmax(np.concatenate([shares.ravel(), truth])) if np.isfinite(shares).any() else 10.0
    ax.set_ylim(0, _nice_top(float(peak) * _label_headroom(len(runs)) + 3))
    ax.set_ylabel("share of predictions (%)")
    extra = [matplotlib.lines.Line2D([], [], color="#333", lw=1.4, ls=(0, (5, 3)), label="true share")] if line else []
    _legend_below(ax, [(i, r["name"]) for i, r in enumerate(runs)], extra)
    return fig


# ---------------------------------------------------------------------------------------------
# Calibration and confusion


def plot_reliability(report: dict[str, Any]) -> Figure | None:
    runs = [(i, r) for i, r in enumerate(report["runs"]) if r["metrics"].get("reliability")]
    if not runs:
        return None
    fig = Figure(figsize=(7.2, 3.6), layout="constrained")
    ax, hist = fig.subplots(1, 2, width_ratios=(1.25, 1))
    ax.plot([0, 100], [0, 100], color="#9aa0a6", lw=1, ls="--", zorder=1)
    for i, run in runs:
        rel = run["metrics"]["reliability"]
        conf, acc, count = (np.array([math.nan if v is None else v for v in rel[k]], dtype=float)
                            for k in ("confidence", "accuracy", "count"))
        keep = count > 0
        ece = run["metrics"].get("ece")
        label = f"{run['name']} (ECE {100 * ece:.1f})" if ece is not None else run["name"]
        ax.plot(100 * conf[keep], 100 * acc[keep], color=run_colour(i), marker="o", ms=3.5, lw=1.6, label=label)
        edges = np.linspace(0, 100, rel["bins"] + 1)
        hist.stairs(count / max(count.sum(), 1) * 100, edges, color=run_colour(i), lw=1.5)
    ax.set(xlim=(0, 100), ylim=(0, 100), xlabel="confidence (max softmax, %)", ylabel="accuracy in bin (%)",
           title="Reliability")
    ax.set_aspect("equal", adjustable="box")
    ax.legend(fontsize=8, loc="lower right")
    hist.set(xlim=(0, 100), xlabel="confidence (%)", ylabel="share of images (%)", title="Confidence histogram")
    return fig


def _matrix(ax: Any, matrix: np.ndarray, ticks: Sequence[str] | None, title: str, annotate: bool) -> Any:
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=100, interpolation="nearest")
    ax.set_title(title, fontsize=9.5)
    if ticks is not None:
        ax.set_xticks(range(len(ticks)), ticks)
        ax.set_yticks(range(len(ticks)), ticks)
    if annotate:
        for (r, c), v in np.ndenumerate(matrix):
            if not math.isnan(v):
                ax.text(c, r, f"{v:.0f}", ha="center", va="center", fontsize=8.5, color="white" if v > 55 else "#1f2328")
    return image


def _row_percent(counts: np.ndarray) -> np.ndarray:
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, 100.0 * counts / np.maximum(totals, 1), np.nan)


def plot_group_confusion(report: dict[str, Any]) -> Figure:
    runs = report["runs"]
    cols = min(len(runs), 4)
    rows = math.ceil(len(runs) / cols)
    fig = Figure(figsize=(2.2 * cols + 1.0, 2.3 * rows + 0.3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    image = None
    for ax, run in zip(axes, runs):
        image = _matrix(ax, _row_percent(np.asarray(run["metrics"]["confusion_groups"], dtype=float)),
                        ["many", "med.", "few"], run["name"], annotate=True)
    for ax in axes[len(runs):]:
        ax.set_axis_off()
    for ax in axes[:len(runs)]:
        ax.set_xlabel("predicted group", fontsize=8.5)
    axes[0].set_ylabel("true group", fontsize=8.5)
    fig.colorbar(image, ax=list(axes[:len(runs)]), shrink=0.8, label="% of the true group's images")
    return fig


def plot_full_confusion(report: dict[str, Any], index: int) -> Figure:
    run = report["runs"][index]
    classes = report["dataset"]["classes"]
    # Classes ordered by training count, head first, so the tail sits bottom-right.
    order = np.argsort(-np.asarray(classes["train_count"]), kind="stable")
    matrix = _row_percent(np.asarray(run["metrics"]["confusion"], dtype=float))[np.ix_(order, order)]
    n = len(order)
    fig = Figure(figsize=(6.4, 5.6), layout="constrained")
    ax = fig.add_subplot()
    names = [classes["name"][i] for i in order] if n <= 30 else None
    image = _matrix(ax, matrix, names, f"{run['name']}: confusion (rows: true class, % of its images)",
                    annotate=n <= 12)
    if names is not None:
        ax.tick_params(axis="x", labelrotation=90, labelsize=7 if n > 15 else 8)
        ax.tick_params(axis="y", labelsize=7 if n > 15 else 8)
    else:
        ax.set_xlabel("predicted class (by training count, head first)")
        ax.set_ylabel("true class (by training count, head first)")
        _group_edges(ax, [classes["group"][i] for i in order])
    fig.colorbar(image, ax=ax, shrink=0.85)
    return fig


def _group_edges(ax: Any, ordered_groups: Sequence[str]) -> None:
    for k in range(1, len(ordered_groups)):
        if ordered_groups[k] != ordered_groups[k - 1]:
            ax.axhline(k - 0.5, color="#cf222e", lw=0.8)
            ax.axvline(k - 0.5, color="#cf222e", lw=0.8)


# ---------------------------------------------------------------------------------------------
# Curves, deltas and predicted counts


def plot_delta(report: dict[str, Any], reference_index: int) -> Figure | None:
    runs = report["runs"]
    if len(runs) < 2:
        return None
    classes = report["dataset"]["classes"]
    counts = np.maximum(np.asarray(classes["train_count"], dtype=float), 1)
    ref = np.array([_percent(a) for a in runs[reference_index]["metrics"]["per_class_accuracy"]])
    fig = Figure(figsize=(7.2, 3.7), layout="constrained")
    ax = fig.add_subplot()
    _shade_groups(ax, counts, classes["group"], report["dataset"].get("group_thresholds"))
    ax.axhline(0, color="#333", lw=1)
    others = [(i, r) for i, r in enumerate(runs) if i != reference_index]
    for k, (i, run) in enumerate(others):
        delta = np.array([_percent(a) for a in run["metrics"]["per_class_accuracy"]]) - ref
        keep = ~np.isnan(delta)
        ax.scatter(_dodge(len(others), k, counts)[keep], delta[keep], s=9, color=run_colour(i), alpha=0.35, lw=0)
        means = compute_binned_means(counts, delta) if keep.sum() >= 12 else []
        if len(means) > 1:
            ax.plot([m[0] for m in means], [m[1] for m in means], color=run_colour(i), lw=2, marker="o", ms=4.5,
                    mec="white", mew=0.8)
    ax.set_ylabel(f"per-class top-1 minus {runs[reference_index]['name']} (points)")
    ax.grid(axis="y", color="#e3e6ea", lw=0.7, zorder=1)
    _legend_below(ax, [(i, r["name"]) for i, r in others])
    return fig


def plot_predicted_counts(report: dict[str, Any]) -> Figure:
    classes = report["dataset"]["classes"]
    order = np.argsort(-np.asarray(classes["train_count"]), kind="stable")
    truth = np.asarray(classes["n_test"], dtype=float)[order]
    fig = Figure(figsize=(7.2, 3.5), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(order))
    ax.fill_between(x, truth, step="mid", color="#d8dee4", lw=0, label="true test images", zorder=1)
    for i, run in enumerate(report["runs"]):
        predicted = np.asarray(run["metrics"]["predicted_count"], dtype=float)[order]
        ax.step(x, predicted, where="mid", color=run_colour(i), lw=1.3, label=run["name"], zorder=2)
    groups = [classes["group"][i] for i in order]
    for k in range(1, len(groups)):
        if groups[k] != groups[k - 1]:
            ax.axvline(k - 0.5, color=MUTED, lw=0.8, ls=":")
    for g in GROUPS:
        idx = [k for k, grp in enumerate(groups) if grp == g]
        if idx:
            ax.text((idx[0] + idx[-1]) / 2, 1.0, g, transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                    color=MUTED, fontsize=8.5)
    ax.set_xlim(-0.5, len(order) - 0.5)
    ax.set_xlabel("class, by training count (head first)")
    ax.set_ylabel("test images predicted as the class")
    ax.legend(loc="upper right", fontsize=8, ncol=2)
    return fig


# ---------------------------------------------------------------------------------------------
# Assembly and output


def slug(text: str) -> str:
    """``text`` as a file-name part: letters and digits joined by dashes, at most 64 characters (a
    run named with 255 characters gave figure names over the file system's limit)."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:64].strip("-") or "run"


def reference_index(report: dict[str, Any]) -> int:
    """The run the delta figure compares with: the first run of the --reference group, else the first run."""
    reference = report.get("reference")
    for i, run in enumerate(report["runs"]):
        if reference is not None and reference in (run.get("group"), run["name"]):
            return i
    return 0


def build_figures(report: dict[str, Any]) -> dict[str, tuple[Figure, str]]:
    """Every figure that applies to ``report``: name -> (figure, caption). Call under ``rc_context(RC)``."""
    ref = reference_index(report)
    builders: list[tuple[str, Callable[[], Figure | None], str]] = [
        ("per-class", lambda: plot_per_class(report),
         "Per-class top-1 against training images: faint dots are classes (shifted a little per run), lines the "
         "mean accuracy in log-spaced count bins."),
        ("groups", lambda: plot_groups(report), "Top-1 accuracy overall, per group, and the mean of class accuracies."),
        ("share", lambda: plot_share(report),
         "How often each group is predicted (bars) against how often it is the true class (dashed)."),
        ("reliability", lambda: plot_reliability(report),
         "Accuracy against confidence in 15 equal-width bins; the diagonal is perfect calibration."),
        ("confusion-groups", lambda: plot_group_confusion(report),
         "Where each group's images go: rows are the true group, columns the predicted group (% of the row)."),
        ("curves", lambda: plot_curves(report, run_colour),
         "Training loss and validation top-1 from each run's metrics.jsonl."),
        ("delta", lambda: plot_delta(report, ref),
         f"Per-class change against {report['runs'][ref]['name']}, against training images."),
        ("frontier", lambda: plot_frontier(report, run_colour),
         "Many against few top-1 on val as each run's logits are adjusted post hoc by t·log(prior): a run whose "
         "curve lies above the reference's gains on the tail without the head paying."),
        ("predicted-count", lambda: plot_predicted_counts(report),
         "Test images predicted as each class against its true count: a long-tailed model over-predicts the head."),
    ]
    figures = {}
    for name, build, caption in builders:
        fig = build()
        if fig is not None:
            figures[name] = (fig, caption)
    if report["dataset"]["num_classes"] <= FULL_CONFUSION_MAX_CLASSES:
        for i, run in enumerate(report["runs"]):
            if run["metrics"].get("confusion") is not None:
                figures[f"confusion-{slug(run['name'])}-{i}"] = (
                    plot_full_confusion(report, i), f"{run['name']}: confusion matrix, classes by training count.")
    return figures


def render_figures(report: dict[str, Any], directory: Path | None = None) -> dict[str, tuple[str, str]]:
    """Every figure of ``report`` as inline SVG: name -> (svg, caption).

    With ``directory``, each is also written there as NAME.pdf and NAME.png (150 dpi), atomically.
    """
    out = {}
    with matplotlib.rc_context(RC):
        for name, (fig, caption) in build_figures(report).items():
            out[name] = (render_svg(fig, name), caption)
            if directory is not None:
                for fmt, extra in (("pdf", {}), ("png", {"dpi": 150})):
                    buffer = io.BytesIO()
                    fig.savefig(buffer, format=fmt, metadata=METADATA[fmt], **extra)
                    artifacts.write_bytes_atomic(Path(directory) / f"{name}.{fmt}", buffer.getvalue())
    return out


def render_svg(fig: Figure, name: str) -> str:
    """The figure as an inline ``<svg class="plot plot-NAME">`` element (no XML prolog)."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata=METADATA["svg"])
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    return text.replace("<svg ", f'<svg class="plot plot-{name}" role="img" ', 1)
