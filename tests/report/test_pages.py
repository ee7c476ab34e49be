"""report.html and report.md: structure, self-containment, and table values equal to report.json."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from sage_cli.report import ReportConfig, run
from sage_cli.report.markdown import format_delta, format_percent
from sage_cli.report.figures import compute_group_bands


SVG = "{http://www.w3.org/2000/svg}"


def _svg_elements(page: str, css: str) -> ET.Element:
    """The inline SVG of class ``plot {css}`` parsed as XML."""
    match = re.search(rf'<svg class="plot {css}".*?</svg>', page, re.S)
    assert match is not None, css
    return ET.fromstring(match.group(0))


class _Page(HTMLParser):
    """Collects SVG classes, tags used, and the cell texts of each table by its class."""

    def __init__(self) -> None:
        super().__init__()
        self.svgs: list[str] = []
        self.tags: set[str] = set()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self.attrs_seen: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs_seen += attrs
        a = dict(attrs)
        if tag == "svg":
            self.svgs.append(a.get("class") or "")
        elif tag == "table":
            self._table = a.get("class") or ""
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def two_row_report(tiny_data, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A report, re-rendered with a second (synthetic) run so deltas and legends have two rows."""
    from sage_cli.report import write_outputs

    out = tmp_path_factory.mktemp("pages")
    prepared, text = tiny_data
    report = run(ReportConfig(out=out / "one", zero_shot=prepared, text_cache=text, device="cpu", figures=False)).report
    second = json.loads(json.dumps(report["runs"][0]))
    second["name"] = "sage-run"
    m = second["metrics"]
    m.update(top1=0.5, top5=1.0, many=2 / 3, medium=0.5, few=None, per_class_accuracy=[1.0, 0.5, 0.5, None])
    report["runs"].append(second)
    from sage_cli.report.build import compute_deltas

    report["deltas"] = compute_deltas(report["runs"])
    write_outputs(out / "two", report)
    return out / "two", json.loads((out / "two" / "report.json").read_text())


def test_html_is_self_contained_with_three_plots(two_row_report) -> None:
    out, _ = two_row_report
    text = (out / "report.html").read_text()
    page = _Page()
    page.feed(text)
    assert page.svgs == ["plot plot-per-class", "plot plot-delta", "plot plot-groups", "plot plot-share",
                         "plot plot-predicted-count", "plot plot-reliability", "plot plot-confusion-groups",
                         "plot plot-confusion-zero-shot-0", "plot plot-confusion-sage-run-1"]
    assert not page.tags & {"script", "link", "img", "iframe"}
    external = [v for k, v in page.attrs_seen if k.endswith("href") and v and not v.startswith(("#", "data:"))]
    assert external == []  # markers are local references, matrices data: URIs
    per_class = _svg_elements(text, "plot-per-class")
    dots = [len(g.findall(".//{http://www.w3.org/2000/svg}use")) for g in per_class.iter(f"{SVG}g")
            if g.get("id", "").startswith("dots-")]
    assert dots == [4, 3]  # per-class dots: 4 + 3 (one class has no accuracy in run 2)
    assert "mean class" in ET.tostring(_svg_elements(text, "plot-groups"), encoding="unicode")
    assert (out / "figures" / "per-class.pdf").read_bytes().startswith(b"%PDF")
    assert (out / "figures" / "reliability.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(p.stem for p in (out / "figures").glob("*.pdf")) == sorted(s.removeprefix("plot plot-")
                                                                             for s in page.svgs)


def test_html_tables_equal_report_json(two_row_report) -> None:
    out, report = two_row_report
    page = _Page()
    page.feed((out / "report.html").read_text())
    summary = page.tables["summary"]
    assert summary[0] == ["Run", "Top-1", "Top-5", "Many", "Medium", "Few", "ECE"]
    for row, run_entry in zip(summary[1:], report["runs"]):
        m = run_entry["metrics"]
        assert row == [run_entry["name"], *(format_percent(m[k]) for k in ("top1", "top5", "many", "medium", "few",
                                                                            "ece"))]
    assert summary[2][:6] == ["sage-run", "50.0", "100.0", "66.7", "50.0", "–"]
    deltas = page.tables["deltas"]
    d = report["deltas"][1]
    assert deltas[1] == ["sage-run", *(format_delta(d[k]) for k in ("top1", "top5", "many", "medium", "few"))]
    assert deltas[1][5] == "–"
    share = page.tables["share"]
    zs = report["runs"][0]["metrics"]["prediction_share"]
    assert share[1] == ["zero-shot", *(format_percent(zs[g]["predicted"]) for g in ("many", "medium", "few"))]


def test_markdown_tables(two_row_report) -> None:
    out, report = two_row_report
    md = (out / "report.md").read_text()
    m = report["runs"][0]["metrics"]
    row = f"| zero-shot | {format_percent(m['top1'])} | {format_percent(m['top5'])} | {format_percent(m['many'])}"
    assert row in md
    assert "| sage-run | 50.0 | 100.0 | 66.7 | 50.0 | – |" in md
    assert "## Change against zero-shot (percentage points)" in md
    delta = report["deltas"][1]
    assert f"| sage-run | {format_delta(delta['top1'])} |" in md


def test_group_bands_meet_at_geometric_midpoints() -> None:
    bands = compute_group_bands([400, 150, 40, 30, 5], ["many", "many", "medium", "medium", "few"])
    assert bands["few"] == (5.0, pytest.approx((5 * 30) ** 0.5))
    assert bands["medium"] == (pytest.approx((5 * 30) ** 0.5), pytest.approx((40 * 150) ** 0.5))
    assert bands["many"] == (pytest.approx((40 * 150) ** 0.5), 400.0)
    assert set(compute_group_bands([5, 6], ["few", "few"])) == {"few"}  # empty groups get no band


def test_figures_are_byte_identical_on_a_rerun(two_row_report, tmp_path: Path) -> None:
    from sage_cli.report import write_outputs

    out, report = two_row_report
    write_outputs(tmp_path / "again", report)
    first = {p.name: p.read_bytes() for p in sorted((out / "figures").iterdir())}
    second = {p.name: p.read_bytes() for p in sorted((tmp_path / "again" / "figures").iterdir())}
    assert len(first) == 18 and first == second  # 9 figures as PDF and PNG
    assert (out / "report.html").read_bytes() == (tmp_path / "again" / "report.html").read_bytes()


def test_binned_means_by_hand() -> None:
    from sage_cli.report.figures import compute_binned_means

    counts = np.array([1, 1, 10, 100, 100])
    values = np.array([10.0, 30.0, np.nan, 50.0, 70.0])
    # Two log-spaced bins over 1..100: [1, 10) and [10, 100]; the NaN class is left out.
    assert compute_binned_means(counts, values, bins=2) == [(1.0, 20.0, 2), (100.0, 60.0, 2)]


def test_class_level_figures_shown(two_row_report) -> None:
    out, report = two_row_report
    page = _Page()
    page.feed((out / "report.html").read_text())
    classes = page.tables["classes"]
    m = report["runs"][0]["metrics"]
    summaries = [format_percent(m[k]) for k in ("mean_class_accuracy", "worst_class_accuracy", "hmean_class_accuracy",
                                                "gmean_class_accuracy", "macro_f1")]
    assert classes[0] == ["Run", "Mean class", "Worst class", "Harmonic mean", "Geometric mean", "Macro-F1",
                          "Classes never predicted"]
    assert classes[1] == ["zero-shot", *summaries, f"{m['never_predicted']} of 4"]
    md = (out / "report.md").read_text()
    assert f"| zero-shot | {' | '.join(summaries)} | {m['never_predicted']} of 4 |" in md
    # One count of confused pairs everywhere: report.json's list, whole, in both pages.
    pairs = report["runs"][0]["metrics"]["confused_pairs"]
    html_text = (out / "report.html").read_text()
    assert html_text.count(" → ") == md.count(" → ") and len(pairs) <= 10
    assert md.count(" → ") == sum(len(r["metrics"]["confused_pairs"]) for r in report["runs"])


HOSTILE = "a|b<script>alert(1)</script>\nx"


def test_names_are_written_safely_in_markdown_and_html(two_row_report, tmp_path: Path) -> None:
    """A class or run named ``a|b<script>...`` stays one table cell of plain text in both pages."""
    from sage_cli.report import write_outputs

    _, report = two_row_report
    report = json.loads(json.dumps(report))
    report["runs"][1]["name"] = HOSTILE
    report["deltas"][1]["name"] = HOSTILE
    pair = {"true": 0, "true_name": HOSTILE, "predicted": 1, "predicted_name": "[x](javascript:y) *b*", "count": 2}
    report["runs"][0]["metrics"]["confused_pairs"] = [pair]
    write_outputs(tmp_path, report)
    md = (tmp_path / "report.md").read_text()
    assert "<script>" not in md and "a|b" not in md
    assert "| a\\|b&lt;script&gt;alert(1)&lt;/script&gt; x | 50.0 | 100.0 | 66.7 | 50.0 | – |" in md
    assert ("- **zero-shot**: a\\|b&lt;script&gt;alert(1)&lt;/script&gt; x → \\[x\\](javascript:y) \\*b\\* (2)"
            in md.splitlines())
    rows = [line for line in md.splitlines() if line.startswith("| a\\|b")]
    # cells per row (summary, deltas, share, classes), split on unescaped "|": the name is one cell
    assert [len(re.split(r"(?<!\\)\|", line)) - 2 for line in rows] == [7, 6, 4, 7]
    html_text = (tmp_path / "report.html").read_text()
    assert "<script>" not in html_text
    page = _Page()
    page.feed(html_text)
    assert "script" not in page.tags
    assert page.tables["summary"][2][0] == HOSTILE  # the parser reads back the name as written
    assert page.tables["deltas"][1][0] == HOSTILE


@pytest.mark.filterwarnings("ignore:constrained_layout not applied")  # a 255-character legend entry squeezes the axes
def test_a_run_named_with_255_characters_gets_figure_files(two_row_report, tmp_path: Path) -> None:
    """Figure files carry the run's name: `confusion-<255 characters>-1.png` was over NAME_MAX (an OSError)."""
    from sage_cli.report import write_outputs

    _, report = two_row_report
    report = json.loads(json.dumps(report))
    report["runs"][1]["name"] = "r" * 255
    write_outputs(tmp_path, report)
    names = sorted(p.name for p in (tmp_path / "figures").iterdir() if p.name.startswith("confusion-r"))
    assert names == [f"confusion-{'r' * 64}-1.pdf", f"confusion-{'r' * 64}-1.png"]
