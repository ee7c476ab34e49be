"""`sage prepare shapes-lt` world options: --imbalance-ratio 1, --max-count, --variant, --domain."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from sage_cli.cli import app
from sage_cli.errors import SageError
from sage_cli.prepare import PrepareConfig
from sage_cli.world.shapes import class_names
from sage_cli.world.shapes_lt import DEFAULT_DOMAIN, compute_class_order


def test_cli_options_reach_the_data_and_the_record_and_bad_ones_change_nothing(tmp_path: Path) -> None:
    out = tmp_path / "bal"
    runner = CliRunner()
    result = runner.invoke(app, ["prepare", "shapes-lt", "--out", str(out), "--imbalance-ratio", "1",
                                 "--max-count", "2", "--variant", "5", "--domain", "hard"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "prepare.json").read_text())
    assert record["world"] == {"imbalance_ratio": 1.0, "max_count": 2, "variant": 5, "domain": "hard"}
    assert record["options"]["max_count"] == 2 and record["options"]["variant"] == 5
    assert record["options"]["imbalance_ratio"] == 1.0
    classes = pd.read_parquet(out / "classes.parquet")
    assert classes["train_count"].tolist() == [2] * 80
    world = class_names()
    assert classes["name"].tolist() == [world[c] for c in compute_class_order(5)]
    assert record["counts"] == {"train": 160, "val": 1600, "test": 4000}
    before = (out / "manifest.parquet").read_bytes()
    bad = runner.invoke(app, ["prepare", "shapes-lt", "--out", str(out), "--max-count", "0"])
    assert bad.exit_code == 1 and "--max-count must be >= 1" in bad.output
    other = runner.invoke(app, ["prepare", "shapes-lt", "--out", str(out), "--max-count", "3", "--imbalance-ratio", "1",
                                "--variant", "5", "--domain", "hard"])
    assert other.exit_code == 1 and "other inputs" in other.output  # never overwritten silently
    assert (out / "manifest.parquet").read_bytes() == before
    train = pd.read_parquet(out / "manifest.parquet").query("split == 'train'")
    assert np.bincount(train["label"]).tolist() == [2] * 80


def test_world_options_in_the_fingerprint(tmp_path: Path) -> None:
    from sage_cli.prepare import _fingerprint_inputs

    def inputs(**kwargs: object) -> dict:
        return _fingerprint_inputs(PrepareConfig(dataset="shapes-lt", out=tmp_path, **kwargs), None)

    # World v1's preparation (domain hard, 300 images at the head, variant 0) keeps its v1 inputs.
    v1 = {"dataset": "shapes-lt", "root": None, "seed": 0, "imbalance_ratio": None, "many_threshold": 100,
          "few_threshold": 20}
    assert inputs(domain="hard") == inputs(domain="hard", max_count=300, variant=0) == v1
    assert inputs(domain="moderate") == {**v1, "domain": "moderate"}
    assert inputs(domain="hard", max_count=65, variant=2) == {**v1, "max_count": 65, "variant": 2}
    assert (inputs() == v1) == (DEFAULT_DOMAIN == "hard")
    assert inputs(domain="fine") == {**v1, "domain": "fine"}
    # Other generated sets keep their inputs (and so the fingerprints of existing preparations).
    assert "domain" not in _fingerprint_inputs(PrepareConfig(dataset="synthetic", out=tmp_path), None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dataset": "shapes-lt", "imbalance_ratio": 0.5}, "--imbalance-ratio must be >= 1"),
        ({"dataset": "synthetic", "imbalance_ratio": 1.0}, "--imbalance-ratio must be > 1"),
        ({"dataset": "shapes-lt", "max_count": 0}, "--max-count must be >= 1"),
        ({"dataset": "shapes-lt", "variant": -2}, "--variant must be >= 0"),
        ({"dataset": "shapes-lt", "domain": "soft"}, "--domain must be one of fine, moderate, hard"),
        ({"dataset": "synthetic", "max_count": 10}, "--max-count applies to shapes-lt only"),
        ({"dataset": "synthetic", "variant": 1}, "--variant applies to shapes-lt only"),
        ({"dataset": "synthetic", "domain": "hard"}, "--domain applies to shapes-lt only"),
    ],
)
def test_bad_world_options_are_one_line_errors(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(SageError, match=message) as info:
        PrepareConfig(out=tmp_path / "x", **kwargs)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "x").exists()
