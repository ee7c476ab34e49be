"""The shipped class-descriptions file of the shapes world, as `sage encode-text --descriptions` reads it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from sage_cli import artifacts
from sage_cli.encode_text.descriptions import load_descriptions
from sage_cli.prepare import compute_class_table
from sage_cli.world import SHAPES_DESCRIPTIONS, TOY_MODEL, TOY_WEIGHTS
from sage_cli.world.attributes import compute_class_descriptions, save_class_descriptions
from sage_cli.world.shapes import class_names
from sage_cli.world.shapes_lt import compute_class_order


def test_shipped_file_is_the_generated_one(tmp_path: Path) -> None:
    # Regenerate with save_class_descriptions(SHAPES_DESCRIPTIONS, class_names()) after changing the vocabulary.
    fresh = save_class_descriptions(tmp_path / "d.json", class_names())
    assert SHAPES_DESCRIPTIONS.read_text() == fresh.read_text()
    data = json.loads(SHAPES_DESCRIPTIONS.read_text())
    assert list(data) == class_names()
    assert data["purple star"] == [
        "a purple star, a five-pointed star.",
        "a purple star in a violet colour.",
        "a five-pointed star, coloured in a violet colour.",
        "a star whose colour is a violet colour.",
    ]
    assert data["white ring"][0] == "a white ring, a ring: a circle with a hole."


def test_descriptions_share_attributes_across_classes() -> None:
    data = compute_class_descriptions(class_names())
    stars = [s for name, sentences in data.items() if name.endswith(" star") for s in sentences]
    assert sum("a five-pointed star" in s for s in stars) == 10 * 2  # each star class: two sentences say it
    with pytest.raises(ValueError, match="not a class of the shapes world"):
        compute_class_descriptions(["green dragon"])


def test_encode_text_reads_it_in_any_class_order() -> None:
    world = class_names()
    names = [world[c] for c in compute_class_order(3)]
    by_id = load_descriptions(SHAPES_DESCRIPTIONS, names)
    assert sorted(by_id) == list(range(80))
    assert by_id[0] == compute_class_descriptions([names[0]])[names[0]]


def test_encode_text_cli_with_the_descriptions_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sage_cli.cli import app

    prepared = tmp_path / "prepared"
    prepared.mkdir()
    names = class_names()
    manifest = {"sample_id": np.arange(80), "path": [f"x{i}.png" for i in range(80)],
                "label": np.arange(80), "split": ["train"] * 80}
    artifacts.write_table(prepared, artifacts.MANIFEST, manifest)
    artifacts.write_table(prepared, artifacts.CLASSES, compute_class_table(names, np.arange(80), many=100, few=20))
    artifacts.write_record(prepared, artifacts.PREPARE_RECORD, artifacts.build_record("prepare", {"d": 1}))
    out = tmp_path / "text"
    result = CliRunner().invoke(app, ["encode-text", "--prepared", str(prepared), "--model", TOY_MODEL,
                                      "--pretrained", str(TOY_WEIGHTS), "--templates", "none", "--descriptions",
                                      str(SHAPES_DESCRIPTIONS), "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    texts = pq.read_table(out / artifacts.TEXT_CACHE.filename).to_pandas()
    assert len(texts) == 80 * 4
    assert set(texts["source"]) == {"description"}
    assert texts.loc[texts["class_id"] == names.index("purple star"), "text"].tolist()[1] == "a purple star in a violet colour."
