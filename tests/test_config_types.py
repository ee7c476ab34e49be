"""Preset values are checked by the type of their option; `sage train --help` shows choices and panels."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
from typer.testing import CliRunner

from sage_cli.cli import app
from sage_cli.commands.train import option_types
from sage_cli.config import coerce_preset
from sage_cli.errors import SageError
from sage_cli.losses import ESTIMATORS, LOSSES
from sage_cli.methods import TRAIN_METHODS, MethodName
from sage_cli.model.head import HEAD_INITS, HEADS
from sage_cli.model.peft import PEFT_MODULES
from sage_cli.methods import METHODS
from sage_cli.schema import CompensationName, HeadInitName, HeadName, LossName

runner = CliRunner()


def test_type_names_match_the_registries() -> None:
    assert set(get_args(LossName)) == set(LOSSES)
    assert set(get_args(CompensationName)) == set(ESTIMATORS)
    assert set(get_args(HeadName)) == set(HEADS)
    assert tuple(get_args(HeadInitName)) == HEAD_INITS
    assert tuple(get_args(MethodName)) == TRAIN_METHODS
    assert {m.model.peft.module for m in METHODS.values() if m.model.peft} == set(PEFT_MODULES)


def test_values_are_coerced_by_type(tmp_path: Path) -> None:
    preset = {"lr": "1e-3", "epochs": 3, "warmup-epochs": 1, "method": "lora", "blocks": 5, "compensation": None,
              "augment": False}
    coerced = coerce_preset(preset, option_types(), tmp_path / "p.yaml")
    assert coerced == {"lr": 1e-3, "epochs": 3, "warmup-epochs": 1.0, "method": "lora", "blocks": "5",
                       "compensation": None, "augment": False}
    assert isinstance(coerced["warmup-epochs"], float)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("epochs: 1.5", "epochs: expected an integer; got 1.5"),
        ('epochs: "ten"', "epochs: expected an integer; got 'ten'"),
        ("lr: [1, 2]", "lr: expected a number, not a list; got [1, 2]"),
        ("epochs: null", "epochs: expected a value, not null; got None"),
        ("seed: true", "seed: expected an integer, not a boolean; got True"),
        ("augment: 1", "augment: expected true or false; got 1"),
        ("method: lorra", "method: expected one of linear, lift, sage"),
    ],
)
def test_bad_preset_values_are_one_line_naming_file_line_and_key(synthetic_prepared, synthetic_text_cache,
                                                                 tmp_path: Path, line: str, message: str) -> None:
    preset = tmp_path / "preset.yaml"
    preset.write_text(f"# a preset\nbatch_size: 8\n{line}\n")
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--prepared", str(synthetic_prepared), "--text-cache",
                                 str(synthetic_text_cache), "--method", "linear", "--out", str(out),
                                 "--config", str(preset)])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert f"{preset}:3: {message}" in text, result.output
    assert not out.exists()


def test_a_bad_value_without_a_file_names_the_key() -> None:
    with pytest.raises(SageError, match=r"^config: epochs: expected an integer; got 1.5$"):
        coerce_preset({"epochs": 1.5}, option_types())


def test_help_shows_choices_panels_and_plain_flags() -> None:
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = result.output
    for panel in ("Method", "Loss", "Adapter", "Optimiser", "Data", "Run"):
        assert f"─ {panel} " in text, panel
    assert "One of: linear, lift, sage, lora," in text  # the registry's methods, listed in the help
    assert "One of: ce, la, bs, focal, ldam, cb, grw, lade." in text and "<cosine|linear|l2>" in text
    assert "--skip-bad" in text and "--no-skip-bad" in text and "--no-augment" in text
    assert "<bool>" not in text  # a flag shows no placeholder (tests/commands/test_help.py: every command)


def test_out_of_range_blocks_through_the_cli_are_one_short_line(synthetic_prepared, synthetic_text_cache,
                                                               tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--prepared", str(synthetic_prepared), "--text-cache",
                                 str(synthetic_text_cache), "--method", "lora", "--out", str(tmp_path / "r"),
                                 "--device", "cpu", "--num-workers", "0", "--blocks", "0-99"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--blocks [2, 3, ..., 99] (98 indices) out of range" in lines[0], result.output
