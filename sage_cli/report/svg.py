"""The report's three plots as inline SVG strings, drawn with a few lines of our own code.

No plotting library: scales, ticks, bars, dots and legends are built here as SVG elements, so
report.html stays one self-contained file. Every plot has a ``<title>`` and a class name
(``plot-per-class``, ``plot-groups``, ``plot-share``) that tests and readers can find.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from sage_cli.artifacts import GROUPS

# Okabe-Ito: distinct for colour-blind readers; one per run, in order.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000")
BAND_FILL = {"many": "#eef2f7", "medium": "#f7f3ea", "few": "#f2eef5"}
FONT = "font-family=\"system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif\""
GRID = "#e3e6ea"
INK = "#333"
MUTED = "#6b7280"


def run_colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


@dataclass(frozen=True)
class Frame:
    """The plotting area inside an SVG of ``width`` x ``height`` px."""

    width: int = 720
    height: int = 360
    left: int = 56
    right: int = 16
    top: int = 28
    bottom: int = 52

    @property
    def x0(self) -> float:
        return self.left

    @property
    def x1(self) -> float:
        return self.width - self.right

    @property
    def y0(self) -> float:  # bottom of the plotting area
        return self.height - self.bottom

    @property
    def y1(self) -> float:
        return self.top

    def y(self, fraction: float) -> float:
        """Pixel row of a value in [0, 1] on the vertical axis."""
        return self.y0 - fraction * (self.y0 - self.y1)


def _svg(frame: Frame, css_class: str, title: str, body: list[str]) -> str:
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" class="{css_class}" viewBox="0 0 {frame.width} '
            f'{frame.height}" role="img" {FONT} font-size="12">')
    return "\n".join([head, f"<title>{escape(title)}</title>", *body, "</svg>"])


def _text(x: float, y: float, text: str, anchor: str = "middle", fill: str = INK, size: int = 12,
          extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{fill}" font-size="{size}"{extra}>'
            f"{escape(text)}</text>")


def _percent_axis(frame: Frame, label: str, top: float = 1.0) -> list[str]:
    """Horizontal grid lines and labels for 0..top (a fraction) as percentages."""
    step = 0.2 if top > 0.5 else 0.1
    out, value = [], 0.0
    while value <= top + 1e-9:
        y = frame.y(value / top)
        out.append(f'<line x1="{frame.x0}" x2="{frame.x1}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        out.append(_text(frame.x0 - 6, y + 4, f"{100 * value:.0f}", anchor="end", fill=MUTED))
        value += step
    mid = (frame.y0 + frame.y1) / 2
    out.append(_text(14, mid, label, extra=f' transform="rotate(-90 14 {mid:.1f})"', fill=MUTED))
    return out


def _legend(frame: Frame, names: Sequence[str], y: float) -> list[str]:
    out, x = [], frame.x0
    for i, name in enumerate(names):
        out.append(f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="10" height="10" rx="2" fill="{run_colour(i)}"/>')
        out.append(_text(x + 14, y, name, anchor="start"))
        x += 28 + 7 * len(name)
    return out


# ---------------------------------------------------------------------------------------------
# Per-class accuracy against training count


class LogScale:
    """Maps a positive count to a pixel column on a log10 axis over [lo, hi]."""

    def __init__(self, lo: float, hi: float, x0: float, x1: float) -> None:
        self.lo, self.hi = math.log10(lo), math.log10(max(hi, lo * 1.01))
        self.x0, self.x1 = x0, x1

    def __call__(self, value: float) -> float:
        t = (math.log10(max(value, 10**self.lo)) - self.lo) / (self.hi - self.lo)
        return self.x0 + t * (self.x1 - self.x0)

    def ticks(self) -> list[float]:
        lo, hi = math.floor(self.lo), math.ceil(self.hi)
        steps = (1, 2, 5) if hi - lo <= 3 else (1,)
        values = [m * 10**e for e in range(lo, hi + 1) for m in steps]
        return [v for v in values if self.lo - 1e-9 <= math.log10(v) <= self.hi + 1e-9]


def compute_group_bands(counts: Sequence[int], groups: Sequence[str]) -> dict[str, tuple[float, float]]:
    """Count range of each non-empty group, widened to meet its neighbours at geometric midpoints."""
    spans = {}
    for g in GROUPS:
        member = [max(c, 1) for c, grp in zip(counts, groups) if grp == g]
        if member:
            spans[g] = [float(min(member)), float(max(member))]
    ordered = sorted(spans, key=lambda g: spans[g][0])
    for low, high in zip(ordered, ordered[1:]):
        edge = math.sqrt(spans[low][1] * spans[high][0])
        spans[low][1] = spans[high][0] = edge
    return {g: (lo, hi) for g, (lo, hi) in spans.items()}


def _binned_means(points: list[tuple[float, float]], scale: LogScale, bins: int = 8) -> list[tuple[float, float]]:
    """Mean accuracy of the classes in each of ``bins`` log-spaced count bins: (geometric mean count, mean)."""
    members: dict[int, list[tuple[float, float]]] = {}
    for count, acc in points:
        t = (math.log10(count) - scale.lo) / (scale.hi - scale.lo)
        members.setdefault(min(max(int(t * bins), 0), bins - 1), []).append((count, acc))
    out = []
    for _, inside in sorted(members.items()):
        geo = 10 ** (sum(math.log10(c) for c, _ in inside) / len(inside))
        out.append((geo, sum(acc for _, acc in inside) / len(inside)))
    return out


def render_per_class_plot(report: dict[str, Any]) -> str:
    """Per-class top-1 accuracy (dots) and its binned mean (line) against training images, log x."""
    frame = Frame(height=400, bottom=70)
    classes = report["dataset"]["classes"]
    counts = [max(int(c), 1) for c in classes["train_count"]]
    scale = LogScale(min(counts) / 1.25, max(counts) * 1.25, frame.x0, frame.x1)
    body = []
    for group, (lo, hi) in compute_group_bands(counts, classes["group"]).items():
        xa, xb = scale(lo / 1.25 if lo == min(counts) else lo), scale(hi * 1.25 if hi == max(counts) else hi)
        body.append(f'<rect class="band band-{group}" x="{xa:.1f}" y="{frame.y1}" width="{xb - xa:.1f}" '
                    f'height="{frame.y0 - frame.y1}" fill="{BAND_FILL[group]}"/>')
        body.append(_text((xa + xb) / 2, frame.y1 - 8, group, fill=MUTED))
    body += _percent_axis(frame, "per-class top-1 accuracy (%)")
    for tick in scale.ticks():
        x = scale(tick)
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{frame.y0}" y2="{frame.y0 + 4}" stroke="{MUTED}"/>')
        body.append(_text(x, frame.y0 + 17, f"{tick:g}", fill=MUTED))
    body.append(_text((frame.x0 + frame.x1) / 2, frame.y0 + 36, "training images per class (log scale)", fill=MUTED))
    for i, run in enumerate(report["runs"]):
        body += _run_dots(run, counts, scale, frame, run_colour(i))
    body += _legend(frame, [r["name"] for r in report["runs"]], frame.height - 10)
    return _svg(frame, "plot plot-per-class", "Per-class accuracy against training images", body)


def _run_dots(run: dict[str, Any], counts: list[int], scale: LogScale, frame: Frame, colour: str) -> list[str]:
    points = [(c, a) for c, a in zip(counts, run["metrics"]["per_class_accuracy"]) if a is not None]
    out = [f'<g class="run" data-run="{escape(run["name"])}">']
    out += [f'<circle cx="{scale(c):.1f}" cy="{frame.y(a):.1f}" r="2.6" fill="{colour}" fill-opacity="0.4"/>'
            for c, a in points]
    means = _binned_means(points, scale) if len(points) >= 20 else []  # too few classes: dots say it all
    if len(means) > 1:
        path = " ".join(f"{scale(c):.1f},{frame.y(a):.1f}" for c, a in means)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2.2"/>')
    out += [f'<circle cx="{scale(c):.1f}" cy="{frame.y(a):.1f}" r="3.6" fill="{colour}" stroke="#fff"/>'
            for c, a in means]
    return out + ["</g>"]


# ---------------------------------------------------------------------------------------------
# Grouped bars


def _grouped_bars(frame: Frame, categories: Sequence[str], values: Sequence[Sequence[float | None]],
                  top: float = 1.0, labels: bool = True) -> list[str]:
    """Bars for values[run][category] (fractions); None draws no bar and a dash."""
    runs = len(values)
    slot = (frame.x1 - frame.x0) / len(categories)
    bar = min(44.0, slot * 0.8 / max(runs, 1))
    out = []
    for c, category in enumerate(categories):
        start = frame.x0 + c * slot + (slot - bar * runs) / 2
        out.append(_text(frame.x0 + (c + 0.5) * slot, frame.y0 + 18, category))
        for r in range(runs):
            value, x = values[r][c], start + r * bar
            if value is None:
                out.append(_text(x + bar / 2, frame.y0 - 4, "–", fill=MUTED))
                continue
            y = frame.y(min(value / top, 1.0))
            out.append(f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{bar - 2:.1f}" height="{frame.y0 - y:.1f}" '
                       f'fill="{run_colour(r)}"><title>{100 * value:.1f}%</title></rect>')
            if labels and bar >= 22:
                out.append(_text(x + bar / 2, y - 4, f"{100 * value:.1f}", size=10, fill=INK))
    return out


def render_group_plot(report: dict[str, Any]) -> str:
    """Top-1 accuracy overall and per group, one bar per run."""
    frame = Frame(height=320, bottom=60)
    keys = ("top1", "many", "medium", "few")
    values = [[run["metrics"][k] for k in keys] for run in report["runs"]]
    body = _percent_axis(frame, "top-1 accuracy (%)")
    body += _grouped_bars(frame, ["overall", "many", "medium", "few"], values)
    body += _legend(frame, [r["name"] for r in report["runs"]], frame.height - 10)
    return _svg(frame, "plot plot-groups", "Top-1 accuracy by group", body)


def render_share_plot(report: dict[str, Any]) -> str:
    """Share of predictions per group, one bar per run, against the true share (dashed line)."""
    frame = Frame(height=320, bottom=60)
    shares = [[run["metrics"]["prediction_share"][g]["predicted"] for g in GROUPS] for run in report["runs"]]
    truth = [report["runs"][0]["metrics"]["prediction_share"][g]["true"] for g in GROUPS]
    peak = max([v for row in [*shares, truth] for v in row if v] or [0.1])
    top = min(1.0, math.ceil(peak * 5 - 1e-9) / 5 if peak > 0.5 else max(0.1, math.ceil(peak * 10 - 1e-9) / 10))
    body = _percent_axis(frame, "share of predictions (%)", top)
    labels = [g if t is None else f"{g} (true {100 * t:.1f})" for g, t in zip(GROUPS, truth)]
    body += _grouped_bars(frame, labels, shares, top)
    slot = (frame.x1 - frame.x0) / len(GROUPS)
    for c, value in enumerate(truth):
        if value is None:
            continue
        y, xa = frame.y(value / top), frame.x0 + c * slot + slot * 0.06
        body.append(f'<line class="true-share" x1="{xa:.1f}" x2="{xa + slot * 0.88:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                    f'stroke="{INK}" stroke-width="1.5" stroke-dasharray="5 3"><title>true share '
                    f'{100 * value:.1f}%</title></line>')
    body += _legend(frame, [r["name"] for r in report["runs"]], frame.height - 10)
    return _svg(frame, "plot plot-share", "Prediction share by group against the true share", body)
