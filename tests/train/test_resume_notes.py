"""What a resume says and does: a thread-count change is warned about; a run stopped before its first
checkpoint starts from step 0; a run whose final write failed resumes from its finished state."""

from __future__ import annotations

import errno
import logging
import shutil
from pathlib import Path

import pytest
import torch

from sage_cli import artifacts
from sage_cli.errors import SageError
from sage_cli.train import build_train_config, run
from sage_cli.train import checkpoint as ckpt


def config(prepared: Path, text: Path, out: Path, **options):
    return build_train_config({"prepared": prepared, "text_cache": text, "out": out, "method": "linear",
                               "batch_size": 16, "device": "cpu", "num_workers": 0, "max_steps": 2,
                               "checkpoint_every": 1, "seed": 0, **options})


def test_a_resume_with_another_thread_count_warns(synthetic_prepared: Path, synthetic_text_cache: Path,
                                                  tmp_path: Path, caplog) -> None:
    out = tmp_path / "run"
    threads = torch.get_num_threads()
    run(config(synthetic_prepared, synthetic_text_cache, out))
    assert artifacts.read_record(out, artifacts.TRAIN_RECORD)["torch_threads"] == threads
    checkpoint = ckpt.find_latest_checkpoint(out)
    assert ckpt.load_checkpoint_state(checkpoint)["torch_threads"] == threads
    (out / "train.json").unlink()  # as if killed after the checkpoint
    (out / "adapter.safetensors").unlink()
    torch.set_num_threads(threads + 1)
    try:
        with caplog.at_level(logging.WARNING, logger="sage_cli.train.checkpoint"):
            run(config(synthetic_prepared, synthetic_text_cache, out, resume=True))
    finally:
        torch.set_num_threads(threads)
    assert (f"{checkpoint} was written with {threads} torch thread(s), this process has {threads + 1}: the resumed "
            "run will not be bit-for-bit the uninterrupted one") in caplog.text
    caplog.clear()
    shutil.rmtree(out)
    run(config(synthetic_prepared, synthetic_text_cache, out))
    (out / "train.json").unlink()
    with caplog.at_level(logging.WARNING):
        run(config(synthetic_prepared, synthetic_text_cache, out, resume=True))
    assert "torch thread" not in caplog.text  # the same count: nothing to say


def test_resume_after_a_stop_before_the_first_checkpoint_starts_from_step_0(
        synthetic_prepared: Path, synthetic_text_cache: Path, tmp_path: Path, caplog) -> None:
    # red team: --resume after a kill before the first checkpoint refused and asked for --force
    fresh = run(config(synthetic_prepared, synthetic_text_cache, tmp_path / "fresh"))
    out = tmp_path / "run"
    (out / "checkpoints" / ".step-00000001.k2j3h4g5.tmp").mkdir(parents=True)  # the kill's debris
    (out / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n')
    with caplog.at_level(logging.WARNING, logger="sage_cli"):
        resumed = run(config(synthetic_prepared, synthetic_text_cache, out, resume=True))
    assert f"{out}: no checkpoint to resume from (stopped before its first checkpoint); starting from step 0" \
        in caplog.text
    assert (out / "adapter.safetensors").read_bytes() == (fresh.out / "adapter.safetensors").read_bytes()
    assert resumed.record["final_eval"] == fresh.record["final_eval"]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert '{"kind": "train", "step": 1}' not in lines  # the stopped run's line is gone
    assert len(lines) == len((fresh.out / "metrics.jsonl").read_text().splitlines()) == 2


def test_resume_refuses_final_weights_without_a_checkpoint(synthetic_prepared: Path, synthetic_text_cache: Path,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "adapter.safetensors").write_bytes(b"weights of something")
    with pytest.raises(SageError, match=rf"^{out}: holds adapter.safetensors but no checkpoint and no train.json; "
                                        "pass --force to start over$"):
        run(config(synthetic_prepared, synthetic_text_cache, out, resume=True))
    assert (out / "adapter.safetensors").read_bytes() == b"weights of something"


@pytest.mark.parametrize("failing", ["adapter.safetensors", "train.json"])
def test_a_full_disk_at_the_final_write_resumes_without_losing_a_step(
        synthetic_prepared: Path, synthetic_text_cache: Path, tmp_path: Path, monkeypatch, failing: str) -> None:
    # red team: disk full at the final write of a --max-steps run said "re-run with --resume", which refused
    options = {"checkpoint_every": 100}  # no checkpoint on the way: 2 steps of a 3-step epoch
    fresh = run(config(synthetic_prepared, synthetic_text_cache, tmp_path / "fresh", **options))
    out = tmp_path / "run"
    real_write = artifacts.write_bytes_atomic

    def full_disk(path, data) -> None:
        if Path(path) == out / failing:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, data)

    monkeypatch.setattr(artifacts, "write_bytes_atomic", full_disk)
    with pytest.raises(SageError, match=r"cannot write the .* \(No space left on device\); free space or fix "
                                        r"permissions, then re-run with --resume$"):
        run(config(synthetic_prepared, synthetic_text_cache, out, **options))
    assert ckpt.find_latest_checkpoint(out) == out / "checkpoints" / "step-00000002"
    monkeypatch.setattr(artifacts, "write_bytes_atomic", real_write)
    resumed = run(config(synthetic_prepared, synthetic_text_cache, out, resume=True, **options))
    assert (out / "adapter.safetensors").read_bytes() == (fresh.out / "adapter.safetensors").read_bytes()
    assert resumed.record["final_eval"] == fresh.record["final_eval"]
    assert resumed.record["final_eval"]["step"] == 2
