"""`sage pretrain-toy` wiring: flags reach the run, errors are one red line, outputs are guarded."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from sage_cli.commands.pretrain_toy import command

app = typer.Typer()
app.command()(command)
runner = CliRunner()
TINY = ["--steps", "2", "--batch-size", "4", "--eval-per-class", "1"]


def test_pretrain_toy_writes_weights_and_record(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--out", str(tmp_path / "toy"), *TINY])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "toy" / "sage_toy.safetensors").is_file()
    assert (tmp_path / "toy" / "pretrain.json").is_file()
    assert "zero-shot" in result.output and "shifted" in result.output


def test_pretrain_toy_bad_steps_is_one_line_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--out", str(tmp_path / "toy"), "--steps", "0"])
    assert result.exit_code == 1
    assert "error: --steps must be at least 1" in result.output
    assert not (tmp_path / "toy").exists()


def test_pretrain_toy_refuses_to_overwrite_other_run(tmp_path: Path) -> None:
    out = tmp_path / "toy"
    assert runner.invoke(app, ["--out", str(out), *TINY]).exit_code == 0
    before = (out / "sage_toy.safetensors").read_bytes()
    result = runner.invoke(app, ["--out", str(out), *TINY, "--seed", "3"])
    assert result.exit_code == 1
    assert "--force" in result.output
    assert (out / "sage_toy.safetensors").read_bytes() == before
