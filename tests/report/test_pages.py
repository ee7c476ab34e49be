"""report.html and report.md: structure, self-containment, and table values equal to report.json."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from sage_cli.report import ReportConfig, run
from sage_cli.report.markdown import format_delta, format_percent
from sage_cli.report.svg import compute_group_bands


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
    report = run(ReportConfig(out=out / "one", zero_shot=prepared, text_cache=text, device="cpu")).report
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
    assert page.svgs == ["plot plot-per-class", "plot plot-groups", "plot plot-share"]
    assert not page.tags & {"script", "link", "img", "iframe"}
    external = [v for k, v in page.attrs_seen if k in ("src", "href") and v]
    assert external == []
    assert text.count("<circle") == 7  # per-class dots: 4 + 3 (one class has no accuracy in run 2), no mean line


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
