"""Every command's help as a careful user reads it (sage_cli.cli_style), at fixed terminal widths:
no ``<bool>`` on flags, no braces or RST backticks, choices shown, ``-h``, ``-q`` after the command,
and one-line errors with a did-you-mean for a value outside the choices."""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Iterator
from typing import Literal
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from sage_cli.cli import app
from sage_cli.cli_style import CHOICES_METAVAR, SageCommand, names_word, plain_help
from sage_cli.schema import flat_fields

runner = CliRunner()
COMMANDS = tuple(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def help_of(*args: str, width: int = 100) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    return result.output


def flat(text: str) -> str:
    """The help with its box drawing gone and its whitespace (line wraps included) collapsed."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def row(text: str, flag: str) -> str:
    """The table row of ``flag``: its first line and its continuation lines, whitespace collapsed.

    A row starts in the option column (the flag within a few spaces of the panel's border): another option's
    help may wrap so that one of its lines begins with ``flag``.
    """
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.search(rf"^│\s{{1,8}}(\*\s+)?{re.escape(flag)}\s", line))
    end = next((i for i in range(start + 1, len(lines)) if re.search(r"^│\s{1,8}(\*\s+)?-", lines[i])
                or "╰" in lines[i]), len(lines))
    return flat("\n".join(lines[start:end]))


@pytest.fixture()
def loud_again() -> Iterator[None]:
    yield
    from sage_cli.console import configure_output

    configure_output()


def test_the_commands_are_all_checked() -> None:
    assert set(COMMANDS) == {"prepare", "encode-text", "cache-images", "train", "report", "predict", "export",
                             "demo", "pretrain-toy"}


@pytest.mark.parametrize("width", [80, 100])
@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_has_no_bool_placeholder_braces_or_backticks(command: str, width: int) -> None:
    text = help_of(*([command] if command else []), width=width)
    assert "<bool>" not in text  # a flag takes no value
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if "Usage:" in line)
    usage = " ".join(lines[first:next(i for i in range(first, len(lines)) if not lines[i].strip())])
    assert "{" not in usage and "[OPTIONS]" in usage, usage  # arguments as RUN_DIR, not Typer's {RUN_DIR}
    assert "``" not in text  # RST literals print as `x`
    assert "<list[" not in text  # a list shows its element


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_h_is_help(command: str) -> None:
    args = [command] if command else []
    short = runner.invoke(app, [*args, "-h"], env={"COLUMNS": "100"})
    assert short.exit_code == 0 and short.output == help_of(*args)
    assert "-h" in row(short.output, "--help")


def test_arguments_read_as_their_names() -> None:
    assert "Usage: sage prepare [OPTIONS] DATASET" in help_of("prepare")
    assert "Usage: sage export [OPTIONS] RUN_DIR" in help_of("export")
    assert "Usage: sage report [OPTIONS] [RUN_DIR...]" in help_of("report")
    predict = help_of("predict")
    assert "Usage: sage predict [OPTIONS] RUN_DIR|EXPORT_DIR [IMAGE|DIR...]" in predict
    assert row(predict, "IMAGE|DIR...").startswith("IMAGE|DIR... <path> Image files")


@pytest.mark.parametrize(("command", "flag", "shown"), [
    ("train", "--log", "<tensorboard|wandb|csv>"),
    ("train", "--head", "<cosine|linear|l2>"),
    ("train", "--device", "<auto|cpu|cuda[:N]>"),
    ("prepare", "--domain", "<fine|moderate|hard|v3>"),
    ("report", "--split", "<test|val>"),
    ("pretrain-toy", "--world", "<clean|open>"),
])
def test_short_choice_sets_are_the_placeholder(command: str, flag: str, shown: str) -> None:
    assert row(help_of(command), flag).startswith(f"{flag} {shown} ")


@pytest.mark.parametrize("width", [80, 100, 140])
def test_the_method_choices_are_listed_whole(width: int) -> None:
    from sage_cli.methods import TRAIN_METHODS

    text = help_of("train", width=width)
    assert "─ Options " not in text  # --help sits in the last panel, not alone in its own
    method = row(text, "--method")
    assert method.startswith(f"--method {CHOICES_METAVAR} What trains")
    assert f"One of: {', '.join(TRAIN_METHODS)}." in method  # not folded mid-word


def test_every_choice_of_the_schema_is_shown() -> None:
    """A field added to sage_cli/schema.py with choices shows them with no edit of the command."""
    text = help_of("train", width=120)
    for key, leaf in flat_fields().items():
        meta = leaf.option
        if not meta.cli or meta.choices is None:
            continue
        line = row(text, "--" + key.replace("_", "-"))
        inline = f"<{'|'.join(meta.choices)}>" in line
        listed = all(names_word(line.partition(" ")[2], c) for c in meta.choices)
        assert inline or listed, line


def test_compensation_help_names_every_estimator_and_its_losses() -> None:
    from sage_cli.losses.compensation import ESTIMATORS

    line = row(help_of("train", width=120), "--compensation")
    for name in ESTIMATORS:
        assert names_word(line, name), name
    assert "--loss la or bs only" in line and "sage-zs" not in line


def test_brackets_in_help_are_not_markup() -> None:
    assert "JSON {class: [sentences]} or CSV class,description." in row(help_of("encode-text", width=140),
                                                                         "--descriptions")
    assert plain_help("a ``b`` [c]") == "a `b` \\[c]" and plain_help("[c]", markup=False) == "[c]"


def test_a_new_command_gets_the_same_help() -> None:
    """The polishing is generic: any option of any SageCommand, with no per-option code."""
    probe = typer.Typer(context_settings={"help_option_names": ["-h", "--help"]})

    @probe.command(cls=SageCommand)
    def run(items: list[Path] = typer.Argument(None, help="Things."),
            mode: Literal["alpha-one", "beta-two", "gamma-three"] = typer.Option("alpha-one", help="Mode."),
            fast: bool = typer.Option(False, "--fast", help="Go ``fast`` [really]."),
            names: list[str] = typer.Option([], "--name", help="Repeatable.")) -> None:
        """Run ``it``."""

    text = runner.invoke(probe, ["-h"], env={"COLUMNS": "100"}).output
    assert "Usage: run [OPTIONS] [ITEMS...]" in text and "Run `it`." in text
    assert row(text, "--fast") == "--fast Go `fast` [really]."
    assert row(text, "--mode").startswith(f"--mode {CHOICES_METAVAR} Mode. One of: alpha-one, beta-two, gamma-three.")
    assert row(text, "--name").startswith("--name <str> Repeatable.")
    assert row(text, "ITEMS...").startswith("ITEMS... <path> Things.")
    bad = runner.invoke(probe, ["--mode", "beta-tow"])
    assert bad.exit_code == 2 and "--mode must be one of alpha-one, beta-two, gamma-three; got 'beta-tow' " \
                                  "(did you mean 'beta-two'?)" in flat(bad.output)


@pytest.mark.parametrize(("args", "message"), [
    (["train", "-p", "p", "-t", "t", "-o", "o", "--method", "lfit"], "--method must be one of linear, lift, "),
    (["train", "-p", "p", "-t", "t", "-o", "o", "--loss", "focl"], "--loss must be one of ce, la, "),
    (["prepare", "shapes-lt", "-o", "o", "--domain", "fien"], "--domain must be one of fine, moderate, hard, v3; "),
    (["report", "-o", "o", "--tte-mode", "fivecrop"], "--tte-mode must be one of five-crop, ten-crop, flip; "),
    (["export", "r", "-o", "o", "--format", "onxx"], "--format must be one of torchscript, onnx, open_clip; "),
    (["report", "-o", "o", "--device", "cdua"], "--device must be one of auto, cpu, cuda, cuda:N; "),
])
def test_a_value_outside_the_choices_is_one_line_with_a_guess(args: list[str], message: str,
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    guess = {"lfit": "lift", "focl": "focal", "fien": "fine", "fivecrop": "five-crop", "onxx": "onnx", "cdua": "cuda"}
    value = next(a for a in args if a in guess)
    assert result.output.startswith(f"error: {message}") and result.output.count("\n") == 1
    assert f"; got '{value}' (did you mean '{guess[value]}'?) (see 'sage {args[0]} --help')" in result.output
    assert "Value error" not in result.output and "Invalid value" not in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "message"), [
    (["train", "-p", "p", "-t", "t", "-o", "o", "--epochs", "ten"], "--epochs must be an integer; got 'ten'"),
    (["train", "-p", "p", "-t", "t", "-o", "o", "--warmup-steps", "1.5"],
     "--warmup-steps must be an integer; got '1.5'"),
    (["train", "-p", "p", "-t", "t", "-o", "o", "--lr", "1e-3x"], "--lr must be a number; got '1e-3x'"),
    (["report", "-o", "o", "--tau", "1", "--tau", "x"], "--tau must be a number; got 'x'"),
])
def test_a_value_that_is_no_number_is_one_line(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.output == f"error: {message} (see 'sage {args[0]} --help')\n"


def test_an_unknown_dataset_gets_a_guess(tmp_path: Path) -> None:
    result = runner.invoke(app, ["prepare", "synthtic", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.rstrip().endswith("(did you mean 'synthetic'?)") and not (tmp_path / "o").exists()


def test_the_command_line_choices_match_their_registries() -> None:
    from sage_cli.commands import prepare, pretrain_toy, report, train
    from sage_cli.report.tte import TTE_MODES
    from sage_cli.train.tracking import TRACKERS
    from sage_cli.world.pretrain import WORLDS
    from sage_cli.world.shapes_lt import SHAPES_LT_DOMAINS

    assert typing.get_args(prepare.Domain) == tuple(SHAPES_LT_DOMAINS)
    assert typing.get_args(report.TteMode) == TTE_MODES
    assert typing.get_args(pretrain_toy.World) == tuple(WORLDS)
    assert train.TRACKERS == TRACKERS


@pytest.mark.parametrize("where", [["-q", "prepare", "synthetic"], ["prepare", "synthetic", "-q"],
                                   ["prepare", "-q", "synthetic"], ["prepare", "synthetic", "--quiet"]])
def test_quiet_anywhere(where: list[str], tmp_path: Path, loud_again: None) -> None:
    out = tmp_path / "prepared"
    result = runner.invoke(app, [*where, "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "prepare.json").read_text())
    counts = record["counts"]
    assert result.stdout == (f"{out}: {record['num_classes']} classes, {counts['train']} train / {counts['val']} val / "
                             f"{counts['test']} test images\n")


def test_verbose_after_the_command(loud_again: None) -> None:
    import logging

    result = runner.invoke(app, ["report", "-o", "o", "-v", "--split", "nope"])
    assert result.exit_code == 2  # parsed up to the bad value: -v was applied on the way
    assert logging.getLogger("sage_cli").level == logging.DEBUG


def test_the_docs_show_the_help_as_printed() -> None:
    """docs/cli.md's usage lines and its --method typo are what sage prints."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    usages = re.findall(r"^Usage: sage (\S+) .*$", docs, flags=re.MULTILINE)
    assert usages
    for line in re.findall(r"^Usage: sage .*$", docs, flags=re.MULTILINE):
        assert line in flat(help_of(line.split()[2])), line
    typo = re.search(r"^error: --method .*$", docs, flags=re.MULTILINE)
    assert typo is not None
    result = runner.invoke(app, ["train", "-p", "p", "-t", "t", "-o", "o", "--method", "lfit"])
    assert result.output.strip() == typo.group(0)
