"""Image checks, --skip-bad and dropped.csv, re-runs and refusals of a changed split file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sage_cli import artifacts
from sage_cli.errors import SageError
from sage_cli.prepare import PrepareConfig, run
from sage_cli.prepare.check import find_bad_images

from .conftest import WNIDS, png_bytes, snapshot


def _remove(root: Path, *rels: str) -> None:
    for rel in rels:
        (root / rel).unlink()


def test_missing_images_are_counted_and_named(imagenet_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(PrepareConfig("imagenet-lt", out, root=imagenet_root))
    before = snapshot(out)
    _remove(imagenet_root, f"train/{WNIDS[0]}/img_0_5.jpg", f"test/{WNIDS[4]}/img_4_1.jpg")
    with pytest.raises(SageError, match=rf"2 listed image\(s\) under {imagenet_root} are bad \(2 missing\), "
                                        rf"e.g. train/{WNIDS[0]}/img_0_5.jpg, test/{WNIDS[4]}/img_4_1.jpg; "
                                        r"fix them or pass --skip-bad"):
        run(PrepareConfig("imagenet-lt", out, root=imagenet_root, force=True))
    assert snapshot(out) == before


def test_skip_bad_drops_and_lists_them(imagenet_root: Path, tmp_path: Path) -> None:
    _remove(imagenet_root, f"train/{WNIDS[0]}/img_0_5.jpg", f"val/{WNIDS[1]}/img_1_0.jpg")
    result = run(PrepareConfig("imagenet-lt", tmp_path / "out", root=imagenet_root, skip_bad=True))
    dropped = pd.read_csv(tmp_path / "out" / "dropped.csv")
    assert dropped.to_dict("list") == {"path": [f"train/{WNIDS[0]}/img_0_5.jpg", f"val/{WNIDS[1]}/img_1_0.jpg"],
                                       "split": ["train", "val"], "reason": ["missing", "missing"]}
    assert result.record["dropped"] == 2
    assert result.record["counts"] == {"train": 217, "val": 9, "test": 20}
    manifest = artifacts.read_table(tmp_path / "out", artifacts.MANIFEST).to_pandas()
    assert f"train/{WNIDS[0]}/img_0_5.jpg" not in set(manifest["path"])
    assert 5 not in set(manifest["sample_id"]) and manifest["sample_id"].iloc[5] == 6  # ids kept, not renumbered
    classes = artifacts.read_table(tmp_path / "out", artifacts.CLASSES).to_pandas()
    assert classes["train_count"].iloc[0] == 119


def test_skip_bad_that_empties_a_class_names_it(imagenet_root: Path, tmp_path: Path) -> None:
    _remove(imagenet_root, *(f"train/{WNIDS[4]}/img_4_{i}.jpg" for i in range(3)))
    with pytest.raises(SageError, match=r"class 4 \('hen'\) has no training image"):
        run(PrepareConfig("imagenet-lt", tmp_path / "out", root=imagenet_root, skip_bad=True))


def test_verify_decode_catches_a_corrupt_image(imagenet_root: Path, tmp_path: Path) -> None:
    manifest_paths = [line.split()[0] for name in ("train", "val", "test")
                      for line in (imagenet_root / f"ImageNet_LT_{name}.txt").read_text().splitlines()]
    for rel in manifest_paths:
        (imagenet_root / rel).write_bytes(png_bytes())
    corrupt = f"test/{WNIDS[2]}/img_2_3.jpg"
    (imagenet_root / corrupt).write_bytes(png_bytes()[:30])
    run(PrepareConfig("imagenet-lt", tmp_path / "fast", root=imagenet_root))  # exists: passes
    seen = []
    with pytest.raises(SageError, match=rf"1 listed image\(s\) .* are bad \(1 undecodable\), e.g. {corrupt};"):
        run(PrepareConfig("imagenet-lt", tmp_path / "out", root=imagenet_root, verify="decode"),
            progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (248, 248)
    assert not (tmp_path / "out").exists()
    run(PrepareConfig("imagenet-lt", tmp_path / "out", root=imagenet_root, verify="decode", skip_bad=True))
    dropped = pd.read_csv(tmp_path / "out" / "dropped.csv")
    assert dropped["path"].tolist() == [corrupt] and dropped["reason"].iloc[0].startswith("undecodable (")


def test_find_bad_images_in_parallel_chunks(tmp_path: Path) -> None:
    for i in range(0, 10000, 3):
        (tmp_path / f"{i}.jpg").touch()
    reasons = find_bad_images([f"{i}.jpg" for i in range(10000)], tmp_path, workers=3)
    assert [i for i, r in enumerate(reasons) if r is None] == list(range(0, 10000, 3))
    assert set(reasons) == {None, "missing"}


def test_rerun_is_a_no_op(imagenet_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(PrepareConfig("imagenet-lt", out, root=imagenet_root))
    stamp = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    result = run(PrepareConfig("imagenet-lt", out, root=imagenet_root))
    assert result.skipped and {p: p.stat().st_mtime_ns for p in out.iterdir()} == stamp


def test_changed_split_file_is_refused_without_force(imagenet_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run(PrepareConfig("imagenet-lt", out, root=imagenet_root))
    before = snapshot(out)
    test = imagenet_root / "ImageNet_LT_test.txt"
    test.write_text("".join(test.read_text().splitlines(keepends=True)[:-1]))  # one line fewer
    with pytest.raises(SageError, match="holds a prepare result of other inputs; choose another --out or pass --force"):
        run(PrepareConfig("imagenet-lt", out, root=imagenet_root))
    assert snapshot(out) == before
    second = run(PrepareConfig("imagenet-lt", out, root=imagenet_root, force=True))
    assert second.record["counts"]["test"] == 19 and second.record["fingerprint"] != first.record["fingerprint"]


def test_option_errors_name_the_flag(imagenet_root: Path, tmp_path: Path) -> None:
    with pytest.raises(SageError, match="--root is required for imagenet-lt"):
        PrepareConfig("imagenet-lt", tmp_path / "out")
    with pytest.raises(SageError, match="--verify must be one of exists, decode; got 'all'"):
        PrepareConfig("imagenet-lt", tmp_path / "out", root=imagenet_root, verify="all")
    with pytest.raises(SageError, match="--groups-from applies to cifar100-lt only"):
        PrepareConfig("imagenet-lt", tmp_path / "out", root=imagenet_root, groups_from="own")
    with pytest.raises(SageError, match="--imbalance-ratio applies to cifar100-lt"):
        PrepareConfig("imagenet-lt", tmp_path / "out", root=imagenet_root, imbalance_ratio=10)
    with pytest.raises(SageError, match="--classnames .*nope.txt is not a file"):
        PrepareConfig("imagenet-lt", tmp_path / "out", root=imagenet_root, classnames=tmp_path / "nope.txt")
    with pytest.raises(SageError, match="--groups-from applies to cifar100-lt only"):
        PrepareConfig("synthetic", tmp_path / "out", groups_from="own")
    with pytest.raises(SageError, match="--classnames does not apply to cifar100-lt"):
        PrepareConfig("cifar100-lt", tmp_path / "out", root=imagenet_root, classnames=tmp_path / "x.txt")
    with pytest.raises(SageError, match="--root .*missing does not exist"):
        PrepareConfig("places-lt", tmp_path / "out", root=tmp_path / "missing")
