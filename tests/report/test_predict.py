"""`sage predict` on a trained tiny run: the report's scores for the same images, names, errors.

Lives beside the report tests: predict shares the report's evaluation path and its tiny data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from sage_cli import artifacts
from sage_cli.cli import app
from sage_cli.errors import SageError
from sage_cli.predict import PredictConfig, find_images, run

runner = CliRunner()


@pytest.fixture()
def loud_again() -> Iterator[None]:
    """``-q`` sets the shared console quiet; put it back for the tests that follow."""
    yield
    from sage_cli.console import configure_output

    configure_output()


@pytest.fixture(scope="module")
def trained_run(tiny_data, tmp_path_factory: pytest.TempPathFactory) -> Path:
    prepared, text = tiny_data
    out = tmp_path_factory.mktemp("predict") / "lift"
    result = runner.invoke(app, ["train", "--prepared", str(prepared), "--text-cache", str(text), "--method", "lift",
                                 "--out", str(out), "--max-steps", "2", "--batch-size", "4", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return out


def test_quiet_train_prints_one_result_line(tiny_data, trained_run: Path, loud_again: None) -> None:
    prepared, text = tiny_data
    args = ["-q", "train", "--prepared", str(prepared), "--text-cache", str(text), "--method", "lift", "--out",
            str(trained_run), "--max-steps", "2", "--batch-size", "4", "--device", "cpu"]
    result = runner.invoke(app, args)  # the same run: reused, still one line
    record = json.loads((trained_run / "train.json").read_text())
    final = record["final_eval"]
    groups = ", ".join(f"{g} {100 * final[g]:.1f}" for g in ("many", "medium", "few"))
    assert result.exit_code == 0 and result.stdout == (
        f"{trained_run}: {final['split']} top-1 {100 * final['top1']:.1f} ({groups}), 2 steps\n")


def test_predict_matches_the_report_and_names_classes(tiny_data, trained_run: Path, tmp_path: Path) -> None:
    from sage_cli.report import ReportConfig
    from sage_cli.report import run as report

    prepared, _ = tiny_data
    report(ReportConfig(out=tmp_path / "report", runs=(trained_run,), device="cpu", figures=False))
    cached = artifacts.read_table(trained_run, artifacts.PREDICTIONS).to_pandas()
    manifest = artifacts.read_table(prepared, artifacts.MANIFEST).to_pandas().set_index("sample_id")
    images = prepared / "images"
    test_files = [images / manifest.loc[i, "path"] for i in cached["sample_id"]]
    result = runner.invoke(app, ["predict", str(trained_run), *map(str, test_files), "--json", "--device", "cpu",
                                 "--batch-size", "5", "-k", "3"])
    assert result.exit_code == 0, result.output
    predicted = json.loads(result.stdout)
    assert [p["image"] for p in predicted] == [str(f) for f in test_files]
    names = ["apple", "bear", "cat", "dog"]
    for entry, top, scores in zip(predicted, cached["top_classes"], cached["top_scores"]):
        assert [c["class_id"] for c in entry["top"]] == list(top[:3])  # batches of 5 vs the report's 64
        np.testing.assert_allclose([c["score"] for c in entry["top"]], scores[:3], atol=1e-5)
        assert [c["name"] for c in entry["top"]] == [names[c] for c in top[:3]]


def test_predict_a_directory_table_and_quiet_line(trained_run: Path, tmp_path: Path, loud_again: None) -> None:
    from PIL import Image

    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ("b.png", "a.jpg", "sub/c.png"):
        Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    assert [p.relative_to(folder).as_posix() for p in find_images((folder,))] == ["a.jpg", "b.png", "sub/c.png"]
    result = run(PredictConfig(run=trained_run, images=(folder,), top_k=10, device="cpu"))
    assert len(result.predictions) == 3
    assert all(len(p["top"]) == 4 for p in result.predictions)  # k capped at the 4 classes
    assert all(abs(sum(c["score"] for c in p["top"]) - 1) < 1e-5 for p in result.predictions)
    shown = runner.invoke(app, ["predict", str(trained_run), str(folder), "--device", "cpu"])
    assert shown.exit_code == 0 and "a.jpg" in shown.output and "#5" not in shown.output and "#4" in shown.output
    quiet = runner.invoke(app, ["-q", "predict", str(trained_run), str(folder), "--device", "cpu"])
    lines = quiet.stdout.strip().splitlines()
    assert quiet.exit_code == 0 and len(lines) == 3
    first = result.predictions[0]
    assert lines[0] == f"{first['image']}\t{first['top'][0]['name']}\t{first['top'][0]['score']:.4f}"


def test_predict_errors_are_one_line(trained_run: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    for args, message in ((["nope.png"], "nope.png: no such file or directory"),
                          ([str(bad)], "bad.png: cannot read image"),
                          ([str(tmp_path / "empty")], "no such file")):
        result = runner.invoke(app, ["predict", str(trained_run), *args, "--device", "cpu"])
        assert result.exit_code == 1, result.output
        assert message in result.output and result.output.strip().count("\n") == 0
    (tmp_path / "empty").mkdir()
    with pytest.raises(SageError, match="holds no image file"):
        run(PredictConfig(run=trained_run, images=(tmp_path / "empty",)))
    with pytest.raises(SageError, match="nothing to classify"):
        PredictConfig(run=trained_run, images=())
    result = runner.invoke(app, ["predict", str(tmp_path), str(bad)])
    assert result.exit_code == 1 and "train.json: missing" in result.output


def write_png_header(path: Path, width: int, height: int) -> Path:
    """A PNG of a 1-bit ``width`` x ``height`` image with no pixel data: PIL reads its size, not its pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def test_predict_on_an_image_over_the_bomb_limit_is_one_line(trained_run: Path, tmp_path: Path) -> None:
    """A >178 Mpx PNG raised PIL's DecompressionBombError through the command: a traceback."""
    huge = write_png_header(tmp_path / "huge.png", 20_000, 10_000)  # 200 Mpx
    result = runner.invoke(app, ["predict", str(trained_run), str(huge), "--device", "cpu"])
    assert result.exit_code == 1, result.output
    assert result.output.strip() == (f"error: {huge}: cannot read image (Image size (200000000 pixels) exceeds limit "
                                     "of 178956970 pixels, could be decompression bomb DOS attack.)")


def test_an_image_over_the_warning_size_gets_one_warning_naming_it(tmp_path: Path) -> None:
    """89-178 Mpx: PIL's raw `DecompressionBombWarning` / `warnings.warn(` lines, with no file name."""
    import subprocess
    import sys

    from PIL import Image

    root = tmp_path / "data"
    (root / "train" / "cat").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(root / "train" / "cat" / "a.png")
    big = write_png_header(root / "train" / "cat" / "big.png", 10_000, 10_000)  # 100 Mpx, no pixels: dropped
    result = subprocess.run([sys.executable, "-m", "sage_cli", "prepare", "folder", "--root", str(root), "--out",
                             str(tmp_path / "out"), "--verify", "decode", "--skip-bad"],
                            capture_output=True, text=True, env={**os.environ, "COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines.count(f"WARNING  {big}: a 10000x10000 image (100 Mpx), over PIL's decompression-bomb warning size "
                       "(89 Mpx); read all the same") == 1
    assert "DecompressionBombWarning" not in result.stderr and "warnings.warn" not in result.stderr


def test_an_error_in_a_dataloader_worker_is_its_own_one_line(trained_run: Path, tmp_path: Path) -> None:
    """torch re-raises a worker's SageError with the worker's traceback as its message: many lines."""
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    result = runner.invoke(app, ["predict", str(trained_run), str(bad), "--device", "cpu", "--workers", "1"])
    assert result.exit_code == 1, result.output
    assert result.output.strip() == f"error: {bad}: cannot read image (cannot identify image file '{bad}')"
