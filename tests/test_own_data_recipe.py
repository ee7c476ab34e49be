"""docs/datasets.md's "Your own data in four commands", run as written on a generated image folder.

Only the backbone differs: the tiny random-init model instead of ViT-B-16's OpenAI weights (no
network in tests); the paths are the documented ones, relative to a scratch working directory.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from sage_cli.cli import app

DOCS = Path(__file__).resolve().parents[1] / "docs" / "datasets.md"
SECTION = "## Your own data in four commands"
SIZES = {"heron": 30, "egret": 12, "ibis": 6, "stork": 3, "crane": 2}
COLOURS = [(200, 30, 30), (30, 180, 40), (40, 60, 220), (220, 200, 30), (120, 40, 160)]


def recipe_lines() -> list[str]:
    """The ``sage ...`` lines of the section's bash block."""
    text = DOCS.read_text()
    section = text[text.index(SECTION):]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None, f"{DOCS}: no bash block under {SECTION!r}"
    return [line for line in block.group(1).splitlines() if line.startswith("sage ")]


def make_image_folder(root: Path) -> None:
    """``root/<class>/<i>.png``: 8x8 images of a class colour with noise."""
    import numpy as np

    rng = np.random.default_rng(0)
    for (name, n), colour in zip(SIZES.items(), COLOURS):
        (root / name).mkdir(parents=True)
        for i in range(n):
            pixels = np.clip(np.array(colour) + rng.integers(-40, 40, size=(8, 8, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:02d}.png")


def test_recipe_has_four_commands_one_per_stage() -> None:
    assert [shlex.split(line)[:2] for line in recipe_lines()] == [
        ["sage", "prepare"], ["sage", "encode-text"], ["sage", "train"], ["sage", "report"]]


@pytest.mark.slow
def test_own_data_recipe_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_image_folder(tmp_path / "my_images")
    for line in recipe_lines():
        line = line.replace("--model ViT-B-16 --pretrained openai", "--model sage-tiny --pretrained none")
        assert "sage-tiny" in line or "encode-text" not in line
        result = CliRunner().invoke(app, shlex.split(line)[1:])
        assert result.exit_code == 0, f"{line} failed:\n{result.output}"
    prepared = json.loads((tmp_path / "runs/mine/prepared/prepare.json").read_text())
    # default split per class (train, val, test): 30 -> (21, 3, 6), 12 -> (9, 1, 2), 6 -> (4, 1, 1),
    # 3 -> (1, 1, 1), 2 -> (1, 0, 1)
    assert prepared["counts"] == {"train": 36, "val": 6, "test": 11}
    assert prepared["layout"] == "ROOT/<class>/<image>"
    report = json.loads((tmp_path / "runs/mine/report/report.json").read_text())
    assert [r["name"] for r in report["runs"]] == ["zero-shot", "SAGE (mine)"]
    assert report["dataset"]["num_samples"] == 11
    assert (tmp_path / "runs/mine/report/report.html").is_file()
