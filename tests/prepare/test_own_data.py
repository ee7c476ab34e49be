"""User data without splits: a flat ROOT/<class>/<image> folder or a CSV without a split column."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sage_cli import artifacts
from sage_cli.errors import SageError
from sage_cli.prepare import PrepareConfig, run
from sage_cli.prepare.stratify import SplitSpec

SIZES = {"k01": 1, "k02": 2, "k03": 3, "k07": 7, "k10": 10, "k25": 25}


def _flat(root: Path, sizes: dict[str, int] = SIZES) -> Path:
    for cls, n in sizes.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / cls / f"{i:03d}.png").touch()
    return root


def _splits_per_class(out: Path) -> dict[str, tuple[int, int, int]]:
    """class name -> (train, val, test) images."""
    manifest = artifacts.read_table(out, artifacts.MANIFEST).to_pandas()
    names = artifacts.read_table(out, artifacts.CLASSES).to_pandas()["name"].tolist()
    table = pd.crosstab(manifest["label"], manifest["split"]).reindex(columns=["train", "val", "test"], fill_value=0)
    return {names[label]: tuple(int(v) for v in row) for label, row in table.iterrows()}


def _test_rows(out: Path) -> list[str]:
    manifest = artifacts.read_table(out, artifacts.MANIFEST).to_pandas()
    held_out = manifest[manifest["split"] != "train"]
    return sorted(held_out["path"] + ":" + held_out["split"])


def test_flat_folder_fractions_give_hand_computed_counts(tmp_path: Path) -> None:
    # val 0.1, test 0.2: round(n * f) with halves up, at least 1; val gives way first to keep a train image
    result = run(PrepareConfig("folder", tmp_path / "out", root=_flat(tmp_path / "data"),
                               split=SplitSpec(val_fraction=0.1, test_fraction=0.2)))
    assert _splits_per_class(tmp_path / "out") == {
        "k01": (1, 0, 0), "k02": (1, 0, 1), "k03": (1, 1, 1), "k07": (5, 1, 1), "k10": (7, 1, 2),
        "k25": (17, 3, 5)}
    assert result.record["counts"] == {"train": 32, "val": 6, "test": 10}
    assert result.record["layout"] == "ROOT/<class>/<image>"
    assert result.record["split"] == {"seed": 0, "val_fraction": 0.1, "test_fraction": 0.2}
    assert result.record["warnings"] == [
        "2 class(es) too small for a val/test image (each keeps one for training): "
        "'k01' (1 image: no val/test), 'k02' (2 images: no val)"]


def test_flat_folder_per_class_counts(tmp_path: Path) -> None:
    run(PrepareConfig("folder", tmp_path / "out", root=_flat(tmp_path / "data"),
                      split=SplitSpec(val_per_class=2, test_per_class=3)))
    assert _splits_per_class(tmp_path / "out") == {
        "k01": (1, 0, 0), "k02": (1, 0, 1), "k03": (1, 0, 2), "k07": (2, 2, 3), "k10": (5, 2, 3),
        "k25": (20, 2, 3)}


def test_default_split_is_val_tenth_test_fifth(tmp_path: Path) -> None:
    result = run(PrepareConfig("folder", tmp_path / "out", root=_flat(tmp_path / "data")))
    assert result.record["counts"] == {"train": 32, "val": 6, "test": 10}
    assert result.record["split"] == {"seed": 0, "val_fraction": 0.1, "test_fraction": 0.2}


def test_seed_decides_the_split(tmp_path: Path) -> None:
    root = _flat(tmp_path / "data")
    run(PrepareConfig("folder", tmp_path / "a", root=root, seed=1))
    run(PrepareConfig("folder", tmp_path / "b", root=root, seed=1))
    run(PrepareConfig("folder", tmp_path / "c", root=root, seed=2))
    assert _test_rows(tmp_path / "a") == _test_rows(tmp_path / "b")
    assert _test_rows(tmp_path / "a") != _test_rows(tmp_path / "c")
    assert _splits_per_class(tmp_path / "a") == _splits_per_class(tmp_path / "c")  # same counts, other images


def test_other_fractions_are_other_inputs(tmp_path: Path) -> None:
    root, out = _flat(tmp_path / "data"), tmp_path / "out"
    run(PrepareConfig("folder", out, root=root))
    assert run(PrepareConfig("folder", out, root=root)).skipped
    with pytest.raises(SageError, match="other inputs"):
        run(PrepareConfig("folder", out, root=root, split=SplitSpec(test_fraction=0.3)))


def test_tail_warning_names_five_and_counts_the_rest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sizes = {f"t{i}": 1 for i in range(7)} | {"big": 20}
    result = run(PrepareConfig("folder", tmp_path / "out", root=_flat(tmp_path / "data", sizes)))
    assert result.record["warnings"] == [
        "7 class(es) too small for a val/test image (each keeps one for training): 't0' (1 image: no val/test), "
        "'t1' (1 image: no val/test), 't2' (1 image: no val/test), 't3' (1 image: no val/test), "
        "'t4' (1 image: no val/test) and 2 more"]
    assert result.record["warnings"][0] in caplog.text


def test_split_layout_is_kept_and_refuses_split_options(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _flat(root / "train", {"cat": 4, "dog": 2})
    _flat(root / "test", {"cat": 1})
    result = run(PrepareConfig("folder", tmp_path / "out", root=root))
    assert result.record["counts"] == {"train": 6, "val": 0, "test": 1}
    assert result.record["layout"] == "ROOT/<split>/<class>/<image>" and "split" not in result.record
    with pytest.raises(SageError, match=r"has its own splits \(ROOT/<split>/<class>/<image>\); --val-fraction"):
        run(PrepareConfig("folder", tmp_path / "out2", root=root, split=SplitSpec(val_fraction=0.2)))
    assert not (tmp_path / "out2").exists() or not any((tmp_path / "out2").iterdir())


def test_empty_flat_folder_names_both_layouts(tmp_path: Path) -> None:
    (tmp_path / "data" / "cat").mkdir(parents=True)
    with pytest.raises(SageError, match=r"no images in .*data/<class>/; the folder source expects "
                                        r"ROOT/<class>/<image> or ROOT/<split>/<class>/<image>"):
        run(PrepareConfig("folder", tmp_path / "out", root=tmp_path / "data"))


def test_csv_without_split_column_is_split(tmp_path: Path) -> None:
    root = tmp_path / "csvdata"
    lines = ["path,label"]
    for cls, n in {"ant": 10, "bee": 3, "cow": 1}.items():
        for i in range(n):
            (root / "img" / f"{cls}{i}.png").parent.mkdir(parents=True, exist_ok=True)
            (root / "img" / f"{cls}{i}.png").touch()
            lines.append(f"img/{cls}{i}.png,{cls}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    result = run(PrepareConfig("csv", tmp_path / "out", root=root))
    assert _splits_per_class(tmp_path / "out") == {"ant": (7, 1, 2), "bee": (1, 1, 1), "cow": (1, 0, 0)}
    assert result.record["layout"] == "CSV without a split column"
    assert result.record["warnings"] == [
        "1 class(es) too small for a val/test image (each keeps one for training): 'cow' (1 image: no val/test)"]
    assert set(result.record["hashes"]) == {"csv", "split"}


@pytest.mark.parametrize(("spec", "message"), [
    (dict(val_fraction=0.5, test_fraction=0.5), r"--val-fraction \+ --test-fraction must be below 1"),
    (dict(test_fraction=1.2), r"--test-fraction must be in \[0, 1\); got 1.2"),
    (dict(val_fraction=0.1, val_per_class=3), "--val-fraction and --val-per-class exclude each other"),
    (dict(test_per_class=-1), "--test-per-class must be >= 0; got -1"),
])
def test_bad_split_options_name_the_flag(spec: dict, message: str) -> None:
    with pytest.raises(SageError, match=message):
        SplitSpec(**spec)


def test_split_options_apply_to_user_data_only(tmp_path: Path) -> None:
    with pytest.raises(SageError, match="apply to folder and csv only, not synthetic"):
        PrepareConfig("synthetic", tmp_path / "out", split=SplitSpec(val_fraction=0.1))
