"""`sage prepare` through the CLI: summary, --json, warnings and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from sage_cli import artifacts
from sage_cli.cli import app

from .conftest import WNIDS, snapshot

runner = CliRunner()


def test_json_output_is_the_record(imagenet_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["prepare", "imagenet-lt", "--root", str(imagenet_root), "--out", str(out),
                                 "--json", "--workers", "2"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record == artifacts.read_record(out, artifacts.PREPARE_RECORD)
    assert record["counts"] == {"train": 218, "val": 10, "test": 20}
    assert record["group_counts"] == {"many": 1, "medium": 2, "few": 2}


def test_summary_and_skip_bad(imagenet_root: Path, tmp_path: Path) -> None:
    (imagenet_root / f"train/{WNIDS[1]}/img_1_0.jpg").unlink()
    out = tmp_path / "out"
    result = runner.invoke(app, ["prepare", "imagenet-lt", "--root", str(imagenet_root), "--out", str(out)])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "error: 1 listed image(s)" in result.output
    assert "pass --skip-bad" in result.output and not out.exists()
    result = runner.invoke(app, ["prepare", "imagenet-lt", "--root", str(imagenet_root), "--out", str(out),
                                 "--skip-bad"])
    assert result.exit_code == 0, result.output
    assert "217" in result.output and "1/2/2" in result.output and "1 bad image(s) dropped" in result.output
    assert "train images is 217, the published split has 115,846" in result.output  # the recipe warning
    assert pd.read_csv(out / "dropped.csv")["path"].tolist() == [f"train/{WNIDS[1]}/img_1_0.jpg"]


def test_malformed_line_is_one_red_line_and_nothing_changes(imagenet_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["prepare", "imagenet-lt", "--root", str(imagenet_root), "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    before = snapshot(out)
    val = imagenet_root / "ImageNet_LT_val.txt"
    val.write_text(val.read_text() + "val/x.jpg two\n")
    result = runner.invoke(app, [*args, "--force"])
    assert result.exit_code == 1
    assert f"error: {val}:11: label 'two' is not an integer" in result.output.replace("\n", "")
    assert snapshot(out) == before


def test_cifar_groups_from_own_is_recorded_and_printed(tmp_path: Path) -> None:
    from .conftest import write_cifar

    root = write_cifar(tmp_path / "cifar-100-python", train_per_class=500, test_per_class=2)
    out = tmp_path / "out"
    result = runner.invoke(app, ["prepare", "cifar100-lt", "--root", str(root), "--out", str(out),
                                 "--imbalance-ratio", "50", "--groups-from", "own"])
    assert result.exit_code == 0, result.output
    assert "groups from this ratio's own counts" in result.output and "41/41/18" in result.output
    record = artifacts.read_record(out, artifacts.PREPARE_RECORD)
    assert record["groups_from"] == "own" and record["counts"]["train"] == 12608
    assert record["options"]["imbalance_ratio"] == 50.0
