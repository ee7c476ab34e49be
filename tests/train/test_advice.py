"""Warnings of a run set up to learn little (too few optimiser steps, no split to evaluate on) or to run
slowly (launch-bound GPU steps), and the DataLoader workers chosen for the CPUs of a rank."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
import torch

from sage_cli.data import build_loader, resolve_num_workers
from sage_cli.train import build_train_config, run
from sage_cli.train.advice import compute_launch_advice, compute_schedule_advice

from sage_cli import artifacts


@pytest.mark.parametrize(("images", "batch", "epochs", "advice"), [
    # 184 images at 128: 2 steps an epoch, 20 in all; halving to 16 makes 12 an epoch, 120 in 10 epochs
    (184, 128, 10, "184 images x 10 epochs at batch 128 = 20 optimiser steps in all (under 100): "
                   "consider --batch-size 16 (120 steps)"),
    # 20 images at 16: 2 steps an epoch; 50 epochs make 100
    (20, 128, 10, "20 images x 10 epochs at batch 128 = 10 optimiser steps in all (under 100): "
                  "consider --batch-size 16 --epochs 50 (100 steps)"),
    # 45 images at 8 (already below 16): 6 steps an epoch, 17 epochs make 102
    (45, 8, 1, "45 images x 1 epoch at batch 8 = 6 optimiser steps in all (under 100): "
               "consider --epochs 17 (102 steps)"),
    (1000, 32, 4, None),  # 32 steps an epoch, 128 in all
    (100, 1, 1, None),  # exactly 100
])
def test_schedule_advice_is_computed(images: int, batch: int, epochs: int, advice: str | None) -> None:
    assert compute_schedule_advice(images, batch, epochs) == advice


def _train(prepared: Path, text: Path, out: Path, **options):
    base = {"prepared": prepared, "text_cache": text, "out": out, "method": "linear", "batch_size": 8, "epochs": 1,
            "device": "cpu", "num_workers": 0, "seed": 0, "eval_every": 0}
    return run(build_train_config({**base, **options}))


def _train_split_only(prepared: Path, out: Path) -> Path:
    """A copy of the prepared fixture without its val and test rows."""
    shutil.copytree(prepared, out)
    manifest = artifacts.read_table(out, artifacts.MANIFEST).to_pandas()
    artifacts.write_table(out, artifacts.MANIFEST, manifest[manifest["split"] == "train"].reset_index(drop=True))
    return out


def test_train_warns_on_few_steps_and_no_eval_split(synthetic_prepared: Path, synthetic_text_cache: Path,
                                                    tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    prepared = _train_split_only(synthetic_prepared, tmp_path / "prepared")  # 45 train images, no val/test
    text = synthetic_text_cache
    with caplog.at_level(logging.WARNING):
        _train(prepared, text, tmp_path / "run")
    assert ("45 images x 1 epoch at batch 8 = 6 optimiser steps in all (under 100): consider --epochs 17 "
            "(102 steps)") in caplog.text
    assert "has neither a val nor a test split: the run is not evaluated" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _train(prepared, text, tmp_path / "run-capped", max_steps=3)  # --max-steps chose the length
    assert "optimiser steps in all" not in caplog.text


@pytest.mark.parametrize(("micro", "world", "device", "expected"), [
    (128, 8, "cuda", "16 images per GPU per forward pass (micro-batch 128 over 8 GPUs)"),
    (32, 1, "cuda", "32 images per GPU per forward pass (micro-batch 32)"),
    (128, 2, "cuda", None),  # 64 per GPU: enough
    (16, 1, "cpu", None),  # a CPU run is not launch-bound
])
def test_launch_bound_advice(micro: int, world: int, device: str, expected: str | None) -> None:
    advice = compute_launch_advice(micro, world, device)
    if expected is None:
        assert advice is None
    else:
        assert advice.startswith(expected + ": the step is bound by kernel launches") and "at least 64" in advice


@pytest.mark.parametrize(("cpus", "local_world", "requested", "workers"), [
    (16, None, None, 15),  # one GPU: every CPU but the main process's
    (16, "8", None, 1),  # 8 ranks on 16 CPUs: 2 each, one of them the rank's own
    (64, "2", None, 16),  # capped at MAX_DEFAULT_WORKERS
    (2, "4", None, 1),  # fewer CPUs than ranks: still one worker
    (16, "8", 8, 2),  # an explicit count is capped at this rank's share
    (16, None, 0, 0),  # 0: load in the main process
])
def test_worker_defaults_from_the_cpus_per_local_rank(monkeypatch, cpus, local_world, requested, workers) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    if local_world is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_world)
    assert resolve_num_workers(requested) == workers
    loader = build_loader(list(range(4)), 2, requested, torch.device("cpu"))
    assert loader.num_workers == workers
