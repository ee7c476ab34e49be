"""`sage report` on real trained runs (tiny model): needs the train stage (skipped until it exists)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sage_cli import artifacts
from sage_cli.errors import SageError
from sage_cli.report import ReportConfig, run

pytest.importorskip("sage_cli.train", reason="the train stage (sage_cli.train) is not built yet")
pytest.importorskip("sage_cli.commands.train", reason="the train command is not built yet")

from sage_cli.cli import app  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two short CPU runs (linear, lift) of the tiny model on the tiny dataset."""
    prepared, text = tiny_data
    root = tmp_path_factory.mktemp("runs")
    runs = []
    for method in ("linear", "lift"):
        out = root / method
        result = runner.invoke(app, ["train", "--prepared", str(prepared), "--text-cache", str(text), "--method",
                                     method, "--out", str(out), "--max-steps", "2", "--batch-size", "4",
                                     "--device", "cpu", "--seed", "0"])
        assert result.exit_code == 0, result.output
        runs.append(out)
    return runs[0], runs[1]


def test_report_on_trained_runs(tiny_data, trained, tmp_path: Path) -> None:
    prepared, text = tiny_data
    out = tmp_path / "out"
    config = ReportConfig(out=out, runs=trained, zero_shot=prepared, text_cache=text, device="cpu", figures=False)
    result = run(config)
    names = [r["name"] for r in result.report["runs"]]
    assert names == ["zero-shot", "linear", "lift"] and set(result.evaluated) == set(names)
    for run_dir in trained:
        assert (run_dir / "predictions.parquet").is_file() and (run_dir / "predictions.json").is_file()
    per_class = artifacts.read_table(out, artifacts.PER_CLASS).to_pandas()
    assert len(per_class) == 3 * 4 and per_class["run"].unique().tolist() == names
    deltas = result.report["deltas"]
    top1 = [r["metrics"]["top1"] for r in result.report["runs"]]
    assert deltas[2]["top1"] == pytest.approx(top1[2] - top1[0])
    assert result.report["runs"][1]["identity"]["checkpoint_sha256"] == artifacts.sha256_file(
        trained[0] / "adapter.safetensors")
    again = run(ReportConfig(out=out, runs=trained, zero_shot=prepared, text_cache=text, device="cpu", force=True,
                             figures=False))
    assert again.evaluated == ()
    assert [r["metrics"] for r in again.report["runs"]] == [r["metrics"] for r in result.report["runs"]]
    json.dumps(result.report, allow_nan=False)  # strict JSON: no NaN anywhere


def test_truncated_checkpoint_of_real_run_refused(trained, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(trained[0], broken)
    data = (broken / "adapter.safetensors").read_bytes()
    (broken / "adapter.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(SageError, match="adapter.safetensors"):
        run(ReportConfig(out=tmp_path / "out", runs=(broken,), device="cpu"))
    assert not (tmp_path / "out").exists()


def test_report_groups_seeds_with_reference_and_latex(tiny_data, trained, tmp_path: Path) -> None:
    prepared, text = tiny_data
    second = tmp_path / "s1" / "linear"
    result = runner.invoke(app, ["train", "--prepared", str(prepared), "--text-cache", str(text), "--method",
                                 "linear", "--out", str(second), "--max-steps", "2", "--batch-size", "4",
                                 "--device", "cpu", "--seed", "1"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    args = ["report", str(trained[0]), str(second), str(trained[1]), "--out", str(out), "--device", "cpu",
            "--workers", "0", "--reference", "lift", "--latex"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    runs = report["runs"]
    assert [(r["method"], r["seed"], r["group"]) for r in runs] == [("linear", 0, "linear"), ("linear", 1, "linear"),
                                                                     ("lift", 0, "lift")]
    groups = {g["name"]: g for g in report["groups"]}
    assert groups["linear"]["n"] == 2 and groups["linear"]["seeds"] == [0, 1] and groups["lift"]["n"] == 1
    top1 = [r["metrics"]["top1"] for r in runs]
    assert groups["linear"]["metrics"]["top1"]["mean"] == pytest.approx((top1[0] + top1[1]) / 2)
    assert groups["linear"]["metrics"]["top1"]["std"] == pytest.approx(abs(top1[0] - top1[1]) / 2 ** 0.5)
    (paired,) = report["paired"]
    assert (paired["group"], paired["reference"], paired["seeds"], paired["unpaired_seeds"]) == (
        "linear", "lift", [0], [1])
    assert paired["metrics"]["top1"]["mean"] == pytest.approx(top1[0] - top1[2])
    per_class = artifacts.read_table(out, artifacts.PER_CLASS).to_pandas()
    assert per_class["seed"].tolist() == [0] * 4 + [1] * 4 + [0] * 4
    assert per_class["run_group"].tolist() == ["linear"] * 8 + ["lift"] * 4
    md = (out / "report.md").read_text()
    assert "## Across seeds" in md and "## Against lift, paired by seed" in md
    tex = (out / "report.tex").read_text()
    assert r"\label{tab:sage-paired}" in tex and tex.count(r"\toprule") == 3
    # The curves come from each run's metrics.jsonl; every figure is also a PDF and a PNG.
    logged = [json.loads(line) for line in (second / "metrics.jsonl").read_text().splitlines()]
    history = runs[1]["history"]
    assert [t["loss"] for t in history["train"]] == [e["loss"] for e in logged if e["kind"] == "train"]
    assert [e["top1"] for e in history["eval"]] == [e["top1"] for e in logged if e["kind"] == "eval"]
    figures = {p.name for p in (out / "figures").iterdir()}
    assert {"curves.pdf", "curves.png", "delta.pdf", "reliability.png", "confusion-groups.pdf"} <= figures
    assert 'class="plot plot-curves"' in (out / "report.html").read_text()
    refused = runner.invoke(app, [*args[:-3], "--reference", "nope", "--force"])
    assert refused.exit_code == 1 and "--reference nope: names no run" in refused.output
    assert json.loads((out / "report.json").read_text()) == report  # nothing overwritten


def test_frontier_against_a_reference_follows_from_the_cached_logits(tiny_data, trained, tmp_path: Path) -> None:
    import numpy as np

    from sage_cli.report import VAL_CACHE
    from sage_cli.report.frontier import FRONTIER_GRID, compute_frontier_comparison
    from sage_cli.report.logits import load_logits

    prepared, _ = tiny_data
    out = tmp_path / "out"
    result = run(ReportConfig(out=out, runs=trained, device="cpu", reference="lift", frontier=True))
    section = result.report["frontier"]
    assert section["reference"] == "lift" and section["grid"] == list(FRONTIER_GRID)
    rows = {r["name"]: r for r in section["runs"]}
    assert set(rows) == {"linear", "lift"} and rows["linear"]["reference_run"] == "lift" and "val" not in rows["lift"]

    def cached(directory: Path) -> dict:
        record = artifacts.read_record(directory, artifacts.PREDICTIONS_RECORD)
        logits, _, labels = load_logits(directory, record["fingerprint"])
        return {"logits": logits, "labels": labels}

    classes = artifacts.read_table(prepared, artifacts.CLASSES).to_pandas()
    prior = np.maximum(classes["train_count"].to_numpy(float), 1) / classes["train_count"].sum()
    linear, lift = ({"val": cached(r / VAL_CACHE), "test": cached(r)} for r in trained)
    assert len(linear["val"]["labels"]) == 4 and len(linear["test"]["labels"]) == 12  # val and test, each its own
    expected = compute_frontier_comparison(linear, lift, prior, classes["group"].tolist())
    assert rows["linear"]["curve"] == expected["curve"]
    assert rows["linear"]["val"] == expected["val"] and rows["linear"]["test"] == expected["test"]
    (paired,) = section["paired"]
    assert (paired["group"], paired["reference"], paired["n"]) == ("linear", "lift", 1)
    few = rows["linear"]["val"]["few_at_matched_many"]
    assert (paired["val_few_at_matched_many"] or {}).get("mean") == few
    assert "## Head-tail frontier against lift" in (out / "report.md").read_text()
    assert (out / "figures" / "frontier.png").is_file()
    assert 'class="plot plot-frontier"' in (out / "report.html").read_text()
    stamps = [(r / VAL_CACHE / "predictions.parquet").stat().st_mtime_ns for r in trained]
    again = run(ReportConfig(out=out, runs=trained, device="cpu", reference="lift", frontier=True, force=True))
    assert again.evaluated == () and again.report["frontier"] == json.loads(json.dumps(section))
    assert [(r / VAL_CACHE / "predictions.parquet").stat().st_mtime_ns for r in trained] == stamps  # val reused


def test_labels_and_title_name_rows_figures_and_pages(tiny_data, trained, tmp_path: Path) -> None:
    prepared, text = tiny_data
    out = tmp_path / "out"
    result = runner.invoke(app, ["report", *map(str, trained), "--zero-shot", str(prepared), "--text-cache", str(text),
                                 "--label", "Linear probe", "--label", "LIFT (ours)", "--title", "Birds of Lisbon",
                                 "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert [r["name"] for r in report["runs"]] == ["zero-shot", "Linear probe", "LIFT (ours)"]
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert md.startswith("# Birds of Lisbon (test split)\n")
    assert "| Linear probe | " in md and "| LIFT (ours) | " in md
    assert "<title>Birds of Lisbon</title>" in page and "<h1>Birds of Lisbon</h1>" in page
    groups_svg = page[page.index('<svg class="plot plot-groups"'):]
    assert ">LIFT (ours)<" in groups_svg[:groups_svg.index("</svg>")]  # the legend of the groups figure
    assert "Birds of Lisbon test" in result.output  # the summary table's title


@pytest.mark.parametrize(("labels", "message"), [
    (("one",), r"--label: got 1 for 2 RUN_DIR\(s\); give one per RUN_DIR, in order"),
    (("same", "same"), "--label: 'same' names two rows"),
    (("zero-shot", "b"), "--label: 'zero-shot' names two rows"),
])
def test_bad_labels_are_refused(tiny_data, trained, tmp_path: Path, labels: tuple[str, ...], message: str) -> None:
    prepared, text = tiny_data
    with pytest.raises(SageError, match=message):
        ReportConfig(out=tmp_path / "out", runs=trained, zero_shot=prepared, text_cache=text, labels=labels)
