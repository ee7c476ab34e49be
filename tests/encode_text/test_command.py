"""`sage encode-text` through the CLI: summary, --json, no-op message and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from sage_cli import artifacts
from sage_cli.cli import app

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
