"""Content hashes: a flipped byte in every artifact kind is caught on read, and a re-run of a stage
over a damaged artifact redoes it instead of saying "nothing to do"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sage_cli import artifacts
from sage_cli.data import load_prepared_data
from sage_cli.encode_text import load_text_cache
from sage_cli.errors import SageError
from sage_cli.prepare import PrepareConfig
from sage_cli.prepare import run as prepare
from sage_cli.train import build_train_config
from sage_cli.train import checkpoint as ckpt
from sage_cli.train import run as train


def flip(path: Path, offset: int | None = None) -> None:
    """Flip one bit of one byte (the middle one unless ``offset``)."""
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def edit_json(path: Path, key: str, value) -> None:
    """A valid JSON edit (what a flipped digit would do): only the record's own hash can tell."""
    record = json.loads(path.read_text())
    record[key] = value
    path.write_text(json.dumps(record, indent=2))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("integrity") / "prepared"
    prepare(PrepareConfig("synthetic", out))
    return out


@pytest.fixture(scope="module")
def trained(synthetic_prepared: Path, synthetic_text_cache: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("integrity") / "run"
    config = build_train_config({"prepared": synthetic_prepared, "text_cache": synthetic_text_cache, "out": out,
                                 "method": "linear", "batch_size": 16, "device": "cpu", "num_workers": 0,
                                 "max_steps": 2, "checkpoint_every": 1, "seed": 0})
    train(config)
    return out


def copy_tree(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("name", ["manifest.parquet", "classes.parquet"])
def test_a_flipped_byte_in_a_prepared_table_is_caught(prepared: Path, tmp_path: Path, name: str) -> None:
    copy = copy_tree(prepared, tmp_path / "p")
    flip(copy / name)
    with pytest.raises(SageError, match=rf"^{copy / name}: content differs from the sha256 recorded in "
                                        rf"{copy / 'prepare.json'} \(damaged or changed since sage prepare wrote it\)"):
        load_prepared_data(copy)


def test_a_valid_edit_of_a_record_is_caught(prepared: Path, tmp_path: Path) -> None:
    copy = copy_tree(prepared, tmp_path / "p")
    edit_json(copy / "prepare.json", "image_root", "/somewhere/else")
    with pytest.raises(SageError, match=rf"^{copy / 'prepare.json'}: damaged or edited since sage wrote it"):
        load_prepared_data(copy)


def test_a_rerun_over_a_damaged_table_is_refused_then_redone_with_force(prepared: Path, tmp_path: Path) -> None:
    copy = copy_tree(prepared, tmp_path / "p")
    good = artifacts.sha256_file(copy / "manifest.parquet")
    flip(copy / "manifest.parquet")
    with pytest.raises(SageError, match=rf"^{copy}: holds this prepare result but manifest.parquet is changed "
                                        r"\(sha256\); pass --force to redo it$"):
        prepare(PrepareConfig("synthetic", copy))
    result = prepare(PrepareConfig("synthetic", copy, force=True))
    assert not result.skipped and artifacts.sha256_file(copy / "manifest.parquet") == good


def test_a_damaged_record_is_named_as_damaged_not_as_other_inputs(prepared: Path, tmp_path: Path) -> None:
    copy = copy_tree(prepared, tmp_path / "p")
    flip(copy / "prepare.json", offset=1)  # '{\n' becomes '{\x0b': no longer JSON
    with pytest.raises(SageError, match=rf"^{copy}: holds a damaged prepare result \(prepare.json is not valid "
                                        r"JSON or does not match its record_sha256\); pass --force to redo it$"):
        prepare(PrepareConfig("synthetic", copy))


@pytest.mark.parametrize("name", ["text_cache.parquet", "class_embeddings.parquet"])
def test_a_flipped_byte_in_a_text_cache_is_caught(synthetic_text_cache: Path, tmp_path: Path, name: str) -> None:
    copy = copy_tree(synthetic_text_cache, tmp_path / "t")
    flip(copy / name)
    with pytest.raises(SageError, match=rf"^{copy / name}: content differs from the sha256 recorded in "
                                        rf"{copy / 'encode.json'}"):
        load_text_cache(copy, with_texts=True)


@pytest.mark.parametrize("name", ["adapter.safetensors", "metrics.jsonl"])
def test_a_flipped_byte_in_a_run_output_is_caught(trained: Path, tmp_path: Path, name: str) -> None:
    copy = copy_tree(trained, tmp_path / "r")
    flip(copy / name)
    with pytest.raises(SageError, match=rf"^{copy / name}: content differs from the sha256 recorded in "
                                        rf"{copy / 'train.json'}"):
        artifacts.read_record(copy, artifacts.TRAIN_RECORD)


@pytest.mark.parametrize("name", [ckpt.WEIGHTS, ckpt.STATE])
def test_a_flipped_byte_in_a_checkpoint_is_caught_before_a_resume(trained: Path, tmp_path: Path, name: str) -> None:
    copy = copy_tree(trained, tmp_path / "r")
    checkpoint = ckpt.find_latest_checkpoint(copy)
    assert checkpoint is not None and checkpoint.name == "step-00000002"  # the finished state, before the final writes
    assert ckpt.load_checkpoint_state(checkpoint)["position"]["global_step"] == 2  # intact: reads back
    flip(checkpoint / name)
    with pytest.raises(SageError, match=rf"^{checkpoint / name}: content differs from the sha256 in "
                                        rf"{checkpoint / 'checkpoint.json'}"):
        ckpt.load_checkpoint_state(checkpoint)


def test_a_resume_over_a_flipped_checkpoint_is_refused(trained: Path, tmp_path: Path, synthetic_prepared: Path,
                                                       synthetic_text_cache: Path) -> None:
    copy = copy_tree(trained, tmp_path / "r")
    (copy / "train.json").unlink()  # as if killed before the end
    (copy / "adapter.safetensors").unlink()
    state = copy / "checkpoints" / "step-00000002" / ckpt.STATE  # the latest: the finished state
    flip(state)
    config = build_train_config({"prepared": synthetic_prepared, "text_cache": synthetic_text_cache, "out": copy,
                                 "method": "linear", "batch_size": 16, "device": "cpu", "num_workers": 0,
                                 "max_steps": 2, "checkpoint_every": 1, "seed": 0, "resume": True})
    with pytest.raises(SageError, match=rf"^{state}: content differs from the sha256 in "):
        train(config)


def test_the_predictions_cache_is_recomputed_when_damaged(tmp_path: Path) -> None:
    import numpy as np

    from sage_cli.report.evaluate import load_cached_predictions, save_predictions
    from sage_cli.report.predictions import Predictions

    predictions = Predictions(np.arange(3), np.array([0, 1, 1]), np.array([[0, 1], [1, 0], [0, 1]]),
                              np.full((3, 2), 0.5, dtype=np.float32))
    save_predictions(tmp_path, predictions, artifacts.build_record("predictions", {"k": 1}))
    fingerprint = artifacts.sha256_json({"k": 1})
    assert load_cached_predictions(tmp_path, fingerprint)[0].labels.tolist() == [0, 1, 1]
    flip(tmp_path / "predictions.parquet")
    assert load_cached_predictions(tmp_path, fingerprint) is None


def test_saved_logits_are_hashed_with_the_predictions(tmp_path: Path) -> None:
    import numpy as np

    from sage_cli.report.evaluate import load_cached_predictions, save_predictions
    from sage_cli.report.predictions import Predictions
    from sage_cli.report.logits import LOGITS, load_logits, save_logits

    logits = np.array([[2.0, 1.0], [0.5, 3.0]], dtype=np.float16)
    predictions = Predictions(np.arange(2), np.array([0, 1]), np.array([[0, 1], [1, 0]]),
                              np.full((2, 2), 0.5, dtype=np.float32), logits)
    fingerprint = artifacts.sha256_json({"k": 2})
    save_logits(tmp_path, logits, predictions, fingerprint)
    first = artifacts.sha256_file(tmp_path / LOGITS)
    save_logits(tmp_path, logits, predictions, fingerprint)
    assert artifacts.sha256_file(tmp_path / LOGITS) == first  # the same bytes every time
    save_predictions(tmp_path, predictions, artifacts.build_record("predictions", {"k": 2}))
    assert load_logits(tmp_path, fingerprint)[0].tolist() == logits.tolist()
    assert load_cached_predictions(tmp_path, fingerprint) is not None
    flip(tmp_path / LOGITS, offset=(tmp_path / LOGITS).stat().st_size - 2)  # in the labels: still parses
    assert load_cached_predictions(tmp_path, fingerprint) is None  # re-evaluated, not trusted


def test_two_reports_writing_one_predictions_cache_never_vouch_for_each_others_table(tmp_path: Path,
                                                                                     monkeypatch) -> None:
    # red team: two `sage report` runs of one run directory sealed a record of one with the table of the
    # other; later reports printed the wrong run's numbers. Here report B writes its whole cache right
    # after report A's table lands, before A writes its record.
    import os

    import numpy as np

    from sage_cli.report.evaluate import Predictions, load_cached_predictions, save_predictions

    def predictions(label: int) -> Predictions:
        return Predictions(np.arange(3), np.full(3, label), np.array([[0, 1], [1, 0], [0, 1]]),
                           np.full((3, 2), 0.5, dtype=np.float32))

    real_replace, interleaved = os.replace, []

    def replace(src, dst, *args, **kwargs):
        real_replace(src, dst, *args, **kwargs)
        if Path(dst).name == "predictions.parquet" and not interleaved:
            interleaved.append(1)
            save_predictions(tmp_path, predictions(1), artifacts.build_record("predictions", {"run": "B"}))

    monkeypatch.setattr(os, "replace", replace)
    save_predictions(tmp_path, predictions(0), artifacts.build_record("predictions", {"run": "A"}))
    monkeypatch.setattr(os, "replace", real_replace)
    assert interleaved
    cached_a = load_cached_predictions(tmp_path, artifacts.sha256_json({"run": "A"}))
    assert cached_a is None or cached_a[0].labels.tolist() == [0, 0, 0]  # never B's table as A's
    assert load_cached_predictions(tmp_path, artifacts.sha256_json({"run": "B"})) is None  # A's record is last


def test_a_report_leaves_the_predictions_cache_of_a_run_directory_in_use_alone(tmp_path: Path, caplog,
                                                                             monkeypatch) -> None:
    import logging
    import subprocess
    import sys

    from sage_cli.report import save_cache

    (tmp_path / "run").mkdir()
    hold = subprocess.Popen([sys.executable, "-c", "import sys\nfrom sage_cli.locks import lock_output_dir\n"
                             "with lock_output_dir(sys.argv[1], 'train'):\n print('locked', flush=True)\n"
                             " sys.stdin.read()", str(tmp_path / "run")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert hold.stdout.readline().strip() == "locked"

        class Source:
            cache_dir = tmp_path / "run"

        class Config:
            out = tmp_path / "report"

        monkeypatch.setattr(logging.getLogger("sage_cli"), "propagate", True)
        with caplog.at_level(logging.WARNING, logger="sage_cli"):
            save_cache(Source, Config, None, {}, "fp")  # type: ignore[arg-type]
    finally:
        hold.stdin.close()
        hold.wait(timeout=30)
    assert f"{tmp_path / 'run'}: in use by another sage process; its predictions cache is not updated" in caplog.text
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == []  # no cache, no lock file left
