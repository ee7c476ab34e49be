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
    config = ReportConfig(out=out, runs=trained, zero_shot=prepared, text_cache=text, device="cpu")
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
    again = run(ReportConfig(out=out, runs=trained, zero_shot=prepared, text_cache=text, device="cpu", force=True))
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
