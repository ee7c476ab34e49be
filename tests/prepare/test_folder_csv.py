"""User datasets: an image-folder tree and a CSV of path,label[,split]."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sage_cli import artifacts
from sage_cli.errors import SageError
from sage_cli.prepare import PrepareConfig, run

from .conftest import snapshot


def _tree(root: Path, layout: dict[str, dict[str, int]]) -> Path:
    for split, classes in layout.items():
        for cls, n in classes.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (root / split / cls / f"{i:03d}.JPG").touch()
    (root / "train" / "zebra" / "notes.txt").touch()  # not an image: ignored
    return root


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    return _tree(tmp_path / "data", {"train": {"zebra": 3, "golden_retriever": 25, "cat": 120},
                                     "test": {"cat": 2, "zebra": 1}})


def test_folder_classes_follow_sorted_train_folders(folder_root: Path, tmp_path: Path) -> None:
    result = run(PrepareConfig("folder", tmp_path / "out", root=folder_root))
    classes = artifacts.read_table(tmp_path / "out", artifacts.CLASSES).to_pandas()
    assert classes["name"].tolist() == ["cat", "golden retriever", "zebra"]
    assert classes["train_count"].tolist() == [120, 25, 3]
    assert classes["group"].tolist() == ["many", "medium", "few"]
    assert result.record["counts"] == {"train": 148, "val": 0, "test": 3}
    assert (tmp_path / "out" / result.record["image_root"]).resolve() == folder_root.resolve()
    assert not Path(result.record["image_root"]).is_absolute() and result.record["warnings"] == []
    manifest = artifacts.read_table(tmp_path / "out", artifacts.MANIFEST).to_pandas()
    assert manifest[manifest["split"] == "test"][["path", "label"]].values.tolist() == [
        ["test/cat/000.JPG", 0], ["test/cat/001.JPG", 0], ["test/zebra/000.JPG", 2]]


def test_folder_change_is_other_inputs(folder_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(PrepareConfig("folder", out, root=folder_root))
    assert run(PrepareConfig("folder", out, root=folder_root)).skipped
    (folder_root / "train" / "cat" / "new.png").touch()
    with pytest.raises(SageError, match="other inputs"):
        run(PrepareConfig("folder", out, root=folder_root))


def test_folder_test_class_missing_from_train_is_named(folder_root: Path, tmp_path: Path) -> None:
    (folder_root / "val" / "unicorn").mkdir(parents=True)
    (folder_root / "val" / "unicorn" / "a.png").touch()
    with pytest.raises(SageError, match=r"val/unicorn: class folder has no train folder"):
        run(PrepareConfig("folder", tmp_path / "out", root=folder_root))


def test_folder_classnames_override(folder_root: Path, tmp_path: Path) -> None:
    names = tmp_path / "names.txt"
    names.write_text("house cat\ngolden retriever dog\nplains zebra\n")
    run(PrepareConfig("folder", tmp_path / "out", root=folder_root, classnames=names))
    classes = artifacts.read_table(tmp_path / "out", artifacts.CLASSES).to_pandas()
    assert classes["name"].tolist() == ["house cat", "golden retriever dog", "plains zebra"]
    names.write_text("one\ntwo\n")
    with pytest.raises(SageError, match=r"names.txt: lists 2 class names; the dataset has 3 classes"):
        run(PrepareConfig("folder", tmp_path / "out2", root=folder_root, classnames=names))


def _csv(tmp_path: Path, text: str, images: list[str]) -> Path:
    root = tmp_path / "csvdata"
    for rel in images:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).touch()
    (root / "labels.csv").write_text(text)
    return root


def test_csv_with_class_names_and_splits(tmp_path: Path) -> None:
    images = ["img/a.png", "img/b.png", "img/c.png", "img/d.png"]
    root = _csv(tmp_path, "path,label,split\nimg/a.png,dog,train\nimg/b.png,cat,train\n"
                          "img/c.png,dog,train\nimg/d.png,cat,test\n", images)
    result = run(PrepareConfig("csv", tmp_path / "out", root=root))  # the folder holding the CSV
    classes = artifacts.read_table(tmp_path / "out", artifacts.CLASSES).to_pandas()
    assert classes["name"].tolist() == ["cat", "dog"] and classes["train_count"].tolist() == [1, 2]
    manifest = artifacts.read_table(tmp_path / "out", artifacts.MANIFEST).to_pandas()
    assert manifest["label"].tolist() == [1, 0, 1, 0] and manifest["split"].tolist()[-1] == "test"
    assert (tmp_path / "out" / result.record["image_root"]).resolve() == root.resolve()
    assert not Path(result.record["image_root"]).is_absolute()
    assert set(result.record["hashes"]) == {"csv"}


def test_csv_with_integer_labels_and_classnames(tmp_path: Path) -> None:
    root = _csv(tmp_path, "path,label\nimg/a.png,1\nimg/b.png,0\n", ["img/a.png", "img/b.png"])
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\n")
    run(PrepareConfig("csv", tmp_path / "out", root=root / "labels.csv", classnames=names))
    classes = artifacts.read_table(tmp_path / "out", artifacts.CLASSES).to_pandas()
    assert classes["name"].tolist() == ["cat", "dog"]
    assert artifacts.read_table(tmp_path / "out", artifacts.MANIFEST).column("split").to_pylist() == ["train"] * 2


@pytest.mark.parametrize(("text", "message"), [
    ("path,label,split\nimg/a.png,0,train\nimg/b.png,0,dev\n", r"labels.csv:3: split must be train, val or test \(got 'dev'\)"),
    ("path,label,split\nimg/a.png,0,train\nimg/b.png,5,test\n", r"labels.csv:3: label is outside 0..0 \(got '5'\)"),
    ("path,label\nimg/a.png,1\nimg/b.png,-1\n", r"labels.csv:3: label is outside 0..1 \(got '-1'\)"),
    ("path,label,split\nimg/a.png,cat,train\nimg/b.png,dog,test\n", r"labels.csv:3: label is not a class name of any train row \(got 'dog'\)"),
    ("file,label\nimg/a.png,0\n", r"labels.csv: needs columns path,label\[,split\]; missing path"),
    # Issue 19: 2000000000 built 2e9 class names (4.7 GB, then MemoryError); 20 digits overflowed int64.
    ("path,label\nimg/a.png,0\nimg/b.png,2000000000\n",
     r"labels.csv:3: label 2000000000 skips class id 1, which has no train row; integer labels must number the "
     r"classes 0..C-1, each with train rows$"),
    ("path,label\nimg/a.png,0\nimg/b.png,99999999999999999999\n",
     r"labels.csv:3: label is too large to be a class id \(got '99999999999999999999'\)$"),
])
def test_csv_errors_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    root = _csv(tmp_path, text, ["img/a.png", "img/b.png"])
    out = tmp_path / "out"
    run(PrepareConfig("synthetic", out))
    before = snapshot(out)
    with pytest.raises(SageError, match=message):
        run(PrepareConfig("csv", out, root=root, force=True))
    assert snapshot(out) == before


def test_csv_integer_labels_number_the_classes_from_the_train_rows(tmp_path: Path) -> None:
    root = _csv(tmp_path, "path,label,split\nimg/a.png,1,train\nimg/b.png,0,train\nimg/c.png,1,test\n",
                ["img/a.png", "img/b.png", "img/c.png"])
    run(PrepareConfig("csv", tmp_path / "out", root=root))
    classes = artifacts.read_table(tmp_path / "out", artifacts.CLASSES).to_pandas()
    assert classes["name"].tolist() == ["class 0", "class 1"] and classes["train_count"].tolist() == [1, 1]


def test_non_utf8_image_and_class_folder_names_are_one_line(folder_root: Path, tmp_path: Path) -> None:
    """Names os.fsdecode turns into surrogates reached pyarrow: a UnicodeEncodeError traceback."""
    from typer.testing import CliRunner

    from sage_cli.cli import app

    image = folder_root / "train" / "cat" / os.fsdecode(b"\xfe.jpg")
    image.touch()
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["prepare", "folder", "--root", str(folder_root), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert result.output.strip() == (f"error: {folder_root}/train/cat/\\xfe.jpg: the name is not valid UTF-8; "
                                     "rename it (manifest paths and class names are UTF-8 text)")
    assert not out.exists()
    image.unlink()
    (folder_root / "train" / os.fsdecode(b"caf\xe9")).mkdir()  # a Latin-1 folder name
    with pytest.raises(SageError, match=r"train/caf\udce9: the name is not valid UTF-8"):
        run(PrepareConfig("folder", out, root=folder_root))
    assert not out.exists()
