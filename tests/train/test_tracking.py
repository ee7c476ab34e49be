"""`sage train --log tensorboard|csv|wandb`: the metrics.jsonl records, read back from each tracker."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from sage_cli.cli import app
from sage_cli.errors import SageError
from sage_cli.train.loop import StepInfo
from sage_cli.train.tracking import check_tracker_names, eval_values, step_values

runner = CliRunner()


def _train(prepared: Path, text: Path, out: Path, *extra: str) -> object:
    return runner.invoke(app, ["train", "--prepared", str(prepared), "--text-cache", str(text), "--method", "linear",
                               "--out", str(out), "--device", "cpu", "--num-workers", "0", "--batch-size", "8",
                               "--max-steps", "3", "--log-every", "1", *extra])


def test_values_of_steps_and_evaluations() -> None:
    assert step_values(StepInfo(4, 10, 0, loss=1.5, images_per_s=20.0, lr=0.01)) == {
        "train/loss": 1.5, "train/lr": 0.01, "train/images_per_s": 20.0}
    assert step_values(StepInfo(5, 10, 0)) == {}  # not a logging step
    assert eval_values({"split": "val", "step": 3, "top1": 0.5, "many": 1.0, "medium": None, "few": 0.25}) == {
        "val/top1": 0.5, "val/many": 1.0, "val/few": 0.25}
    assert check_tracker_names(["csv", "tensorboard", "csv"]) == ("csv", "tensorboard")
    with pytest.raises(SageError, match="--log must be one of tensorboard, wandb, csv; got 'mlflow'"):
        check_tracker_names(["mlflow"])


def test_tensorboard_and_csv_hold_the_metrics_jsonl_records(synthetic_prepared: Path, synthetic_text_cache: Path,
                                                            tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    result = _train(synthetic_prepared, synthetic_text_cache, out, "--log", "tensorboard", "--log", "csv")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in train] == [1, 2, 3] and evals
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    for key, field in (("train/loss", "loss"), ("train/lr", "lr"), ("train/images_per_s", "images_per_s")):
        scalars = events.Scalars(key)
        assert [s.step for s in scalars] == [r["step"] for r in train]
        assert [s.value for s in scalars] == pytest.approx([r[field] for r in train], rel=1e-6)
    split = evals[-1]["split"]
    assert [s.value for s in events.Scalars(f"{split}/top1")] == pytest.approx([e["top1"] for e in evals])
    assert [s.step for s in events.Scalars(f"{split}/top1")] == [e["step"] for e in evals]
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    losses = [float(r["train/loss"]) for r in rows if r["train/loss"]]
    assert losses == pytest.approx([r["loss"] for r in train], rel=1e-12)
    assert [float(r[f"{split}/top1"]) for r in rows if r.get(f"{split}/top1")] == pytest.approx(
        [e["top1"] for e in evals])


def test_missing_extra_is_one_line(synthetic_prepared: Path, synthetic_text_cache: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    result = _train(synthetic_prepared, synthetic_text_cache, tmp_path / "runs" / "s0" / "lift", "--log", "wandb")
    assert result.exit_code == 1
    assert result.output.strip() == "error: --log wandb needs the wandb package: pip install 'sage-lt[wandb]'"
    assert list(tmp_path.iterdir()) == []  # refused before it started: no --out, no parents, no lock file
    existing = tmp_path / "run"
    (existing / "notes.txt").parent.mkdir()
    (existing / "notes.txt").write_text("mine")
    result = _train(synthetic_prepared, synthetic_text_cache, existing, "--log", "csv", "--log", "wandb")
    assert result.exit_code == 1
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt"]  # a directory that was there stays as it was


def test_step_values_carry_the_compensation_summary() -> None:
    info = StepInfo(4, 10, 0, loss=1.5, images_per_s=20.0, lr=0.01, compensation={"mean": 0.25, "few": 0.5})
    assert step_values(info) == {"train/loss": 1.5, "train/lr": 0.01, "train/images_per_s": 20.0,
                                 "compensation/mean": 0.25, "compensation/few": 0.5}


def test_the_compensation_factor_is_logged_and_tracked(synthetic_prepared: Path, synthetic_text_cache: Path,
                                                       tmp_path: Path) -> None:
    # count compensation: delta_y = lam * log(1 + kappa / n_y), here with n = 24, 12, 6, 3 (the fixture)
    out = tmp_path / "run"
    result = _train(synthetic_prepared, synthetic_text_cache, out, "--loss", "la", "--compensation", "count",
                    "--lam", "0.5", "--kappa", "8", "--log", "csv")
    assert result.exit_code == 0, result.output
    delta = [0.5 * math.log(1 + 8 / n) for n in (24, 12, 6, 3)]
    groups = pq.read_table(synthetic_prepared / "classes.parquet").to_pandas().sort_values("class_id")["group"].tolist()
    train = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in train if r["kind"] == "train"]
    assert len(train) == 3
    expected = {"mean": sum(delta) / 4, "std": float(np.std(delta)), "min": delta[0], "max": delta[3]}
    for group in ("many", "medium", "few"):
        members = [d for d, g in zip(delta, groups) if g == group]
        if members:
            expected[group] = sum(members) / len(members)
    for record in train:
        assert record["compensation"] == pytest.approx(expected, rel=1e-6)
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["compensation/mean"]) for r in rows if r["compensation/mean"]] == pytest.approx(
        [expected["mean"]] * 3, rel=1e-6)


def test_no_compensation_logs_no_summary(synthetic_prepared: Path, synthetic_text_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = _train(synthetic_prepared, synthetic_text_cache, out, "--loss", "la", "--compensation", "none")
    assert result.exit_code == 0, result.output
    train = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in train if r["kind"] == "train"] and all("compensation" not in r for r in train)


def test_trackers_open_only_for_a_run_that_trains_and_force_clears_their_files(
    synthetic_prepared: Path, synthetic_text_cache: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    first = _train(synthetic_prepared, synthetic_text_cache, out, "--log", "csv", "--log", "tensorboard")
    assert first.exit_code == 0, first.output
    events = sorted((out / "tensorboard").iterdir())
    table = (out / "metrics.csv").read_bytes()
    again = _train(synthetic_prepared, synthetic_text_cache, out, "--log", "csv", "--log", "tensorboard")
    assert again.exit_code == 0 and "nothing to do" in again.output
    assert sorted((out / "tensorboard").iterdir()) == events and (out / "metrics.csv").read_bytes() == table
    other = _train(synthetic_prepared, synthetic_text_cache, out, "--lr", "0.02", "--force")
    assert other.exit_code == 0, other.output
    assert not (out / "metrics.csv").exists() and not (out / "tensorboard").exists()  # not the new run's metrics
