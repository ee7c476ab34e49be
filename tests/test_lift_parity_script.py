"""benchmarks/parity/lift_parity.py without LIFT: the comparison and its table, the name mapping,
the yacs decoding, the shared class counts and the one-line argument errors. (The comparison with
LIFT itself needs a checkout the user brings; benchmarks/parity/RESULTS.md records it.)"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "parity" / "lift_parity.py"


@pytest.fixture(scope="module")
def parity():
    spec = importlib.util.spec_from_file_location("lift_parity", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["lift_parity"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("lift_parity", None)


def test_compare_gives_the_largest_absolute_and_relative_difference(parity):
    row = parity.compare("w", torch.tensor([1.0, 2.5, -4.0]), torch.tensor([1.0, 2.0, -4.0]))
    assert row.max_abs == pytest.approx(0.5)
    assert row.max_rel == pytest.approx(0.5 / 4.0)  # over the largest magnitude of LIFT's tensor
    assert not row.ok and row.update_rel is None


def test_compare_within_tolerance_is_ok_and_zeros_compare_absolutely(parity):
    assert parity.compare("w", torch.tensor([100.0]), torch.tensor([100.0 + 5e-4])).ok  # 5e-6 relative
    assert not parity.compare("w", torch.tensor([100.0]), torch.tensor([100.0 + 2e-3])).ok  # 2e-5 relative
    zeros = parity.compare("b", torch.tensor([3e-6, 0.0]), torch.zeros(2))
    assert zeros.max_rel == pytest.approx(3e-6) and zeros.ok


def test_compare_after_steps_reports_the_difference_relative_to_lifts_update(parity):
    row = parity.compare("w", torch.tensor([1.0, 2.1]), torch.tensor([1.0, 2.0]), torch.tensor([1.0, 1.5]))
    assert row.moved == pytest.approx(0.5) and row.update_rel == pytest.approx(0.1 / 0.5)
    assert parity.compare("w", torch.ones(2), torch.ones(2), torch.ones(2)).update_rel == 0.0


def test_a_shape_mismatch_is_named_and_differs(parity):
    row = parity.compare("head", torch.zeros(16, 32), torch.zeros(16, 128))
    assert not row.ok and math.isinf(row.max_abs)
    assert row.note == "shape [16, 32] vs LIFT's [16, 128]"


def test_table_marks_each_row(parity):
    rows = [parity.Row("a", 0.0, 0.0), parity.Row("b", 1.0, 0.5, "why"),
            parity.Row("c", 1e-7, 1e-7, moved=1e-5, update_rel=0.01)]
    table = parity.format_table(rows).splitlines()
    assert table[0] == "| quantity | max abs diff | max rel diff | LIFT's change | diff / change | verdict |"
    assert table[2] == "| a | 0 | 0 |  |  | ok |"
    assert table[3] == "| b | 1 | 0.5 |  |  | differ (why) |"
    assert table[4] == "| c | 1e-07 | 1e-07 | 1e-05 | 0.01 | ok |"


def test_lift_tensor_names_map_to_ours(parity):
    assert parity.lift_to_ours("head.weight") == "head.weight"
    assert (parity.lift_to_ours("tuner.adaptformer_list.11.down_proj.weight")
            == "visual.transformer.resblocks.11.mlp.adapter.down.weight")
    assert parity.lift_to_ours("tuner.adaptformer_list.0.scale") == "visual.transformer.resblocks.0.mlp.adapter.alpha"
    with pytest.raises(parity.ParityError, match="lora_list"):
        parity.lift_to_ours("tuner.lora_list.0.q.lora_A")


def test_yaml_values_decode_as_yacs_does(parity):
    assert parity._decode_yacs("5e-4") == 5e-4  # PyYAML reads 5e-4 as text; yacs literal_evals it
    assert parity._decode_yacs("CosineClassifier") == "CosineClassifier"
    assert parity._decode_yacs(0.9) == 0.9
    node = parity._CfgNode(lr=0.01)
    node.momentum = 0.9
    assert node == {"lr": 0.01, "momentum": 0.9} and node.lr == 0.01


def test_class_names_are_in_the_order_prepare_numbers_their_folders(parity):
    folders = [name.replace(" ", "_") for name in parity.CLASS_NAMES]
    assert folders == sorted(folders)


def test_class_counts_are_long_tailed_from_300_to_10(parity):
    counts = parity.class_counts()
    assert len(counts) == len(parity.CLASS_NAMES) == 16
    # floor(300 * 30 ** (-i / 15)): 300 * 30 ** (-1 / 15) = 239.6, ..., 300 / 30 = 10
    assert counts == [300, 239, 190, 151, 121, 96, 76, 61, 48, 38, 31, 24, 19, 15, 12, 10]
    assert sum(counts) // parity.BATCH_SIZE >= parity.STEPS  # ten steps fit in LIFT's first epoch


def test_a_missing_lift_repo_is_a_one_line_error(parity, tmp_path, capsys):
    assert parity.main(["--lift-repo", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("lift_parity.py: error: --lift-repo ") and "not a directory" in err


def test_a_folder_that_is_not_lift_names_the_first_missing_module(parity, tmp_path, capsys):
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "model.py").write_text("")
    assert parity.main(["--lift-repo", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == (f"lift_parity.py: error: --lift-repo {tmp_path}: no models/peft_vit.py; "
                   "is this a checkout of github.com/shijxcs/LIFT?\n")


def test_threads_below_one_are_refused(parity, tmp_path, capsys):
    assert parity.main(["--lift-repo", str(tmp_path), "--threads", "0"]) == 2
    assert "--threads and --repeats must be at least 1" in capsys.readouterr().err
