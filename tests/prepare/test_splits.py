"""ImageNet-LT, Places-LT and iNaturalist 2018 from split files: parsing, names, recipe warnings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sage_cli import artifacts
from sage_cli.errors import SageError
from sage_cli.prepare import PrepareConfig, run
from sage_cli.prepare.names import make_unique, read_names_file
from sage_cli.prepare.recipes import RECIPE_DIR, load_recipe
from sage_cli.prepare.splits import parse_split_file

from .conftest import TRAIN_COUNTS, WNIDS, snapshot


def _classes(out: Path) -> list[dict]:
    return artifacts.read_table(out, artifacts.CLASSES).to_pandas().to_dict("records")


def test_imagenet_lt_counts_names_groups_and_paths(imagenet_root: Path, tmp_path: Path) -> None:
    result = run(PrepareConfig("imagenet-lt", tmp_path / "out", root=imagenet_root))
    classes = _classes(tmp_path / "out")
    assert [c["name"] for c in classes] == ["tench", "goldfish", "great white shark", "cock", "hen"]
    assert [c["train_count"] for c in classes] == TRAIN_COUNTS
    assert [c["group"] for c in classes] == ["many", "medium", "medium", "few", "few"]
    assert result.record["counts"] == {"train": 218, "val": 10, "test": 20}
    assert (tmp_path / "out" / result.record["image_root"]).resolve() == imagenet_root.resolve()
    assert not Path(result.record["image_root"]).is_absolute()  # relative to the prepared dir
    assert set(result.record["hashes"]) == {"ImageNet_LT_train.txt", "ImageNet_LT_val.txt", "ImageNet_LT_test.txt",
                                            "classnames:LOC_synset_mapping.txt"}
    assert result.record["hashes"]["ImageNet_LT_train.txt"] == artifacts.sha256_file(
        imagenet_root / "ImageNet_LT_train.txt")
    manifest = artifacts.read_table(tmp_path / "out", artifacts.MANIFEST).to_pandas()
    assert manifest["path"].iloc[0] == f"train/{WNIDS[0]}/img_0_0.jpg"
    assert manifest["sample_id"].tolist() == list(range(248))
    assert (imagenet_root / manifest["path"].iloc[-1]).is_file()


def test_truncated_imagenet_split_warns_naming_the_figure(imagenet_root: Path, tmp_path: Path) -> None:
    result = run(PrepareConfig("imagenet-lt", tmp_path / "out", root=imagenet_root))
    warnings = result.record["warnings"]
    assert "ImageNet-LT: train images is 218, the published split has 115,846 " \
           "(a different or truncated split file?)" in warnings
    assert any(w.startswith("ImageNet-LT: largest class (train) is 120, the published split has 1,280") for w in warnings)
    assert any(w.startswith("ImageNet-LT: classes is 5, the published split has 1,000") for w in warnings)


def test_matching_statistics_give_no_warning(tmp_path: Path) -> None:
    from sage_cli.prepare.recipes import compare_statistics, expected_statistics

    expected = expected_statistics(load_recipe("places-lt"))
    assert expected == {"classes": 365, "train": 62500, "val": 7300, "test": 36500, "max_count": 4980,
                        "min_count": 5}
    assert compare_statistics("Places-LT", dict(expected), expected) == []
    assert compare_statistics("Places-LT", {**expected, "val": 7299}, expected) == [
        "Places-LT: val images is 7,299, the published split has 7,300 (a different or truncated split file?)"]


def test_recipes_load_through_the_package_symlink() -> None:
    link = Path(__file__).resolve().parents[2] / "sage_cli" / "data_manifests"
    assert link.is_symlink() and Path(link.readlink()) == Path("../data_manifests")
    assert RECIPE_DIR.resolve() == (Path(__file__).resolve().parents[2] / "data_manifests")
    stats = {name: load_recipe(name)["statistics"] for name in ("imagenet-lt", "inat2018")}
    assert stats["imagenet-lt"]["train"] == 115846 and stats["inat2018"]["classes"] == 8142
    assert load_recipe("cifar100-lt")["by_imbalance_ratio"][50]["train"] == 12608


def test_without_mapping_names_are_wnids(imagenet_root: Path, tmp_path: Path) -> None:
    (imagenet_root / "LOC_synset_mapping.txt").unlink()
    run(PrepareConfig("imagenet-lt", tmp_path / "out", root=imagenet_root))
    assert [c["name"] for c in _classes(tmp_path / "out")] == WNIDS


@pytest.mark.parametrize("text", [
    "".join(f"{w} name {i}, other\n" for i, w in reversed(list(enumerate(WNIDS)))),  # by wnid, any order
    "".join(f"name {i}\n" for i in range(5)),  # one name per line, label order
])
def test_classnames_file_formats(imagenet_root: Path, tmp_path: Path, text: str) -> None:
    names = tmp_path / "names.txt"
    names.write_text(text)
    result = run(PrepareConfig("imagenet-lt", tmp_path / "out", root=imagenet_root, classnames=names))
    assert [c["name"] for c in _classes(tmp_path / "out")] == [f"name {i}" for i in range(5)]
    assert "classnames:names.txt" in result.record["hashes"]


def test_places365_categories_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "categories_places365.txt"
    path.write_text("/a/airfield 0\n/a/apartment_building/outdoor 1\n")
    assert read_names_file(path) == (["airfield", "apartment building outdoor"], {})


def test_lift_classnames_files_are_read_as_lift_reads_them(tmp_path: Path) -> None:
    places = tmp_path / "places_classnames.txt"  # LIFT's datasets/Places_LT/classnames.txt: folder, then name
    places.write_text("airfield airfield\napartment_building-outdoor apartment_building-outdoor\n")
    assert read_names_file(places) == (["airfield", "apartment building-outdoor"], {})
    imagenet = tmp_path / "imagenet_classnames.txt"  # LIFT's datasets/ImageNet_LT/classnames.txt
    imagenet.write_text("n01440764 tench\nn02012849 crane bird\nn03126707 construction crane\n")
    assert read_names_file(imagenet) == (["tench", "crane bird", "construction crane"],
                                         {"n01440764": "tench", "n02012849": "crane bird",
                                          "n03126707": "construction crane"})
    plain = tmp_path / "plain.txt"  # one name per line: two words that differ stay one name
    plain.write_text("great shark\nhen hen\n")
    assert read_names_file(plain) == (["great shark", "hen hen"], {})


def test_duplicate_names_are_made_distinct_with_the_wnid(imagenet_root: Path, tmp_path: Path) -> None:
    mapping = "".join(f"{w} {n}\n" for w, n in zip(WNIDS, ["crane", "missile", "crane", "missile", "hen"]))
    (imagenet_root / "LOC_synset_mapping.txt").write_text(mapping)
    result = run(PrepareConfig("imagenet-lt", tmp_path / "out", root=imagenet_root))
    assert [c["name"] for c in _classes(tmp_path / "out")] == [
        "crane", "missile", f"crane ({WNIDS[2]})", f"missile ({WNIDS[3]})", "hen"]
    assert any("2 duplicate class name(s) made distinct" in w for w in result.record["warnings"])


def test_duplicates_without_folder_ids_get_numbers() -> None:
    assert make_unique(["a", "b", "a", "a"])[0] == ["a", "b", "a (2)", "a (3)"]
    assert make_unique(["a", "a (2)", "a"])[0] == ["a", "a (2)", "a (2)'"]


def test_places_names_come_from_folders(places_root: Path, tmp_path: Path) -> None:
    result = run(PrepareConfig("places-lt", tmp_path / "out", root=places_root))
    assert [c["name"] for c in _classes(tmp_path / "out")] == ["airfield", "apartment building outdoor",
                                                                "bakery shop"]
    assert result.record["counts"] == {"train": 46, "val": 3, "test": 6}
    assert [c["group"] for c in _classes(tmp_path / "out")] == ["medium", "few", "few"]


def _labels_by_folder(out: Path) -> dict[tuple[str, str], set[int]]:
    """(split, category folder) -> the labels its images got in the manifest."""
    manifest = artifacts.read_table(out, artifacts.MANIFEST).to_pandas()
    found: dict[tuple[str, str], set[int]] = {}
    for path, label, split in zip(manifest["path"], manifest["label"], manifest["split"]):
        found.setdefault((split, path.split("/")[2]), set()).add(int(label))
    return found


def test_inat_labels_follow_lifts_sorted_species_names(inat_root: Path, tmp_path: Path) -> None:
    # categories.json: id 0 "Quercus robur", 1 "Turdus merula", 2 "Apis mellifera"; train 40 / 8 / 2 images.
    # LIFT's label: the index in the sorted names -> Apis 0 (id 2), Quercus 1 (id 0), Turdus 2 (id 1).
    result = run(PrepareConfig("inat2018", tmp_path / "out", root=inat_root))
    classes = _classes(tmp_path / "out")
    assert [c["name"] for c in classes] == ["Apis mellifera", "Quercus robur", "Turdus merula"]
    assert [c["train_count"] for c in classes] == [2, 40, 8]
    assert _labels_by_folder(tmp_path / "out") == {("train", "0"): {1}, ("train", "1"): {2}, ("train", "2"): {0},
                                                   ("test", "0"): {1}, ("test", "1"): {2}, ("test", "2"): {0}}
    assert result.record["counts"] == {"train": 50, "val": 0, "test": 9}
    assert result.record["options"]["label_order"] == "species"


def test_inat_category_id_order_keeps_the_ids_as_written(inat_root: Path, tmp_path: Path) -> None:
    result = run(PrepareConfig("inat2018", tmp_path / "out", root=inat_root, label_order="category-id"))
    assert [c["name"] for c in _classes(tmp_path / "out")] == ["Quercus robur", "Turdus merula", "Apis mellifera"]
    assert _labels_by_folder(tmp_path / "out")[("train", "2")] == {2}
    assert result.record["counts"] == {"train": 50, "val": 0, "test": 9}
    # the same root in the other order is another preparation: refused in the same --out without --force
    with pytest.raises(SageError, match="--force"):
        run(PrepareConfig("inat2018", tmp_path / "out", root=inat_root))
    (inat_root / "categories.json").unlink()
    run(PrepareConfig("inat2018", tmp_path / "out2", root=inat_root, label_order="category-id"))
    assert [c["name"] for c in _classes(tmp_path / "out2")] == ["Plantae 0", "Aves 1", "Insecta 2"]


def test_inat_species_order_needs_distinct_names_from_a_file(inat_root: Path, tmp_path: Path) -> None:
    (inat_root / "categories.json").write_text(json.dumps([{"id": 0, "name": "Quercus robur"},
                                                           {"id": 1, "name": "Quercus robur"},
                                                           {"id": 2, "name": "Apis mellifera"}]))
    with pytest.raises(SageError, match=r"categories.json: 1 class name\(s\) name two categories \('Quercus robur'"):
        run(PrepareConfig("inat2018", tmp_path / "out", root=inat_root))
    (inat_root / "categories.json").unlink()
    with pytest.raises(SageError, match="needs categories.json in --root .* --label-order category-id"):
        run(PrepareConfig("inat2018", tmp_path / "out", root=inat_root))
    assert not (tmp_path / "out").exists()
    with pytest.raises(SageError, match="--label-order applies to inat2018 only"):
        PrepareConfig("places-lt", tmp_path / "out", root=inat_root, label_order="species")


@pytest.mark.parametrize(("line", "message"), [
    ("train/n01440764/x.jpg 0 extra", r"ImageNet_LT_train.txt:3: expected '<path> <label>' \(2 columns\), got 3"),
    ("train/n01440764/x.jpg", r"ImageNet_LT_train.txt:3: expected '<path> <label>' \(2 columns\), got 1"),
    ("train/n01440764/x.jpg zero", r"ImageNet_LT_train.txt:3: label 'zero' is not an integer"),
    ("train/n01440764/x.jpg 1.5", r"ImageNet_LT_train.txt:3: label '1.5' is not an integer"),
    ("train/n01440764/x.jpg 7", r"ImageNet_LT_train.txt:3: label 7 is outside 0..4 \(5 classes\)"),
    ("train/n01440764/x.jpg -1", r"ImageNet_LT_train.txt:3: label -1 is outside 0..4"),
])
def test_malformed_split_line_names_file_and_line(imagenet_root: Path, tmp_path: Path, line: str,
                                                  message: str) -> None:
    out = tmp_path / "out"
    run(PrepareConfig("imagenet-lt", out, root=imagenet_root))
    before = snapshot(out)
    train = imagenet_root / "ImageNet_LT_train.txt"
    lines = train.read_text().splitlines()
    train.write_text("\n".join([lines[0], "", line, *lines[1:]]) + "\n")  # line 2 blank, line 3 bad
    with pytest.raises(SageError, match=message):
        run(PrepareConfig("imagenet-lt", out, root=imagenet_root, force=True))
    assert snapshot(out) == before


def test_vectorised_parse_matches_the_line_scan(imagenet_root: Path) -> None:
    from sage_cli.prepare.splits import _scan_split_file

    path = imagenet_root / "ImageNet_LT_train.txt"
    path.write_text("\n" + path.read_text().replace("\n", "\r\n", 3))
    fast, slow = parse_split_file(path), _scan_split_file(path)
    assert fast.to_dict("list") == slow.to_dict("list")
    assert fast["line"].iloc[0] == 2 and len(fast) == 218


def test_class_without_training_image_is_named(imagenet_root: Path, tmp_path: Path) -> None:
    train = imagenet_root / "ImageNet_LT_train.txt"
    train.write_text("".join(line + "\n" for line in train.read_text().splitlines() if not line.endswith(" 2")))
    with pytest.raises(SageError, match=r"class 2 \('great white shark'\) has no training image"):
        run(PrepareConfig("imagenet-lt", tmp_path / "out", root=imagenet_root))
    assert not (tmp_path / "out").exists()


def test_missing_split_file_is_named(imagenet_root: Path, tmp_path: Path) -> None:
    (imagenet_root / "ImageNet_LT_val.txt").unlink()
    with pytest.raises(SageError, match=r"ImageNet_LT_val.txt: missing; --root must hold the imagenet-lt split"):
        run(PrepareConfig("imagenet-lt", tmp_path / "out", root=imagenet_root))


def test_bad_categories_json_is_one_line_error(inat_root: Path, tmp_path: Path) -> None:
    (inat_root / "categories.json").write_text(json.dumps([{"id": 0, "name": "a"}, {"id": 5, "name": "b"}]))
    with pytest.raises(SageError, match=r"categories.json: category ids must run 0..1"):
        run(PrepareConfig("inat2018", tmp_path / "out", root=inat_root))


def test_classnames_flag_wins_over_categories_json(inat_root: Path, tmp_path: Path) -> None:
    names = tmp_path / "names.txt"
    names.write_text("oak\nblackbird\nhoney bee\n")
    result = run(PrepareConfig("inat2018", tmp_path / "out", root=inat_root, classnames=names))
    assert [c["name"] for c in _classes(tmp_path / "out")] == ["blackbird", "honey bee", "oak"]  # sorted (LIFT's)
    assert set(result.record["hashes"]) == {"iNaturalist18_train.txt", "iNaturalist18_val.txt",
                                            "classnames:names.txt"}
