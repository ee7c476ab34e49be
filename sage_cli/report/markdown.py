"""report.md: the report's tables in Markdown, ready to paste into a paper draft or an issue.

Accuracies are percentages with one decimal; a figure without samples is shown as "–". Names
(runs, classes, the dataset) are written through :func:`escape_md`, so a class named ``a|b`` or
``<script>`` stays one table cell of plain text.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any

from sage_cli.artifacts import GROUPS
from sage_cli.textsafe import one_line

DASH = "–"
# Markdown's inline metacharacters and "|" (a table cell's end); "<", ">", "&" become entities.
# "_" inside a word (run_a, great_white_shark) is not emphasis and stays as written.
_MD_SPECIAL = re.compile(r"([\\`*{}\[\]|#!~]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z]))")
COLUMNS = (("top1", "Top-1"), ("top5", "Top-5"), ("many", "Many"), ("medium", "Medium"), ("few", "Few"))


def describe_tte(report: dict[str, Any]) -> str:
    """``off``, or the views a report's test-time ensembling averaged (``on (five crops, +24 px)``)."""
    if not report["tte"]:
        return "off"
    mode, expand = report.get("tte_mode", "five-crop"), report.get("tte_expand", 24)
    views = {"five-crop": "five crops", "ten-crop": "ten crops: five and their mirrors", "flip": "centre crop and mirror"}
    return f"on ({views[mode]}" + ("" if mode == "flip" else f", +{expand} px") + ")"


def escape_md(text: object) -> str:
    """``text`` as one line of literal Markdown: no newlines, no HTML, metacharacters escaped.

    HTML's ``<``, ``>`` and ``&`` become entities (a backslash before ``<`` is not honoured by every
    renderer); ``|`` and the other inline metacharacters get a backslash.
    """
    return _MD_SPECIAL.sub(r"\\\1", html.escape(one_line(str(text)), quote=False))


def format_percent(value: float | None) -> str:
    return DASH if value is None else f"{100 * value:.1f}"


def format_delta(value: float | None) -> str:
    return DASH if value is None else f"{100 * value:+.1f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align_first_left: bool = True) -> list[str]:
    rule = [":---" if i == 0 and align_first_left else "---:" for i in range(len(header))]
    # Rows hold plain text (html.py and tex.py use them too): the name column is escaped here.
    cells = [[escape_md(line[0]), *line[1:]] for line in rows]
    return ["| " + " | ".join(line) + " |" for line in (header, rule, *cells)]


def summary_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per run: name, top-1, top-5, many, medium, few, ECE (percent)."""
    rows = []
    for run in report["runs"]:
        m = run["metrics"]
        rows.append([run["name"], *(format_percent(m[key]) for key, _ in COLUMNS), format_percent(m["ece"])])
    return rows


def delta_rows(report: dict[str, Any]) -> list[list[str]]:
    return [[d["name"], *(format_delta(d[key]) for key, _ in COLUMNS)] for d in report["deltas"][1:]]


def format_summary(summary: dict[str, Any] | None) -> str:
    """A group's figure over seeds: ``mean ± std`` in %, just the mean for one run."""
    if summary is None:
        return DASH
    if summary["std"] is None:
        return format_percent(summary["mean"])
    return f"{100 * summary['mean']:.1f} ± {100 * summary['std']:.1f}"


def format_interval(summary: dict[str, Any] | None) -> str:
    """A paired difference in points: ``+1.2 [-0.3, +2.7]`` (mean [95% interval]); the mean alone for n = 1."""
    if summary is None:
        return DASH
    if summary["ci_low"] is None:
        return format_delta(summary["mean"])
    return f"{format_delta(summary['mean'])} [{format_delta(summary['ci_low'])}, {format_delta(summary['ci_high'])}]"


def shows_groups(report: dict[str, Any]) -> bool:
    """The across-seeds table is shown when some group holds more than one run, or a reference is set."""
    return bool(report.get("reference")) or any(g["n"] > 1 for g in report.get("groups", []))


def group_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per run group: name, n, mean ± std of top-1, top-5, many, medium, few, ECE."""
    return [[g["name"], str(g["n"]), *(format_summary(g["metrics"][key]) for key, _ in COLUMNS),
             format_summary(g["metrics"]["ece"])] for g in report.get("groups", [])]


def paired_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per group against the reference: name, seeds paired, mean difference [95% interval]."""
    return [[p["group"], str(p["n"]), *(format_interval(p["metrics"][key]) for key, _ in COLUMNS)]
            for p in report.get("paired", [])]


def share_rows(report: dict[str, Any]) -> list[list[str]]:
    """Per run: predicted share of many / medium / few (true share in the header)."""
    return [[run["name"], *(format_percent(run["metrics"]["prediction_share"][g]["predicted"]) for g in GROUPS)]
            for run in report["runs"]]


# Each class counting once: the mean, LIFT's worst-class, harmonic and geometric means, and macro-F1.
CLASS_COLUMNS = (("mean_class_accuracy", "Mean class"), ("worst_class_accuracy", "Worst class"),
                 ("hmean_class_accuracy", "Harmonic mean"), ("gmean_class_accuracy", "Geometric mean"),
                 ("macro_f1", "Macro-F1"))
CLASS_HEADER = ("Run", *(title for _, title in CLASS_COLUMNS), "Classes never predicted")


def class_rows(report: dict[str, Any]) -> list[list[str]]:
    """Per run: the class-level summaries (%) and how many classes no test image is assigned to.

    Reports written before these summaries existed show a dash for them."""
    total = report["dataset"]["num_classes"]
    return [[run["name"], *(format_percent(run["metrics"].get(key)) for key, _ in CLASS_COLUMNS),
             f"{run['metrics'].get('never_predicted', 0)} of {total}"] for run in report["runs"]]


def frontier_rows(report: dict[str, Any]) -> list[list[str]]:
    """Per group against the reference: few and overall at the reference's many (val), and the
    val-chosen t on test (few, overall, many differences), mean [95% interval] in points."""
    section = report.get("frontier") or {}
    keys = ("val_few_at_matched_many", "val_overall_at_matched_many", "test_few", "test_overall", "test_many")
    return [[p["group"], str(p["n"]), *(format_interval(p[key]) for key in keys)] for p in section.get("paired", [])]


FRONTIER_HEADER = ("Group", "n", "Few at matched many (val)", "Overall at matched many (val)", "Few (test)",
                   "Overall (test)", "Many (test)")


def true_shares(report: dict[str, Any]) -> dict[str, float | None]:
    share = report["runs"][0]["metrics"]["prediction_share"]
    return {g: share[g]["true"] for g in GROUPS}


def format_weights(weights: dict[str, Any] | None) -> str:
    """One line saying which weights an evaluation used (:func:`sage_cli.train.restore.describe_weights`),
    e.g. ``best.safetensors: best few on val, step 12 (epoch 2): 50.0%``."""
    if not weights:
        return "adapter.safetensors: the last step's"
    step, keep, value = weights.get("step"), weights.get("keep"), weights.get("value")
    if keep == "checkpoint":
        return f"{weights['file']}: chosen with --checkpoint (step {step if step is not None else 'unknown'})"
    split = weights.get("split") or "eval"
    where = f"step {step} (epoch {weights.get('epoch')})"
    if keep == "best":
        return f"{weights['file']}: best {weights['metric']} on {split}, {where}: {100 * value:.1f}%"
    score = f"; {split} {weights['metric']} {100 * value:.1f}%" if value is not None else ""
    return f"{weights['file']}: the last step's, {where}{score}"


def weights_lines(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(run name, which weights it evaluated) for each trained run (not its post-hoc tau rows)."""
    return [(run["name"], format_weights(run.get("weights"))) for run in report["runs"]
            if run.get("kind") == "run" and run.get("posthoc_tau") is None]


def report_title(report: dict[str, Any]) -> str:
    """``--title``, else "Sage report: DATASET"."""
    return report.get("title") or f"Sage report: {report['dataset']['dataset']}"


def render_markdown(report: dict[str, Any]) -> str:
    data = report["dataset"]
    groups = data["groups"]
    lines = [
        f"# {escape_md(report_title(report))} ({escape_md(report['split'])} split)",
        "",
        f"{data['num_samples']} images, {data['num_classes']} classes "
        f"(many {groups['many']}, medium {groups['medium']}, few {groups['few']}); "
        f"test-time ensembling {describe_tte(report)}. Top-1 accuracy in % "
        "unless noted; group accuracy is over the images of the group's classes.",
        "",
        "## Accuracy",
        "",
        *_table(["Run", *(title for _, title in COLUMNS), "ECE"], summary_rows(report)),
    ]
    if weights_lines(report):
        lines += ["", "Weights evaluated:", "",
                  *(f"- **{escape_md(name)}**: {escape_md(text)}" for name, text in weights_lines(report))]
    if len(report["runs"]) > 1:
        first = escape_md(report["runs"][0]["name"])
        lines += ["", f"## Change against {first} (percentage points)", "",
                  *_table(["Run", *(title for _, title in COLUMNS)], delta_rows(report))]
    if shows_groups(report):
        lines += ["", "## Across seeds (mean ± sample std over the n runs of each configuration)", "",
                  *_table(["Group", "n", *(title for _, title in COLUMNS), "ECE"], group_rows(report))]
    if report.get("paired"):
        lines += ["", f"## Against {escape_md(report['paired'][0]['reference'])}, paired by seed "
                  "(percentage points: mean difference [95% t-interval])", "",
                  *_table(["Group", "n", *(title for _, title in COLUMNS)], paired_rows(report))]
    if report.get("frontier", {}).get("paired"):
        lines += ["", f"## Head-tail frontier against {escape_md(report['frontier']['reference'])} "
                  "(percentage points: mean difference [95% t-interval] over seeds)", "",
                  "Each run swept along t in z - t·log(prior) on val and read where its many accuracy equals the "
                  "reference's; the same t applied to test. Above 0: a gain, not a trade.", "",
                  *_table(list(FRONTIER_HEADER), frontier_rows(report))]
    truth = true_shares(report)
    lines += ["", "## Prediction share by group (% of predictions; true share in the header)", "",
              *_table(["Run", *(f"{g.capitalize()} (true {format_percent(truth[g])})" for g in GROUPS)],
                      share_rows(report))]
    lines += ["", "## Classes", "", *_table(list(CLASS_HEADER), class_rows(report))]
    lines += ["", "## Most confused pairs", ""]
    for run in report["runs"]:
        pairs = run["metrics"]["confused_pairs"]  # the same list as report.json and report.html
        text = "; ".join(f"{escape_md(p['true_name'])} → {escape_md(p['predicted_name'])} ({p['count']})"
                         for p in pairs) or "none"
        lines.append(f"- **{escape_md(run['name'])}**: {text}")
    lines += ["", f"_Written by sage {report['versions'].get('sage', '?')} on {report['created']}; "
              "every figure is in report.json._", ""]
    return "\n".join(lines)
