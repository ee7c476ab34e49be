"""The shipped toy CLIP v2: its recipe matches its record, and its zero-shot band on a small sample."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from sage_cli.artifacts import sha256_file
from sage_cli.world import TOY_WEIGHTS_V1, TOY_WEIGHTS_V2
from sage_cli.world.pretrain import build_toy_model, evaluate_world_zero_shot
from sage_cli.world.shapes import DOMAINS

REPO = Path(__file__).resolve().parents[2]
RECORD = TOY_WEIGHTS_V2.with_name("sage_toy_v2.pretrain.json")


def test_recipe_matches_the_shipped_record(tmp_path: Path) -> None:
    result = subprocess.run([str(REPO / "pipelines" / "pretrain_toy_v2.sh"), "--dry-run", "--work", str(tmp_path / "w")],
                            capture_output=True, text=True, check=True)
    command = next(line for line in result.stdout.splitlines() if line.startswith("+ ")).split()
    shipped = json.loads(RECORD.read_text())
    inputs = shipped["inputs"]
    flags = {"steps": "--steps", "batch_size": "--batch-size", "lr": "--lr", "seed": "--seed",
             "threads": "--threads", "eval_per_class": "--eval-per-class"}
    for key, flag in flags.items():
        assert float(command[command.index(flag) + 1]) == float(inputs[key]), flag
    assert command[command.index("--world") + 1] == inputs["world"] == "open"
    init = Path(command[command.index("--init") + 1].strip("'"))
    assert init.resolve() == TOY_WEIGHTS_V1.resolve()
    assert inputs["init"] == {"sha256": sha256_file(TOY_WEIGHTS_V1)}  # continued from the shipped v1
    assert shipped["weights_sha256"] == sha256_file(TOY_WEIGHTS_V2)
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(("domain", "low", "high"), [("open", 60.0, 100.0), ("moderate", 30.0, 75.0)])
def test_shipped_v2_zero_shot_band(domain: str, low: float, high: float) -> None:
    # 3 held-out images per class (240): the band is wide enough for sampling noise (about +-3 points)
    # and narrow enough to fail for a model that does not know the world or a domain that is trivial.
    clip, tokenizer = build_toy_model(weights=TOY_WEIGHTS_V2)
    clip.eval()
    accuracy = evaluate_world_zero_shot(clip, tokenizer, DOMAINS[domain], per_class=3, seed=123)
    assert low <= accuracy <= high, accuracy
    if domain == "moderate":
        recorded = json.loads(RECORD.read_text())["zero_shot_top1"]
        assert recorded["open"] - recorded["moderate"] > 10  # the downstream domain is really shifted


def test_shipped_v2_zero_shot_on_the_fine_domain_is_in_the_criterion_band() -> None:
    # Criterion 1 (docs/world.md) on a small sample: 5 held-out images per class (400), about
    # +-2.5 points of sampling noise around the 51 measured on 20 per class. The band [40, 62] fails for
    # the v1 weights (25 here), and for the same domain without its class shades (66): a model or a
    # domain that left the regime.
    clip, tokenizer = build_toy_model(weights=TOY_WEIGHTS_V2)
    clip.eval()
    accuracy = evaluate_world_zero_shot(clip, tokenizer, DOMAINS["fine"], per_class=5, seed=123)
    assert 40.0 <= accuracy <= 62.0, accuracy
