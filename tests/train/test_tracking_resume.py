"""`--log csv|tensorboard|wandb` across a SIGKILL and `--resume`: every tracker holds each step once.

The run (45 images, batch 8: 6 steps per epoch, 2 epochs = 12 steps, a checkpoint every 2 steps,
an evaluation at steps 6 and 12) is SIGKILLed right after step 5, which every tracker has logged
but no checkpoint holds; the resume restarts from the step-4 checkpoint and logs step 5 again.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

DRIVER = Path(__file__).with_name("fault_driver.py")
ARGS = ("--method", "linear", "--batch-size", "8", "--epochs", "2", "--lr", "0.05", "--num-workers", "0",
        "--device", "cpu", "--log-every", "1", "--checkpoint-every", "2", "--seed", "0",
        "--log", "csv", "--log", "tensorboard", "--log", "wandb")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
TRAIN_STEPS = list(range(1, 13))
LOGGED = [*range(1, 7), 6, *range(7, 13), 12]  # train steps and the two evaluations, in the order logged


def _train(prepared: Path, text: Path, out: Path, wandb_calls: Path, *extra: str,
           **env: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(DRIVER), "train", "--prepared", str(prepared), "--text-cache", str(text),
               "--out", str(out), *ARGS, *extra]
    return subprocess.run(command, env={**ENV, "SAGE_TEST_FAKE_WANDB": str(wandb_calls), **env},
                          capture_output=True, text=True, timeout=300)


def _records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _values(record: dict[str, Any]) -> dict[str, float]:
    """The tracker values of a metrics.jsonl record, by hand (train/..., compensation/..., SPLIT/...)."""
    if record["kind"] == "eval":
        return {f"{record['split']}/{k}": record[k] for k in ("top1", "many", "medium", "few")
                if record[k] is not None}
    return {"train/loss": record["loss"], "train/lr": record["lr"], "train/images_per_s": record["images_per_s"]}


@pytest.fixture(scope="module")
def killed_and_resumed(synthetic_prepared: Path, synthetic_text_cache: Path,
                       tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """The run directory after the kill and the resume, and the fake wandb's calls of both processes."""
    root = tmp_path_factory.mktemp("tracking-resume")
    out, calls = root / "s0" / "linear", root / "wandb-calls.jsonl"
    killed = _train(synthetic_prepared, synthetic_text_cache, out, calls, SAGE_TEST_KILL_AFTER_STEP="5")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert [r["step"] for r in _records(out)] == [1, 2, 3, 4, 5]  # step 5 logged, checkpoint of step 4
    with open(out / "metrics.csv", newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4, 5]
    resumed = _train(synthetic_prepared, synthetic_text_cache, out, calls, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout and "(step 4)" in resumed.stdout
    return out, [json.loads(line) for line in calls.read_text().splitlines()]


def test_metrics_jsonl_holds_each_step_once(killed_and_resumed: tuple[Path, list]) -> None:
    out, _ = killed_and_resumed
    records = _records(out)
    assert [r["step"] for r in records] == LOGGED
    assert [r["kind"] for r in records].count("eval") == 2


def test_csv_holds_every_step_once_with_the_columns_added_after_the_resume(
    killed_and_resumed: tuple[Path, list]
) -> None:
    out, _ = killed_and_resumed
    records = _records(out)
    with open(out / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        columns, rows = reader.fieldnames, list(reader)
    split = records[-1]["split"]
    # the eval columns first appear at step 6, after the resume; "few" has images in this split
    assert columns == ["step", "train/images_per_s", "train/loss", "train/lr",
                       *sorted(f"{split}/{k}" for k in ("few", "many", "medium", "top1"))]
    assert [int(r["step"]) for r in rows] == LOGGED
    for row, record in zip(rows, records):
        got = {k: float(v) for k, v in row.items() if k != "step" and v != ""}
        assert got == _values(record), row["step"]  # csv writes repr(float): exact


def test_tensorboard_purges_the_steps_after_the_checkpoint(killed_and_resumed: tuple[Path, list]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = killed_and_resumed
    records = _records(out)
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 2  # one file per process
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    train = [r for r in records if r["kind"] == "train"]
    for key, field in (("train/loss", "loss"), ("train/lr", "lr")):
        scalars = events.Scalars(key)
        assert [s.step for s in scalars] == TRAIN_STEPS, key
        assert [s.value for s in scalars] == pytest.approx([r[field] for r in train], rel=1e-6)
    split = records[-1]["split"]
    assert [s.step for s in events.Scalars(f"{split}/top1")] == [6, 12]


def test_wandb_continues_the_same_run(killed_and_resumed: tuple[Path, list]) -> None:
    out, calls = killed_and_resumed
    inits = [c["init"] for c in calls if "init" in c]
    assert len(inits) == 2  # the killed process and the resumed one
    run_id = json.loads((out / "wandb" / "sage_run.json").read_text())["id"]
    assert [i["id"] for i in inits] == [run_id, run_id] and [i["resume"] for i in inits] == ["allow", "allow"]
    assert [i["name"] for i in inits] == ["s0/linear", "s0/linear"]
    assert [i["dir"] for i in inits] == [str(out), str(out)]
    second_init = next(n for n, c in enumerate(calls) if "init" in c and n > 0)
    killed, resumed = calls[:second_init], calls[second_init:]
    assert not any("finish" in c for c in killed)  # SIGKILL: the run never finished
    assert [c["step"] for c in killed if "log" in c] == [1, 2, 3, 4, 5]
    assert [c["step"] for c in resumed if "log" in c] == LOGGED[4:]  # from step 5 again (W&B keeps one per step)
    assert resumed[-1] == {"finish": True}


def _fake_wandb(monkeypatch: pytest.MonkeyPatch, record: Path) -> None:
    spec = importlib.util.spec_from_file_location("_fault_driver", DRIVER)
    driver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(driver)
    monkeypatch.setitem(sys.modules, "wandb", driver.fake_wandb(record))


def test_wandb_names_each_seed_and_a_fresh_run_gets_a_new_id(
    synthetic_prepared: Path, synthetic_text_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from sage_cli.cli import app

    calls = tmp_path / "calls.jsonl"
    _fake_wandb(monkeypatch, calls)

    def train(out: Path, *extra: str) -> None:
        result = CliRunner().invoke(app, ["train", "--prepared", str(synthetic_prepared), "--text-cache",
                                          str(synthetic_text_cache), "--method", "linear", "--out", str(out),
                                          "--device", "cpu", "--num-workers", "0", "--batch-size", "8",
                                          "--max-steps", "2", "--log", "wandb", *extra])
        assert result.exit_code == 0, result.output

    for seed in (0, 1):
        train(tmp_path / f"s{seed}" / "lift", "--seed", str(seed))
    train(tmp_path / "s0" / "lift", "--seed", "0", "--lr", "0.02", "--force")  # another run: a new W&B run
    inits = [c["init"] for c in map(json.loads, calls.read_text().splitlines()) if "init" in c]
    assert [i["name"] for i in inits] == ["s0/lift", "s1/lift", "s0/lift"]
    assert len({i["id"] for i in inits}) == 3
    assert json.loads((tmp_path / "s0" / "lift" / "wandb" / "sage_run.json").read_text())["id"] == inits[2]["id"]
