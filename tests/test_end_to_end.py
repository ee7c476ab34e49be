"""All four stages through the CLI on the synthetic dataset with a tiny random-init CLIP."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from sage_cli.cli import app

pytestmark = pytest.mark.slow


def _sage(*args: str) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"sage {' '.join(map(str, args))} failed:\n{result.output}"
    return result.output


def test_pipeline_through_the_cli(tmp_path):
    prep, text, report = tmp_path / "prep", tmp_path / "text", tmp_path / "report"
    _sage("prepare", "synthetic", "--out", prep, "--seed", "0")
    assert {f.name for f in prep.iterdir()} >= {"manifest.parquet", "classes.parquet", "prepare.json"}
    assert pq.read_schema(prep / "manifest.parquet").names == ["sample_id", "path", "label", "split"]

    _sage("encode-text", "--prepared", prep, "--model", "sage-tiny", "--pretrained", "none",
          "--templates", "single", "--device", "cpu", "--out", text)
    classes = pq.read_table(prep / "classes.parquet")
    embeddings = pq.read_table(text / "class_embeddings.parquet")
    assert embeddings.num_rows == classes.num_rows

    runs = []
    for method in ("lift", "sage"):
        run = tmp_path / method
        _sage("train", "--prepared", prep, "--text-cache", text, "--method", method, "--out", run,
              "--max-steps", "3", "--batch-size", "8", "--num-workers", "0", "--device", "cpu")
        record = json.loads((run / "train.json").read_text())
        assert record["stage"] == "train"
        assert (run / "adapter.safetensors").is_file()
        runs.append(run)

    output = _sage("report", *runs, "--zero-shot", prep, "--text-cache", text, "--out", report,
                   "--workers", "0", "--device", "cpu")
    for heading in ("overall", "many", "medium", "few"):
        assert heading in output
    data = json.loads((report / "report.json").read_text())
    assert [r["name"] for r in data["runs"]][0] == "zero-shot"
    assert len(data["runs"]) == 3
    for run in data["runs"]:
        assert set(run["metrics"]) >= {"top1", "top5", "many", "medium", "few", "ece"}
    per_class = pq.read_table(report / "per_class.parquet")
    assert per_class.num_rows == 3 * classes.num_rows
    # 8 figures (per-class, delta, groups, share, predicted count, reliability, group confusion, curves)
    # and one full confusion matrix per run, inline in the page and as PDF + PNG in figures/.
    assert (report / "report.html").read_text().count("<svg") == 11
    assert len(list((report / "figures").glob("*.pdf"))) == len(list((report / "figures").glob("*.png"))) == 11
