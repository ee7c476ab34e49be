"""CIFAR-100-LT: LDAM's counts and chosen images, IR-100 groups, PNGs, safe unpickling."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sage_cli import artifacts
from sage_cli.errors import SageError
from sage_cli.prepare import PrepareConfig, compute_class_table, run
from sage_cli.prepare.cifar import compute_counts, load_pickle, select_indices

from .conftest import snapshot, write_cifar

# Hand-computed: class i is "many" while 500 * IR^(-i/99) >= 101, i.e. i <= 99 * ln(500/101) / ln(IR),
# and "few" once 500 * IR^(-i/99) < 20, i.e. i > 99 * ln(25) / ln(IR).
#   IR 100: many i <= 34.4 (35), few i > 69.3 (30)  -> 35/35/30
#   IR  50: many i <= 40.5 (41), few i > 81.5 (18)  -> 41/41/18
#   IR  10: many i <= 68.8 (69), few i > 139.8 (0)  -> 69/31/0
OWN_GROUPS = {100: (35, 35, 30), 50: (41, 41, 18), 10: (69, 31, 0)}
TOTALS = {100: 10847, 50: 12608, 10: 19573}


def _ldam_indices(targets: list[int], imbalance_ratio: float) -> np.ndarray:
    """LDAM's IMBALANCECIFAR100, written out independently (global numpy RNG, as the original)."""
    np.random.seed(0)
    img_max = len(targets) / 100
    nums = [int(img_max * ((1.0 / imbalance_ratio) ** (i / (100 - 1.0)))) for i in range(100)]
    targets_np = np.array(targets, dtype=np.int64)
    chosen = []
    for the_class, the_img_num in zip(np.unique(targets_np), nums):
        idx = np.where(targets_np == the_class)[0]
        np.random.shuffle(idx)
        chosen.append(idx[:the_img_num])
    return np.concatenate(chosen)


@pytest.mark.parametrize("ratio", [100, 50, 10])
def test_counts_groups_and_chosen_images_match_ldam(cifar_root: Path, ratio: int) -> None:
    counts = compute_counts(ratio)
    assert counts.sum() == TOTALS[ratio] and counts[0] == 500 and counts[-1] == 500 // ratio
    targets = load_pickle(cifar_root / "train")[b"fine_labels"]
    chosen = select_indices(np.array(targets), counts)
    assert np.array_equal(chosen, _ldam_indices(targets, ratio))
    labels = np.array(targets)[chosen]
    names = [str(i) for i in range(100)]
    own = compute_class_table(names, labels, 100, 20)
    assert tuple((own["group"] == g).sum() for g in ("many", "medium", "few")) == OWN_GROUPS[ratio]
    ir100 = compute_class_table(names, labels, 100, 20, group_counts=compute_counts(100))
    assert tuple((ir100["group"] == g).sum() for g in ("many", "medium", "few")) == (35, 35, 30)
    assert ir100["train_count"].tolist() == counts.tolist()


@pytest.mark.slow
def test_run_writes_the_chosen_images_as_pngs(cifar_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run(PrepareConfig("cifar100-lt", out, root=cifar_root, workers=2))
    record = result.record
    assert record["counts"] == {"train": 10847, "val": 0, "test": 10000}
    assert record["group_counts"] == {"many": 35, "medium": 35, "few": 30} and record["groups_from"] == "ir100"
    assert record["image_root"] == "." and record["warnings"] == []  # the prepared dir itself
    assert set(record["hashes"]) == {"train", "test", "meta"}
    manifest = artifacts.read_table(out, artifacts.MANIFEST).to_pandas()
    train_data = load_pickle(cifar_root / "train")
    chosen = _ldam_indices(train_data[b"fine_labels"], 100)
    train = manifest[manifest["split"] == "train"]
    assert train["path"].tolist() == [f"images/train/{i:05d}.png" for i in chosen]
    k = 1234
    pixels = np.asarray(Image.open(out / train["path"].iloc[k]))
    assert np.array_equal(pixels, train_data[b"data"][chosen[k]].reshape(3, 32, 32).transpose(1, 2, 0))
    assert train["label"].iloc[k] == train_data[b"fine_labels"][chosen[k]]
    classes = artifacts.read_table(out, artifacts.CLASSES).to_pandas()
    assert classes["name"].iloc[7] == "class_7" and classes["prior"].sum() == pytest.approx(1.0)
    assert run(PrepareConfig("cifar100-lt", out, root=cifar_root)).skipped


def test_unknown_ratio_has_no_published_figures_to_compare(tmp_path: Path) -> None:
    from sage_cli.prepare.recipes import expected_statistics, load_recipe

    recipe = load_recipe("cifar100-lt")
    assert expected_statistics(recipe, 7.5) == {}
    assert expected_statistics(recipe, 50.0) == {"classes": 100, "test": 10000, "train": 12608,
                                                 "max_count": 500, "min_count": 10}


def test_too_few_images_for_the_profile_is_named(tmp_path: Path) -> None:
    root = write_cifar(tmp_path / "cifar-100-python", train_per_class=5, test_per_class=1)
    with pytest.raises(SageError, match=r"train: class 0 \('class_0'\) has 5 images; needs 500"):
        run(PrepareConfig("cifar100-lt", tmp_path / "out", root=root))


def test_missing_pickle_and_unsafe_pickle_are_refused(tmp_path: Path) -> None:
    root = write_cifar(tmp_path / "cifar-100-python", train_per_class=5, test_per_class=1)
    (root / "meta").unlink()
    with pytest.raises(SageError, match=r"meta: missing; --root must be the unpacked cifar-100-python folder"):
        run(PrepareConfig("cifar100-lt", tmp_path / "out", root=root))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (root / "meta").write_bytes(pickle.dumps({b"fine_label_names": Evil()}))
    with pytest.raises(SageError, match=r"meta: not a CIFAR-100 python pickle \(refusing to load builtins.print\)"):
        load_pickle(root / "meta")


def test_refused_cifar_run_leaves_outputs_untouched(tmp_path: Path) -> None:
    root = write_cifar(tmp_path / "cifar-100-python", train_per_class=5, test_per_class=1)
    out = tmp_path / "out"
    run(PrepareConfig("synthetic", out))
    before = snapshot(out)
    with pytest.raises(SageError, match="holds a prepare result of other inputs"):
        run(PrepareConfig("cifar100-lt", out, root=root))
    assert snapshot(out) == before
