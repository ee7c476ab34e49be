"""report.tex (``sage report --latex``): the report's tables as booktabs ``tabular`` environments.

Each table is a ``table`` float with a caption and a label (``tab:sage-accuracy``,
``tab:sage-seeds``, ``tab:sage-paired``), ready for ``\\input{report.tex}`` in a paper that loads
``booktabs``. Numbers are the ones report.md shows; names are escaped for LaTeX.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sage_cli.report.markdown import COLUMNS, group_rows, paired_rows, shows_groups, summary_rows

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def escape_latex(text: str) -> str:
    """``text`` with LaTeX's special characters escaped."""
    return "".join(_SPECIAL.get(ch, ch) for ch in str(text))


def _number(cell: str) -> str:
    """A cell of numbers with math-mode signs: ``+1.2 [-0.3, +2.7]`` -> ``$+$1.2 [$-$0.3, $+$2.7]``."""
    cell = cell.replace("–", "--")
    return re.sub(r"(?<![\w.])([+-])(?=\d)", lambda m: f"${m.group(1)}$", cell)


def _table(caption: str, label: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    spec = "l" + "r" * (len(header) - 1)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{escape_latex(caption)}}}", rf"\label{{{label}}}",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(escape_latex(h) for h in header) + r" \\",
             r"\midrule"]
    for row in rows:
        lines.append(" & ".join([escape_latex(row[0]), *(_number(c) for c in row[1:])]) + r" \\")
    return [*lines, r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]


def render_latex(report: dict[str, Any]) -> str:
    data = report["dataset"]
    titles = [title for _, title in COLUMNS]
    name = report.get("title") or data["dataset"]  # _table escapes the caption
    where = f"{name}, {report['split']} split, {data['num_samples']} images"
    lines = [f"% Written by sage {report['versions'].get('sage', '?')} on {report['created']}; needs \\usepackage{{booktabs}}.",
             ""]
    lines += _table(f"Top-1 accuracy (%) on {where}; many / medium / few: top-1 over each group's images.",
                    "tab:sage-accuracy", ["Run", *titles, "ECE"], summary_rows(report))
    if shows_groups(report):
        lines += _table(f"Mean ± sample standard deviation over seeds (%), {where}.",
                        "tab:sage-seeds", ["Group", "n", *titles, "ECE"], group_rows(report))
    if report.get("paired"):
        reference = report["paired"][0]["reference"]
        lines += _table(f"Difference to {reference} in percentage points, paired by seed: mean [95% t-interval].",
                        "tab:sage-paired", ["Group", "n", *titles], paired_rows(report))
    return "\n".join(lines).replace("±", r"$\pm$") + "\n"  # in captions and mean ± std cells
