"""`sage encode-text` through the CLI: summary, --json, no-op message and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.color import ColorSystem
from typer.testing import CliRunner

from sage_cli import artifacts
from sage_cli.cli import app
from sage_cli.console import console, err_console

from .conftest import make_prepared
from .test_llm import ChatServer

runner = CliRunner()


def test_encode_text_command(prepared: Path, tmp_path: Path) -> None:
    out = tmp_path / "text"
    args = ["encode-text", "--prepared", str(prepared), "--model", "sage-tiny", "--pretrained", "none",
            "--out", str(out), "--templates", "single", "--device", "cpu"]
    first = runner.invoke(app, [*args, "--json"])
    assert first.exit_code == 0, first.output
    record = json.loads(first.stdout)
    assert record["counts"]["texts"] == 3 and record["model"] == "sage-tiny"
    assert artifacts.read_table(out, artifacts.CLASS_EMBEDDINGS).num_rows == 3
    again = runner.invoke(app, args)
    assert again.exit_code == 0
    assert "already holds this text cache; nothing to do" in " ".join(again.stdout.split())


def test_encode_text_command_errors(prepared: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["encode-text", "--prepared", str(prepared), "--model", "ViT-B-33",
                                 "--pretrained", "none", "--out", str(tmp_path / "text")])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --model 'ViT-B-33': not an open_clip model name")
    result = runner.invoke(app, ["encode-text", "--prepared", str(prepared), "--model", "sage-tiny",
                                 "--pretrained", "none", "--out", str(tmp_path / "text"), "--generate"])
    assert result.exit_code == 1
    assert "--generate needs --llm-url and --llm-model" in result.stderr
    assert not (tmp_path / "text").exists()


LINK = "[link=file:///etc/passwd]click[/link]"


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both consoles behave as on a wide colour terminal, so markup would turn into escape codes."""
    for target in (console, err_console):
        monkeypatch.setattr(target, "_force_terminal", True)
        monkeypatch.setattr(target, "_color_system", ColorSystem.TRUECOLOR)
        monkeypatch.setattr(target, "_width", 400)


def test_paths_and_class_names_print_verbatim(tmp_path: Path, terminal: None) -> None:
    missing = tmp_path / "work" / "[/q]"
    result = runner.invoke(app, ["encode-text", "--prepared", str(missing), "--model", "sage-tiny",
                                 "--pretrained", "none", "--out", str(tmp_path / "text")])
    assert result.exit_code == 1 and "MarkupError" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0]

    prepared = make_prepared(tmp_path / "work" / "[exp]" / "prep", names=("[/bold]", LINK, "cat"))
    descriptions = tmp_path / "d.json"
    descriptions.write_text(json.dumps({"cat": ["a cat with pointed ears."]}))
    out = tmp_path / "work" / "[exp]" / "text"
    args = ["encode-text", "--prepared", str(prepared), "--model", "sage-tiny", "--pretrained", "none",
            "--out", str(out), "--templates", "single", "--device", "cpu", "--descriptions", str(descriptions)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert f"classes on templates only │ 2: [/bold], {LINK} │" in " ".join(first.stdout.split())
    assert "\x1b]8;" not in first.output  # no terminal link, in the table or the warning
    again = runner.invoke(app, args)
    assert f"{out} already holds this text cache" in again.stdout


def test_a_server_error_body_prints_verbatim(prepared: Path, tmp_path: Path, terminal: None) -> None:
    broken = ChatServer(fail_first=10, status=404, error_body=b"[/oops] \x1b[31m[link=http://x]y[/link]")
    try:
        result = runner.invoke(app, ["encode-text", "--prepared", str(prepared), "--model", "sage-tiny",
                                     "--pretrained", "none", "--out", str(tmp_path / "text"), "--generate",
                                     "--llm-url", broken.url, "--llm-model", "m"])
    finally:
        broken.close()
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith(f"{broken.url}/chat/completions: HTTP 404 Not Found: [/oops] [link=http://x]y[/link]")
    assert "\x1b]8;" not in result.stderr and "\x1b[31m" not in result.stderr


def test_llm_flags_bound_a_hanging_server(prepared: Path, tmp_path: Path) -> None:
    hanging = ChatServer(fault=lambda handler, number: hanging.release.wait(10))
    try:
        result = runner.invoke(app, ["encode-text", "--prepared", str(prepared), "--model", "sage-tiny",
                                     "--pretrained", "none", "--out", str(tmp_path / "text"), "--generate",
                                     "--llm-url", hanging.url, "--llm-model", "m", "--llm-timeout", "0.5",
                                     "--llm-retries", "0", "--llm-concurrency", "2"])
    finally:
        hanging.close()
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len(hanging.requests) == 2  # two classes in flight at once, one attempt each
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "after 1 attempt (TimeoutError: no complete answer within 0.5 s)" in lines[0]
