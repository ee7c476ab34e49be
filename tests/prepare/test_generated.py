"""`sage prepare` for the generated datasets: counts, groups, priors, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from sage_cli import artifacts
from sage_cli.errors import SageError
from sage_cli.prepare import PrepareConfig, compute_class_table, run


def test_class_table_groups_and_priors_by_hand():
    labels = np.array([0] * 120 + [1] * 101 + [2] * 100 + [3] * 20 + [4] * 19)
    table = compute_class_table(list("abcde"), labels, many=100, few=20)
    assert table["train_count"].tolist() == [120, 101, 100, 20, 19]
    assert table["group"].tolist() == ["many", "many", "medium", "medium", "few"]
    assert table["prior"].tolist() == pytest.approx([120 / 360, 101 / 360, 100 / 360, 20 / 360, 19 / 360])


def test_class_without_training_image_is_named():
    with pytest.raises(SageError, match=r"class 1 \('b'\) has no training image"):
        compute_class_table(["a", "b"], np.array([0, 0]), many=100, few=20)


def test_synthetic_counts_are_exact_and_deterministic(tmp_path):
    result = run(PrepareConfig(dataset="synthetic", out=tmp_path / "a", seed=3))
    classes = artifacts.read_table(tmp_path / "a", artifacts.CLASSES).to_pandas()
    expected = [int(150 * 30 ** (-i / 23)) for i in range(24)]
    assert classes["train_count"].tolist() == expected
    assert result.record["counts"] == {"train": sum(expected), "val": 240, "test": 480}
    assert result.record["group_counts"] == {
        "many": sum(c > 100 for c in expected),
        "medium": sum(20 <= c <= 100 for c in expected),
        "few": sum(c < 20 for c in expected),
    }
    run(PrepareConfig(dataset="synthetic", out=tmp_path / "b", seed=3))
    a = (tmp_path / "a" / "images" / "train" / "000007.png").read_bytes()
    assert a == (tmp_path / "b" / "images" / "train" / "000007.png").read_bytes()


def test_rerun_is_a_no_op_and_other_inputs_are_refused(tmp_path):
    out = tmp_path / "prep"
    run(PrepareConfig(dataset="synthetic", out=out, seed=0))
    manifest = out / "manifest.parquet"
    before = (manifest.read_bytes(), manifest.stat().st_mtime_ns)
    assert run(PrepareConfig(dataset="synthetic", out=out, seed=0)).skipped
    with pytest.raises(SageError, match="other inputs; choose another --out or pass --force"):
        run(PrepareConfig(dataset="synthetic", out=out, seed=1))
    assert (manifest.read_bytes(), manifest.stat().st_mtime_ns) == before


def test_bad_options_are_one_line_errors(tmp_path):
    with pytest.raises(SageError, match="unknown dataset 'nope'"):
        PrepareConfig(dataset="nope", out=tmp_path)
    with pytest.raises(SageError, match="--imbalance-ratio must be > 1"):
        PrepareConfig(dataset="synthetic", out=tmp_path, imbalance_ratio=1.0)
