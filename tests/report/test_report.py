"""The report stage end to end on a tiny prepared dataset: zero-shot row, cache, TTE, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sage_cli import artifacts
from sage_cli.errors import SageError
from sage_cli.report import ReportConfig, run
from sage_cli.report.sources import check_same_test_set, load_run_source, load_test_set

from .conftest import make_prepared


def _config(tiny_data: tuple[Path, Path], out: Path, **kw: object) -> ReportConfig:
    prepared, text = tiny_data
    kw.setdefault("figures", False)  # the figures have their own tests (test_pages, test_with_train)
    return ReportConfig(out=out, zero_shot=prepared, text_cache=text, device="cpu", **kw)


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_zero_shot_report_writes_every_output_consistently(tiny_data, tmp_path: Path) -> None:
    result = run(_config(tiny_data, tmp_path / "out"))
    out = tmp_path / "out"
    assert result.evaluated == ("zero-shot",) and not result.skipped
    for name in ("report.json", "per_class.parquet", "report.md", "report.html"):
        assert (out / name).is_file()
    report = json.loads((out / "report.json").read_text())
    assert report == json.loads(json.dumps(result.report))
    assert [r["name"] for r in report["runs"]] == ["zero-shot"]
    assert report["dataset"]["num_samples"] == 12 and report["dataset"]["groups"] == {"many": 1, "medium": 2, "few": 1}
    assert report["dataset"]["classes"]["n_test"] == [3, 3, 3, 3]

    # Every figure follows from the cached predictions.
    cached = artifacts.read_table(out / "zero-shot", artifacts.PREDICTIONS).to_pandas()
    top = np.stack(cached["top_classes"].to_numpy())
    labels = cached["label"].to_numpy()
    assert top.shape == (12, 4)  # k = min(5, C)
    m = report["runs"][0]["metrics"]
    assert m["top1"] == pytest.approx((top[:, 0] == labels).mean())
    assert m["top5"] == 1.0  # 4 classes: the label is always in the top 4
    per_class_top1 = np.array([(top[labels == c, 0] == c).mean() for c in range(4)])
    assert m["worst_class_accuracy"] == pytest.approx(per_class_top1.min())
    assert m["gmean_class_accuracy"] == pytest.approx(np.prod(per_class_top1) ** 0.25)
    tp = np.array([((top[:, 0] == c) & (labels == c)).sum() for c in range(4)])
    f1 = 2 * tp / (np.bincount(top[:, 0], minlength=4) + 3)  # 3 test images per class
    assert m["macro_f1"] == pytest.approx(f1.mean())
    many = labels == 0
    assert m["many"] == pytest.approx((top[many, 0] == 0).mean())
    scores = np.stack(cached["top_scores"].to_numpy())
    assert np.all(np.diff(scores, axis=1) <= 0) and np.allclose(scores.sum(1), 1.0, atol=1e-5)

    per_class = artifacts.read_table(out, artifacts.PER_CLASS).to_pandas()
    assert list(per_class.columns) == ["run", "method", "seed", "run_group", "class_id", "name", "group",
                                       "train_count", "n_test", "accuracy"]
    assert per_class["method"].tolist() == ["zeroshot"] * 4 and per_class["seed"].isna().all()
    assert per_class["run_group"].tolist() == ["zero-shot"] * 4
    assert per_class["name"].tolist() == ["apple", "bear", "cat", "dog"]
    assert per_class["train_count"].tolist() == [150, 40, 30, 5]
    expected = [(top[labels == c, 0] == c).mean() for c in range(4)]
    np.testing.assert_allclose(per_class["accuracy"], expected)


def test_predictions_cache_reused_and_invalidated_by_tte(tiny_data, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run(_config(tiny_data, out))
    again = run(_config(tiny_data, out, force=True))
    assert again.evaluated == () and again.report["runs"][0]["evaluation"]["cached"] is True
    assert again.report["runs"][0]["metrics"] == first.report["runs"][0]["metrics"]
    tte = run(_config(tiny_data, out, tte=True, force=True))
    assert tte.evaluated == ("zero-shot",) and tte.report["tte"] is True
    record = artifacts.read_record(out / "zero-shot", artifacts.PREDICTIONS_RECORD)
    assert record["inputs"]["tte"] is True and record["inputs"]["split"] == "test"
    assert "tte_mode" not in record["inputs"]  # LIFT's default protocol: caches written before the modes still hold
    ten = run(_config(tiny_data, out, tte=True, tte_mode="ten-crop", force=True))
    assert ten.evaluated == ("zero-shot",) and ten.report["tte_mode"] == "ten-crop" and ten.report["tte_expand"] == 24
    assert "ten crops" in (out / "report.md").read_text()
    record = artifacts.read_record(out / "zero-shot", artifacts.PREDICTIONS_RECORD)
    assert record["inputs"]["tte_mode"] == "ten-crop"
    assert run(_config(tiny_data, out, tte=True, tte_mode="ten-crop", tte_expand=8, force=True)).evaluated


def test_bad_tte_options_are_one_line_errors(tiny_data, tmp_path: Path) -> None:
    with pytest.raises(SageError, match="--tte-mode must be one of five-crop, ten-crop, flip; got 'six'"):
        _config(tiny_data, tmp_path / "out", tte=True, tte_mode="six")
    with pytest.raises(SageError, match="--tte-expand must be between 0 and 1024 px; got -1"):
        _config(tiny_data, tmp_path / "out", tte=True, tte_expand=-1)
    assert not (tmp_path / "out").exists()


def test_same_report_is_skipped_and_other_inputs_refused(tiny_data, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(_config(tiny_data, out))
    before = _snapshot(out)
    assert run(_config(tiny_data, out)).skipped
    with pytest.raises(SageError, match="holds a report result of other inputs.*--force"):
        run(_config(tiny_data, out, split="val"))
    assert _snapshot(out) == before


def test_val_split(tiny_data, tmp_path: Path) -> None:
    report = run(_config(tiny_data, tmp_path / "out", split="val")).report
    assert report["split"] == "val" and report["dataset"]["num_samples"] == 4


def test_text_cache_of_other_classes_refused(tiny_data, tmp_path: Path) -> None:
    _, text = tiny_data
    other = make_prepared(tmp_path / "other", names=("ant", "bee", "cow", "elk"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(SageError, match="text cache was encoded for other classes"):
        run(ReportConfig(out=out, zero_shot=other, text_cache=text, device="cpu"))
    assert _snapshot(out) == {"keep.txt": b"mine"}


def test_different_test_sets_refused_naming_the_difference(tmp_path: Path) -> None:
    a = load_test_set(make_prepared(tmp_path / "a"), "test")
    b = load_test_set(make_prepared(tmp_path / "b", test_per_class=2), "test")
    c = load_test_set(make_prepared(tmp_path / "c", names=("apple", "bear", "cat", "wolf")), "test")

    class S:  # the two fields check_same_test_set reads
        def __init__(self, name: str, test_set: object) -> None:
            self.name, self.test_set = name, test_set

    with pytest.raises(SageError, match=r"cannot compare run-a .* run-b .*test splits differ \(12 vs 8 samples"):
        check_same_test_set([S("run-a", a), S("run-b", b)])
    with pytest.raises(SageError, match=r"class tables differ in 'name' \(1 classes; class 3: 'dog' vs 'wolf'\)"):
        check_same_test_set([S("run-a", a), S("run-c", c)])
    check_same_test_set([S("run-a", a), S("run-a2", load_test_set(make_prepared(tmp_path / "a2"), "test"))])


def _fake_run_dir(directory: Path, prepared: Path) -> Path:
    directory.mkdir(parents=True)
    record = artifacts.build_record("train", {"prepared": str(prepared)}, prepared=str(prepared))
    artifacts.write_record(directory, artifacts.TRAIN_RECORD, record)
    return directory


def test_run_without_checkpoint_refused_and_outputs_untouched(tiny_data, tmp_path: Path) -> None:
    prepared, _ = tiny_data
    run_dir = _fake_run_dir(tmp_path / "run", prepared)
    out = tmp_path / "out"
    run(_config(tiny_data, out))
    before = _snapshot(out)
    with pytest.raises(SageError, match=r"run: no checkpoint adapter.safetensors: not found.*--checkpoint"):
        run(ReportConfig(out=out, runs=(run_dir,), device="cpu", force=True))
    with pytest.raises(SageError, match=r"--checkpoint .*missing.safetensors: not found"):
        load_run_source(run_dir, "test", tmp_path / "missing.safetensors")
    with pytest.raises(SageError, match=r"train.json: missing"):
        run(ReportConfig(out=out, runs=(tmp_path,), device="cpu", force=True))
    assert _snapshot(out) == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "nothing to report"),
        ({"zero_shot": Path("p")}, "go together"),
        ({"runs": (Path("a"),), "split": "train"}, "--split must be test or val"),
        ({"runs": (Path("a"), Path("b")), "checkpoint": Path("c")}, "exactly one RUN_DIR; got 2"),
        ({"runs": (Path("a"),), "batch_size": 0}, "--batch-size must be a positive integer"),
    ],
)
def test_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(SageError, match=message):
        ReportConfig(out=Path("out"), **kwargs)


def test_per_class_table_nan_for_class_without_test_images(tmp_path: Path) -> None:
    from sage_cli.report.build import build_per_class_table

    report = {
        "dataset": {"classes": {"name": ["a", "b"], "group": ["many", "few"], "train_count": [9, 1], "n_test": [2, 0]}},
        "runs": [{"name": "r", "metrics": {"per_class_accuracy": [0.5, None]}}],
    }
    table = build_per_class_table(report)
    assert table["accuracy"].iloc[0] == 0.5 and pd.isna(table["accuracy"].iloc[1])


def test_corrupted_checkpoint_refused_and_outputs_untouched(tiny_data, tmp_path: Path) -> None:
    prepared, _ = tiny_data
    run_dir = _fake_run_dir(tmp_path / "run", prepared)
    (run_dir / "adapter.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken")
    out = tmp_path / "out"
    run(_config(tiny_data, out))
    before = _snapshot(out)
    with pytest.raises(SageError, match=r"adapter.safetensors: not a readable safetensors checkpoint"):
        run(ReportConfig(out=out, runs=(run_dir,), device="cpu", force=True))
    assert _snapshot(out) == before
