"""`sage report` through the CLI: the table, --json, and one-line errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sage_cli.cli import app

runner = CliRunner()


@pytest.fixture()
def loud_again() -> Iterator[None]:
    """``-q`` sets the shared console quiet; put it back for the tests that follow."""
    yield
    from sage_cli.console import configure_output

    configure_output()


def test_report_command_prints_table_and_writes_outputs(tiny_data, tmp_path: Path) -> None:
    prepared, text = tiny_data
    out = tmp_path / "out"
    args = ["report", "--zero-shot", str(prepared), "--text-cache", str(text), "--out", str(out),
            "--device", "cpu", "--workers", "0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "zero-shot" in result.output and "overall" in result.output and "medium" in result.output
    report = json.loads((out / "report.json").read_text())
    assert f"{100 * report['runs'][0]['metrics']['top1']:.1f}" in result.output
    again = runner.invoke(app, [*args, "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["fingerprint"] == report["fingerprint"]


def test_report_command_one_line_errors(tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", str(tmp_path / "nope"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0
    assert "nope: not a directory" in result.output
    assert not (tmp_path / "out").exists()
    result = runner.invoke(app, ["report", "--out", str(tmp_path / "out"), "--zero-shot", str(tmp_path)])
    assert result.exit_code == 1 and "go together" in result.output


def test_quiet_report_prints_one_result_line(tiny_data, tmp_path: Path, loud_again: None) -> None:
    prepared, text = tiny_data
    out = tmp_path / "out"
    result = runner.invoke(app, ["-q", "report", "--zero-shot", str(prepared), "--text-cache", str(text), "--out",
                                 str(out), "--device", "cpu", "--workers", "0", "--no-figures"])
    assert result.exit_code == 0, result.output
    top1 = json.loads((out / "report.json").read_text())["runs"][0]["metrics"]["top1"]
    assert result.stdout == f"{out}: top-1 zero-shot {100 * top1:.1f}\n"
    assert not (out / "figures").exists()
