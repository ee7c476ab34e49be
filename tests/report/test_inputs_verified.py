"""`sage report` verifies every input of a run against its train.json, and runs are portable: a run
directory copied with its prepared dataset and text cache reports the same numbers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sage_cli import artifacts
from sage_cli.cli import app
from sage_cli.errors import SageError
from sage_cli.report import ReportConfig, run

from .conftest import make_prepared, make_text_cache

runner = CliRunner()


def train(prepared: Path, text: Path, out: Path, seed: int = 0) -> Path:
    result = runner.invoke(app, ["train", "--prepared", str(prepared), "--text-cache", str(text), "--method",
                                 "linear", "--out", str(out), "--max-steps", "2", "--batch-size", "4",
                                 "--device", "cpu", "--seed", str(seed), "--num-workers", "0"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """work/prepared, work/text, work/run (linear, 2 steps) and work/other (seed 1, same inputs)."""
    root = tmp_path_factory.mktemp("verified") / "work"
    prepared = make_prepared(root / "prepared")
    text = make_text_cache(prepared, root / "text")
    train(prepared, text, root / "run")
    train(prepared, text, root / "other", seed=1)
    return root


@pytest.fixture
def copy(work: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(work, tmp_path / "work", symlinks=True))


def report(work: Path, out: Path, **options) -> dict:
    return run(ReportConfig(out=out, runs=(work / "run",), device="cpu", num_workers=0, **options)).report


def metrics(report_record: dict) -> list[dict]:
    return [r["metrics"] for r in report_record["runs"]]


def test_a_copied_run_with_its_inputs_reports_identical_numbers(work: Path, tmp_path: Path) -> None:
    original = report(work, tmp_path / "a")
    moved = Path(shutil.copytree(work, tmp_path / "moved", symlinks=True))
    for name in ("predictions.parquet", "predictions.json"):
        (moved / "run" / name).unlink()  # evaluated again from the moved files, not from the cache
    record = artifacts.read_record(moved / "run", artifacts.TRAIN_RECORD)
    assert record["inputs"]["prepared"]["path"] == "../prepared"
    assert record["inputs"]["text_cache"]["path"] == "../text"
    assert artifacts.read_record(moved / "prepared", artifacts.PREPARE_RECORD)["image_root"] == "images"
    hidden = [(work / name, work.parent / f"hidden-{name}") for name in ("prepared", "text")]
    for path, aside in hidden:  # the originals are out of reach: only the moved copies can be read
        path.rename(aside)
    try:
        result = run(ReportConfig(out=tmp_path / "b", runs=(moved / "run",), device="cpu", num_workers=0))
    finally:
        for path, aside in hidden:
            aside.rename(path)
    assert result.evaluated == ("run",)
    assert metrics(result.report) == metrics(original)
    assert result.report["runs"][0]["identity"] == original["runs"][0]["identity"]


def test_moved_inputs_are_found_by_override_and_by_hash(copy: Path, tmp_path: Path) -> None:
    original = report(copy, tmp_path / "a", force=True)
    stash = tmp_path / "stash"
    stash.mkdir()
    shutil.move(copy / "prepared", stash / "p")
    shutil.move(copy / "text", stash / "t")
    with pytest.raises(SageError, match=r"its text cache \(fingerprint \w+\) is not where train.json says nor "
                                        r"beside the run; pass --text-cache DIR"):
        report(copy, tmp_path / "b")
    (copy / "run" / "predictions.json").unlink()
    out = report(copy, tmp_path / "c", prepared=stash / "p", text_cache=stash / "t")
    assert metrics(out) == metrics(original)
    shutil.move(stash / "p", copy / "renamed-prepared")  # beside the run under another name: found by hash
    shutil.move(stash / "t", copy / "renamed-text")
    (copy / "run" / "predictions.json").unlink()
    assert metrics(report(copy, tmp_path / "d")) == metrics(original)


def test_report_refuses_a_reprepared_dataset(copy: Path, tmp_path: Path) -> None:
    shutil.rmtree(copy / "prepared")
    make_prepared(copy / "prepared", seed=1)  # same layout, other images: another fingerprint
    with pytest.raises(SageError, match=rf"^{copy / 'prepared' / 'prepare.json'}: fingerprint \w+ is not the \w+ "
                                        rf"{copy / 'run' / 'train.json'} was trained on"):
        report(copy, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_report_refuses_a_swapped_class_embeddings_table(copy: Path, tmp_path: Path) -> None:
    other = make_text_cache(make_prepared(tmp_path / "p2", names=("ant", "bee", "cow", "eel")), tmp_path / "t2")
    shutil.copy(other / "class_embeddings.parquet", copy / "text" / "class_embeddings.parquet")
    with pytest.raises(SageError, match=rf"^{copy / 'text' / 'class_embeddings.parquet'}: content differs"):
        report(copy, tmp_path / "out")


def test_report_refuses_a_re_encoded_text_cache(copy: Path, tmp_path: Path) -> None:
    shutil.rmtree(copy / "text")
    from sage_cli.encode_text import EncodeTextConfig
    from sage_cli.encode_text import run as encode

    encode(EncodeTextConfig(prepared=copy / "prepared", out=copy / "text", model="sage-tiny", pretrained="none",
                            templates="ensemble", device="cpu"))
    with pytest.raises(SageError, match=rf"^{copy / 'text' / 'encode.json'}: fingerprint \w+ is not the"):
        report(copy, tmp_path / "out")


def test_report_refuses_a_foreign_or_flipped_adapter(copy: Path, tmp_path: Path) -> None:
    adapter = copy / "run" / "adapter.safetensors"
    foreign = copy / "other" / "adapter.safetensors"
    with pytest.raises(SageError, match=rf"^{foreign}: weights of another run \(fingerprint \w+, "
                                        rf"{copy / 'run' / 'train.json'} has \w+\)"):
        report(copy, tmp_path / "out", checkpoint=foreign)
    shutil.copy(foreign, adapter)
    with pytest.raises(SageError, match=rf"^{adapter}: content differs from the sha256 recorded in"):
        report(copy, tmp_path / "out")
    shutil.copy(copy / "run" / "checkpoints" / "step-00000002" / "adapter.safetensors", adapter)
    data = bytearray(adapter.read_bytes())
    data[-3] ^= 0x01  # in a tensor: the file still parses
    adapter.write_bytes(bytes(data))
    with pytest.raises(SageError, match=rf"^{adapter}: content differs from the sha256 recorded in"):
        report(copy, tmp_path / "out")


def test_report_refuses_weights_stripped_of_their_metadata(copy: Path, tmp_path: Path) -> None:
    # red team: another run's weights without metadata passed --checkpoint as this run's own
    from safetensors.torch import load_file, save_file

    stripped = tmp_path / "stripped.safetensors"
    save_file(load_file(str(copy / "other" / "adapter.safetensors")), str(stripped))
    result = runner.invoke(app, ["report", str(copy / "run"), "--checkpoint", str(stripped), "--out",
                                 str(tmp_path / "out"), "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 1, result.output
    assert result.output.replace("\n", "") == (
        f"error: {stripped}: its metadata name no run (no fingerprint), so they cannot be shown to be weights of "
        f"{copy / 'run'}; pass that run's adapter.safetensors or one of its checkpoints")
    renamed = tmp_path / "other.bin"  # not named .safetensors: checked all the same
    shutil.copy(copy / "other" / "adapter.safetensors", renamed)
    with pytest.raises(SageError, match=rf"^{renamed}: weights of another run"):
        report(copy, tmp_path / "out", checkpoint=renamed)
    assert not (tmp_path / "out").exists()
    own = report(copy, tmp_path / "own", checkpoint=copy / "run" / "checkpoints" / "step-00000002" / "adapter.safetensors")
    assert metrics(own) == metrics(report(copy, tmp_path / "final"))


def test_report_refuses_an_edited_classes_table(copy: Path, tmp_path: Path) -> None:
    classes = artifacts.read_table(copy / "prepared", artifacts.CLASSES).to_pandas()
    classes.loc[[1, 2], "name"] = classes.loc[[2, 1], "name"].to_numpy()  # two names swapped
    artifacts.write_table(copy / "prepared", artifacts.CLASSES, classes)
    with pytest.raises(SageError, match=rf"^{copy / 'prepared' / 'classes.parquet'}: content differs"):
        report(copy, tmp_path / "out")
    # even with prepare.json re-sealed over the edit, the run's own record refuses it
    record = artifacts.read_record(copy / "prepared", artifacts.PREPARE_RECORD, verify=False)
    artifacts.write_record(copy / "prepared", artifacts.PREPARE_RECORD,
                           artifacts.seal_record(copy / "prepared", record, ["manifest.parquet", "classes.parquet"]))
    with pytest.raises(SageError, match=rf"^{copy / 'prepared' / 'classes.parquet'}: content differs from the sha256 "
                                        rf"in {copy / 'run' / 'train.json'}"):
        report(copy, tmp_path / "out")


def test_zero_shot_refuses_a_swapped_class_embeddings_table(copy: Path, tmp_path: Path) -> None:
    other = make_text_cache(make_prepared(tmp_path / "p2", names=("ant", "bee", "cow", "eel")), tmp_path / "t2")
    shutil.copy(other / "class_embeddings.parquet", copy / "text" / "class_embeddings.parquet")
    with pytest.raises(SageError, match=rf"^{copy / 'text' / 'class_embeddings.parquet'}: content differs"):
        run(ReportConfig(out=tmp_path / "out", zero_shot=copy / "prepared", text_cache=copy / "text", device="cpu"))
