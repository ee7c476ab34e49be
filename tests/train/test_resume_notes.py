"""What a resume says: a thread-count change is warned about; no checkpoint is one message, not two."""

from __future__ import annotations

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


def test_resume_without_a_checkpoint_says_one_thing(synthetic_prepared: Path, synthetic_text_cache: Path,
                                                    tmp_path: Path, caplog) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("")
    with caplog.at_level(logging.WARNING), pytest.raises(SageError, match="holds outputs but no checkpoint"):
        run(config(synthetic_prepared, synthetic_text_cache, out, resume=True))
    assert "starting from step 0" not in caplog.text  # the old warning contradicted the error
