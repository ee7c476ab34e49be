"""The CLI's common behaviour: one error style with documented exit codes, choices shown and
checked, shell completion."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sage_cli.cli import app

runner = CliRunner()


@pytest.mark.parametrize(("args", "message"), [
    (["report", "--out", "o", "--nope"], "No such option: --nope"),
    (["prepare", "synthetic", "--out", "o", "--verify", "full"], "--verify must be one of exists, decode; got 'full'"),
    (["report", "--out", "o", "--device", "gpu"], "--device must be one of auto, cpu, cuda, cuda:N; got 'gpu'"),
    (["report", "--out", "o", "--split", "train"], "--split must be one of test, val; got 'train'"),
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


def _small_folder(root: Path) -> Path:
    from PIL import Image

    (root / "train" / "cat").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(root / "train" / "cat" / "a.png")
    return root


def test_a_multi_line_message_is_printed_as_one_line(tmp_path: Path) -> None:
    """pandas' parser error ends in a newline: the error spanned two lines."""
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\na.png,0\nb.png,0,extra,fields\n")
    result = runner.invoke(app, ["prepare", "csv", "--root", str(csv), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert result.output == (f"error: {csv}: not a readable CSV file (Error tokenizing data. C error: Expected 2 "
                             "fields in line 3, saw 4)\n")
    assert not (tmp_path / "o").exists()


def test_a_long_warning_is_one_line_at_any_width(tmp_path: Path) -> None:
    """Log lines went through Rich's wrapping handler: at 80 columns (a pipe) a warning took two."""
    root = tmp_path / ("a-rather-long-folder-name-" * 3)
    from PIL import Image

    (root / "img").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(root / "img" / "a.png")
    (root / "labels.csv").write_text("path,label\nimg/a.png,0\n")
    result = runner.invoke(app, ["prepare", "csv", "--root", str(root), "--out", str(tmp_path / "o")],
                           env={"COLUMNS": "60"})
    assert result.exit_code == 0, result.output
    warning = f"WARNING  {root / 'labels.csv'}: integer labels and no --classnames: classes are named 'class <id>'"
    assert warning in result.output.splitlines()


@pytest.mark.parametrize("where", ["home", "cwd"])
def test_out_may_not_be_the_home_or_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          where: str) -> None:
    """`--out /` (or ~, or .) was accepted: prepare writes images/ and tables there, --force replaces them."""
    place = tmp_path / where
    place.mkdir()
    (place / "notes.txt").write_text("mine")
    monkeypatch.setenv("HOME", str(place if where == "home" else tmp_path / "elsewhere"))
    monkeypatch.chdir(place if where == "cwd" else tmp_path)
    out = "~" if where == "home" else "."
    shown = str(place) if where == "home" else "."
    what = "your home directory" if where == "home" else "the current directory"
    result = runner.invoke(app, ["prepare", "folder", "--root", str(_small_folder(tmp_path / "data")),
                                 "--out", str(Path(out).expanduser())])
    assert result.exit_code == 1, result.output
    assert result.output == (f"error: {shown}: is {what}; give the outputs a directory of their own, e.g. "
                             f"{Path(shown, 'sage-out')}\n")
    assert sorted(p.name for p in place.iterdir()) == ["notes.txt"]


def test_out_may_not_be_the_filesystem_root() -> None:
    from sage_cli.errors import SageError
    from sage_cli.locks import lock_output_dir

    with pytest.raises(SageError, match="^/: is the filesystem root; give the outputs a directory of their own"):
        with lock_output_dir("/", "prepare"):
            pass
    assert not Path("/.sage.lock").exists()


def test_a_non_utf8_out_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / os.fsdecode(b"out\xff")
    result = runner.invoke(app, ["prepare", "folder", "--root", str(_small_folder(tmp_path / "data")),
                                 "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert result.output == (f"error: {tmp_path}/out\\xff: the path is not valid UTF-8; choose an output directory "
                             "with a UTF-8 path (tables and records hold it as text)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_an_out_name_of_255_bytes_prepares_without_leftovers(tmp_path: Path) -> None:
    """The staging copy `.NAME.XXXXXXXX.prepare.tmp` beside OUT exceeded NAME_MAX for names of 233-255."""
    out = tmp_path / ("o" * 255)
    result = runner.invoke(app, ["prepare", "folder", "--root", str(_small_folder(tmp_path / "data")),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "prepare.json").read_text())["counts"]["train"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", out.name]


def test_names_show_bidi_controls_and_non_utf8_bytes_escaped() -> None:
    """A class named with U+202E (right-to-left override) printed reordered text on the terminal."""
    from rich.console import Console

    from sage_cli.commands.predict import predictions_table
    from sage_cli.console import show_control

    assert show_control("cat\u202egod\x1b[2J" + os.fsdecode(b"\xff")) == "cat\\u202egod\\x1b[2J\\xff"
    assert show_control("a\tb\nc\u200fd\u2066e") == "a\tb\nc\\u200fd\\u2066e"  # tab and newline stay
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(predictions_table([{"image": "x.png", "top": [{"class_id": 0, "name": "dog\u202etac", "score": 0.5}]}]))
    text = console.export_text()
    assert "dog\\u202etac 0.500" in text and "\u202e" not in text
