"""The CLI's common behaviour: one error style with documented exit codes, choices shown and
checked, shell completion."""

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


@pytest.mark.parametrize(("args", "message"), [
    (["report", "--out", "o", "--nope"], "No such option: --nope"),
    (["prepare", "synthetic", "--out", "o", "--verify", "full"], "'full' is not one of 'exists', 'decode'"),
    (["report", "--out", "o", "--device", "gpu"], "'gpu' is not one of auto, cpu, cuda, cuda:N"),
    (["report", "--out", "o", "--split", "train"], "'train' is not one of 'test', 'val'"),
    (["encode-text", "--prepared", "p"], "Missing option '--model'"),
])
def test_usage_errors_are_one_red_line_with_exit_code_2(args: list[str], message: str, tmp_path: Path) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert text.count("\n") == 0 and text.startswith("error: ")  # no box, no usage block
    assert message in text and "--help" in text
    assert not Path("o").exists()


def test_bad_input_is_one_red_line_with_exit_code_1(tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and result.output.strip().startswith("error: ")
    assert result.output.strip().count("\n") == 0


def test_choices_are_shown_in_help() -> None:
    wide = {"COLUMNS": "200"}
    prepare = runner.invoke(app, ["prepare", "--help"], env=wide).output
    assert "<exists|decode>" in prepare and "<ir100|own>" in prepare
    report = runner.invoke(app, ["report", "--help"], env=wide).output
    assert "<auto|cpu|cuda[:N]>" in report and "<test|val>" in report
    for command in ("encode-text", "predict", "demo"):
        assert "<auto|cpu|cuda[:N]>" in runner.invoke(app, [command, "--help"], env=wide).output


def test_device_accepts_an_index() -> None:
    from sage_cli.commands._common import complete_device, parse_device

    assert parse_device("cuda:1") == "cuda:1" and parse_device("cpu") == "cpu"
    assert complete_device("c") == ["cpu", "cuda"]


def test_shell_completion_is_on() -> None:
    result = runner.invoke(app, ["--show-completion", "bash"])
    assert result.exit_code == 0, result.output
    assert "_SAGE_COMPLETE" in result.output or "complete_bash" in result.output
    assert "--install-completion" in runner.invoke(app, ["--help"]).output


def test_quiet_prepare_prints_one_result_line(tmp_path: Path, loud_again: None) -> None:
    out = tmp_path / "prepared"
    result = runner.invoke(app, ["-q", "prepare", "synthetic", "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "prepare.json").read_text())
    counts = record["counts"]
    assert result.stdout == (f"{out}: {record['num_classes']} classes, {counts['train']} train / {counts['val']} val / "
                             f"{counts['test']} test images\n")
