"""benchmarks/methods/attention_probe.py: class-selectivity from the attention the model computed."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sage_cli.cli import app

ROOT = Path(__file__).resolve().parents[1]


def _load_probe():
    spec = importlib.util.spec_from_file_location("attention_probe", ROOT / "benchmarks" / "methods" / "attention_probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_summary_hand_values() -> None:
    # 2 images, 1 head, 2 tokens each, 3 classes; image 0 (class 0) attends to class 0, image 1 (class 2) to class 1
    attention = torch.tensor([
        [[[0.5, 0.25, 0.25], [0.7, 0.2, 0.1]]],
        [[[0.1, 0.8, 0.1], [0.3, 0.4, 0.3]]],
    ])
    route = torch.tensor([[True, True, False], [False, True, True]])
    summary = _load_probe().summarise_attention(attention, torch.tensor([0, 2]), route)
    assert summary["true_class_top"] == 0.5  # image 0 right, image 1 wrong
    assert summary["true_class_mass"] == pytest.approx((0.6 + 0.2) / 2)
    assert summary["distinct_winners"] == 2 and summary["chance"] == pytest.approx(1 / 3)
    entropy = lambda p: -sum(x * math.log(x) for x in p)  # noqa: E731
    expected = (entropy([0.5, 0.25, 0.25]) + entropy([0.7, 0.2, 0.1]) + entropy([0.1, 0.8, 0.1])
                + entropy([0.3, 0.4, 0.3])) / 4
    assert summary["entropy"] == pytest.approx(expected, rel=1e-6)
    assert summary["true_class_in_route"] == 1.0 and summary["route_size"] == 2


def test_probe_reads_the_routed_attention_of_a_trained_run(synthetic_prepared: Path, synthetic_text_cache: Path,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", "--prepared", str(synthetic_prepared), "--text-cache", str(synthetic_text_cache), "--method", "sage",
        "--guidance-topk", "2", "--out", str(out), "--device", "cpu", "--num-workers", "0", "--batch-size", "8",
        "--max-steps", "2", "--eval-every", "0", "--lr", "0.05"])
    assert result.exit_code == 0, result.output
    figures = _load_probe().probe(out, per_class=2, split="val")
    assert figures["method"] == "sage" and figures["images"] == 8 and len(figures["blocks"]) == 2
    for block in figures["blocks"]:
        assert block["route_size"] == 2 and 0 <= block["true_class_in_route"] <= 1
        assert block["entropy"] <= math.log(2) + 1e-6  # attention confined to the 2 routed tokens
        assert block["uniform_entropy"] == pytest.approx(math.log(4))
