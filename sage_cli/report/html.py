"""report.html: one self-contained page (inline CSS and SVG, no external asset, no script).

Sections: the accuracy tables (per run, across seeds, paired against the reference, deltas against
the first run, class-level figures), the figures of :mod:`sage_cli.report.figures` (inline SVG),
the prediction share table, the most confused pairs and each run's configuration and input hashes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from typing import Any

from sage_cli.artifacts import GROUPS
from sage_cli.report.figures import render_figures, run_colour
from sage_cli.report.markdown import (
    CLASS_HEADER,
    COLUMNS,
    FRONTIER_HEADER,
    class_rows,
    delta_rows,
    describe_tte,
    frontier_rows,
    format_percent,
    report_title,
    group_rows,
    paired_rows,
    share_rows,
    shows_groups,
    summary_rows,
    true_shares,
    weights_lines,
)

CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; color: #1f2328; margin: 0;
       background: #fafbfc; line-height: 1.5; }
main { max-width: 980px; margin: 0 auto; padding: 32px 28px 64px; background: #fff; min-height: 100vh;
       box-shadow: 0 0 0 1px #eceef1; }
h1 { font-size: 26px; margin: 0 0 4px; font-weight: 650; }
h2 { font-size: 18px; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #eceef1; font-weight: 620; }
p.meta { color: #57606a; margin: 0 0 4px; font-size: 14px; }
p.note { color: #57606a; font-size: 13px; margin: 6px 0 0; }
table { border-collapse: collapse; font-size: 14px; margin: 8px 0; font-variant-numeric: tabular-nums; }
th, td { padding: 6px 14px; border-bottom: 1px solid #eceef1; text-align: right; }
th { font-weight: 600; color: #57606a; border-bottom: 2px solid #d8dee4; }
th:first-child, td:first-child { text-align: left; }
td.pos { color: #1a7f37; } td.neg { color: #cf222e; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 8px; }
figure { margin: 18px 0 8px; } figcaption { font-size: 13px; color: #57606a; margin-top: 2px; }
svg.plot { width: 100%; height: auto; display: block; }
.pairs-grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); gap: 4px 24px; }
.pairs-grid h3 { font-size: 14px; margin: 8px 0 2px; font-weight: 600; }
ul.pairs { padding-left: 18px; margin: 0; font-size: 13px; } ul.pairs li { margin: 1px 0; }
details { margin: 6px 0; font-size: 13px; } summary { cursor: pointer; font-weight: 600; }
pre { background: #f6f8fa; padding: 10px 12px; border-radius: 6px; overflow-x: auto; font-size: 12px; }
footer { margin-top: 40px; color: #8c959f; font-size: 12px; }
"""


def _table(css_class: str, header: Sequence[str], rows: Sequence[Sequence[str]], swatches: bool = True,
           signed: bool = False, offset: int = 0) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for r, row in enumerate(rows):
        cells = []
        for c, value in enumerate(row):
            if c == 0:
                dot = f'<span class="swatch" style="background:{run_colour(r + offset)}"></span>' if swatches else ""
                cells.append(f"<td>{dot}{escape(value)}</td>")
            else:
                tone = ' class="pos"' if signed and value.startswith("+") else (
                    ' class="neg"' if signed and value.startswith("-") else "")
                cells.append(f"<td{tone}>{escape(value)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _figure(svg_text: str, caption: str) -> str:
    return f"<figure>{svg_text}<figcaption>{escape(caption)}</figcaption></figure>"


def _header(report: dict[str, Any]) -> str:
    data = report["dataset"]
    groups = data["groups"]
    tte = f"test-time ensembling {describe_tte(report)}" if report["tte"] else "single centre crop"
    return (
        f"<h1>{escape(report_title(report))}</h1>"
        f'<p class="meta">{escape(report["split"])} split · {data["num_samples"]} images · '
        f'{data["num_classes"]} classes (many {groups["many"]}, medium {groups["medium"]}, few {groups["few"]}) · '
        f"{tte}</p>"
    )


def _accuracy_section(report: dict[str, Any]) -> str:
    parts = ["<h2>Accuracy</h2>",
             _table("summary", ["Run", *(t for _, t in COLUMNS), "ECE"], summary_rows(report)),
             '<p class="note">Top-1 / top-5 accuracy in %. Many / medium / few: top-1 over the images of '
             "the classes in each group. ECE: expected calibration error (15 bins, %). – : no images.</p>"]
    if weights_lines(report):
        items = "".join(f"<li><b>{escape(name)}</b>: {escape(text)}</li>" for name, text in weights_lines(report))
        parts.append(f'<p class="note">Weights evaluated:</p><ul class="weights">{items}</ul>')
    if shows_groups(report):
        parts += ["<h2>Across seeds</h2>",
                  _table("groups", ["Group", "n", *(t for _, t in COLUMNS), "ECE"], group_rows(report), swatches=False),
                  '<p class="note">Runs of one configuration that differ only in seed: mean ± sample standard '
                  "deviation over the n runs, in %.</p>"]
    if report.get("paired"):
        reference = report["paired"][0]["reference"]
        parts += [f"<h2>Against {escape(reference)}, paired by seed</h2>",
                  _table("paired", ["Group", "n", *(t for _, t in COLUMNS)], paired_rows(report), swatches=False,
                         signed=True),
                  '<p class="note">Percentage points: mean of the per-seed differences [95% Student-t interval]; '
                  "n seeds paired.</p>"]
    if (report.get("frontier") or {}).get("paired"):
        parts += [f"<h2>Head-tail frontier against {escape(report['frontier']['reference'])}</h2>",
                  _table("frontier", list(FRONTIER_HEADER), frontier_rows(report), swatches=False, signed=True),
                  '<p class="note">Each run swept along t in z − t·log(prior) on val and read where its many '
                  "accuracy equals the reference's (the reference read on its own curve); the same t applied to "
                  "test. Percentage points, mean over seeds [95% interval]. Above 0: a gain, not a trade.</p>"]
    if len(report["runs"]) > 1:
        first = report["runs"][0]["name"]
        parts += [f"<h2>Change against {escape(first)}</h2>",
                  _table("deltas", ["Run", *(t for _, t in COLUMNS)], delta_rows(report), signed=True, offset=1),
                  '<p class="note">Percentage points.</p>']
    return "".join(parts)


FIGURE_SECTIONS = (  # (figure name or name prefix, heading) in page order
    ("per-class", "Per-class accuracy against training images"),
    ("delta", "Change per class against the reference"),
    ("groups", "Accuracy by group"),
    ("share", "Prediction share by group"),
    ("predicted-count", "Predictions per class"),
    ("reliability", "Calibration"),
    ("confusion-groups", "Where each group's images go"),
    ("curves", "Training and validation curves"),
    ("frontier", "Head-tail frontier (val)"),
)


def _plots_section(report: dict[str, Any], figures: dict[str, tuple[str, str]]) -> str:
    truth = true_shares(report)
    share_header = ["Run", *(f"{g} (true {format_percent(truth[g])})" for g in GROUPS)]
    parts = []
    for name, heading in FIGURE_SECTIONS:
        if name not in figures:
            continue
        svg_text, caption = figures[name]
        parts += [f"<h2>{escape(heading)}</h2>", _figure(svg_text, caption)]
        if name == "share":
            parts.append(_table("share", share_header, share_rows(report)))
    matrices = [(n, f) for n, f in figures.items() if n.startswith("confusion-") and n != "confusion-groups"]
    if matrices:
        parts.append("<h2>Confusion matrices</h2>")
        parts += [f"<details><summary>{escape(caption)}</summary>{svg_text}</details>"
                  for _, (svg_text, caption) in matrices]
    return "".join(parts)


def _class_section(report: dict[str, Any]) -> str:
    """Class-level summaries (mean, worst, harmonic and geometric mean, macro-F1) and the classes never predicted."""
    return ("<h2>Classes</h2>" + _table("classes", list(CLASS_HEADER), class_rows(report))
            + '<p class="note">Each class counts once: the mean, lowest, harmonic and geometric mean of per-class '
            "top-1 (%, LIFT's definitions) and the mean of per-class F1. "
            "Never predicted: classes that no test image is assigned to.</p>")


def _confusions_section(report: dict[str, Any]) -> str:
    parts = ["<h2>Most confused pairs</h2>", '<div class="pairs-grid">']
    for run in report["runs"]:
        pairs = run["metrics"]["confused_pairs"]  # all of them: the same list as report.json and report.md
        items = "".join(f"<li>{escape(p['true_name'])} → {escape(p['predicted_name'])} ({p['count']})</li>"
                        for p in pairs) or "<li>none</li>"
        parts.append(f"<div><h3>{escape(run['name'])}</h3><ul class=\"pairs\">{items}</ul></div>")
    return "".join(parts) + "</div>"


def _config_section(report: dict[str, Any]) -> str:
    parts = ["<h2>Runs: configuration and inputs</h2>"]
    for run in report["runs"]:
        blob = {"location": run["location"], "identity": run["identity"], "evaluation": run["evaluation"],
                "config": run["config"]}
        parts.append(f"<details><summary>{escape(run['name'])}</summary>"
                     f"<pre>{escape(json.dumps(blob, indent=2, default=str))}</pre></details>")
    return "".join(parts)


def render_html(report: dict[str, Any], figures: dict[str, tuple[str, str]] | None = None) -> str:
    """The page; ``figures`` (name -> (inline SVG, caption)) are rendered here when not given."""
    figures = render_figures(report) if figures is None else figures
    title = report_title(report)
    footer = (f"<footer>Written by sage {escape(report['versions'].get('sage', '?'))} on "
              f"{escape(report['created'])}. Every figure is in report.json; per-class figures in "
              "per_class.parquet.</footer>")
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>",
        _header(report), _accuracy_section(report), _class_section(report), _plots_section(report, figures),
        _confusions_section(report), _config_section(report), footer,
        "</main></body></html>", "",
    ])
