"""Faults met during training, in process: NaN loss, full or read-only disk, unreadable images."""

from __future__ import annotations

import errno
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from sage_cli import artifacts
from sage_cli.errors import SageError
from sage_cli.losses import CompensatedLALoss
from sage_cli.train import build_train_config, run
from sage_cli.train import checkpoint as ckpt
from sage_cli.train import loop

# 45 train images, batch 8: 6 steps per epoch (the last of 5 images); 2 epochs = 12 steps
OPTIONS = {"method": "sage", "batch_size": 8, "device": "cpu", "num_workers": 0, "log_every": 10, "seed": 0,
           "epochs": 2, "checkpoint_every": 2, "lr": 0.05}


def _config(prepared: Path, text: Path, out: Path, **options: Any):
    return build_train_config({"prepared": prepared, "text_cache": text, "out": out, **OPTIONS, **options})


def _assert_same_weights(a: Path, b: Path) -> None:
    first, second = load_file(str(a / "adapter.safetensors")), load_file(str(b / "adapter.safetensors"))
    assert first.keys() == second.keys()
    for name in first:
        assert torch.allclose(first[name], second[name], atol=1e-6, rtol=0), name


def _assert_loadable(checkpoint: Path) -> dict[str, Any]:
    state = ckpt.load_checkpoint_state(checkpoint)
    weights = ckpt.load_weights(checkpoint / ckpt.WEIGHTS)
    assert all(torch.isfinite(t).all() for t in weights.values())
    return state


@pytest.fixture(scope="module")
def straight(synthetic_prepared: Path, synthetic_text_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    """The uninterrupted run every recovered run must match."""
    return run(_config(synthetic_prepared, synthetic_text_cache, tmp_path_factory.mktemp("faults") / "straight"))


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    straight, synthetic_prepared: Path, synthetic_text_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    forward = CompensatedLALoss.forward

    def poisoned(self, logits, labels, features=None):
        calls["n"] += 1
        loss = forward(self, logits, labels, features)
        return loss * float("nan") if calls["n"] == 5 else loss  # optimizer step 5

    monkeypatch.setattr(CompensatedLALoss, "forward", poisoned)
    out = tmp_path / "r"
    # Logged every 10 steps: the NaN of step 5 is found at the step-6 check (epoch end), and named.
    with pytest.raises(SageError, match=r"step 5: the training loss is NaN or inf.*step-00000004.*--resume"):
        run(_config(synthetic_prepared, synthetic_text_cache, out))
    assert ckpt.find_latest_checkpoint(out) == out / "checkpoints" / "step-00000004"
    assert _assert_loadable(out / "checkpoints" / "step-00000004")["position"]["global_step"] == 4
    assert not (out / "checkpoints" / "step-00000006").exists() and not (out / "adapter.safetensors").exists()
    monkeypatch.setattr(CompensatedLALoss, "forward", forward)
    resumed = run(_config(synthetic_prepared, synthetic_text_cache, out, resume=True))
    _assert_same_weights(straight.out, resumed.out)
    assert resumed.record["final_eval"] == straight.record["final_eval"]


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(
    straight, synthetic_prepared: Path, synthetic_text_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    write_state = ckpt.write_state

    def fill_disk(path: Path, payload: dict[str, Any]) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the step-4 checkpoint: half written, then ENOSPC
            path.write_bytes(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        write_state(path, payload)

    monkeypatch.setattr(ckpt, "write_state", fill_disk)
    out = tmp_path / "r"
    with pytest.raises(SageError, match=r"step-00000004: cannot write the checkpoint \(No space left on device\)"):
        run(_config(synthetic_prepared, synthetic_text_cache, out))
    root = out / "checkpoints"
    assert ckpt.find_latest_checkpoint(out) == root / "step-00000002"
    assert json.loads((root / "last.json").read_text())["checkpoint"] == "step-00000002"
    assert _assert_loadable(root / "step-00000002")["position"]["global_step"] == 2
    assert sorted(p.name for p in root.iterdir()) == ["last.json", "step-00000002"]  # no partial directory
    monkeypatch.setattr(ckpt, "write_state", write_state)
    resumed = run(_config(synthetic_prepared, synthetic_text_cache, out, resume=True))
    _assert_same_weights(straight.out, resumed.out)


def test_read_only_output_is_a_clear_error(synthetic_prepared: Path, synthetic_text_cache: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(loop, "open", read_only, raising=False)  # the metrics file is opened first
    out = tmp_path / "r"
    with pytest.raises(SageError, match=r"metrics.jsonl: cannot write the metrics \(Read-only file system\)"):
        run(_config(synthetic_prepared, synthetic_text_cache, out, max_steps=2))


def test_other_os_errors_keep_their_traceback(tmp_path: Path) -> None:
    from sage_cli.train.faults import explain_write_errors

    with pytest.raises(FileNotFoundError), explain_write_errors(tmp_path, "x"):
        raise FileNotFoundError(errno.ENOENT, "gone")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores permissions")
def test_unwritable_out_dir_is_a_clear_error(synthetic_prepared: Path, synthetic_text_cache: Path,
                                             tmp_path: Path) -> None:
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        with pytest.raises(SageError, match=r"locked/r: cannot write the run directory"):
            run(_config(synthetic_prepared, synthetic_text_cache, parent / "r", max_steps=1))
    finally:
        parent.chmod(0o700)


@pytest.fixture()
def damaged_prepared(tmp_path: Path) -> tuple[Path, list[str]]:
    """A fresh copy of the synthetic dataset (same fingerprint) with one corrupt and one missing train image."""
    spec = importlib.util.spec_from_file_location("_shared_conftest", Path(__file__).parents[1] / "conftest.py")
    shared = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shared)
    prepared = shared.make_synthetic_prepared(tmp_path / "prepared")
    manifest = artifacts.read_table(prepared, artifacts.MANIFEST).to_pandas()
    train = manifest[manifest["split"] == "train"]
    corrupt, missing = (prepared / "images" / train["path"].iloc[i] for i in (3, 30))
    corrupt.write_bytes(b"not a png")
    missing.unlink()
    return prepared, sorted(str(p) for p in (corrupt, missing))


def test_unreadable_image_stops_naming_it_or_is_skipped_and_recorded(
    damaged_prepared: tuple[Path, list[str]], synthetic_text_cache: Path, tmp_path: Path
) -> None:
    prepared, bad = damaged_prepared
    with pytest.raises(SageError, match=r"\.png: cannot read image"):
        run(_config(prepared, synthetic_text_cache, tmp_path / "strict", epochs=1))
    result = run(_config(prepared, synthetic_text_cache, tmp_path / "skip", epochs=1, skip_bad=True))
    record = result.record
    assert record["skipped_images"] == bad
    assert record["images_seen"] == 45 - 2 and record["steps"] == 6  # the seeded steps are kept
    assert artifacts.read_record(result.out, "train.json")["skipped_images"] == bad
