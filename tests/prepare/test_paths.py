"""Listed image paths: absolute paths under the root work, paths leading outside it are refused
unless --allow-outside-root (``..``, an absolute path elsewhere, a symlinked folder or file)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sage_cli import artifacts
from sage_cli.cli import app
from sage_cli.errors import SageError
from sage_cli.prepare import PrepareConfig, run

runner = CliRunner()


def make_csv(tmp_path: Path, rows: list[str]) -> Path:
    """csvdata/img/{a,b,c}.png and csvdata/labels.csv with ``rows`` (path,label), plus outside/x.png."""
    root = tmp_path / "csvdata"
    (root / "img").mkdir(parents=True)
    for name in ("a", "b", "c"):
        (root / "img" / f"{name}.png").touch()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "x.png").touch()
    (root / "labels.csv").write_text("path,label\n" + "".join(f"{r}\n" for r in rows))
    return root


def test_an_absolute_path_under_the_root_is_found(tmp_path: Path) -> None:
    root = make_csv(tmp_path, [])
    (root / "labels.csv").write_text(f"path,label\n{root / 'img' / 'a.png'},cat\nimg/b.png,dog\n")
    result = run(PrepareConfig("csv", tmp_path / "out", root=root))
    assert result.record["counts"]["train"] == 2 and result.record["dropped"] == 0
    manifest = artifacts.read_table(tmp_path / "out", artifacts.MANIFEST).to_pandas()
    assert manifest["path"].tolist() == [str(root / "img" / "a.png"), "img/b.png"]


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlinked folder", "symlinked file"])
def test_paths_leading_outside_the_root_are_refused(tmp_path: Path, kind: str) -> None:
    root = make_csv(tmp_path, [])
    if kind == "dotdot":
        path = "../outside/x.png"
    elif kind == "absolute":
        path = str(tmp_path / "outside" / "x.png")
    elif kind == "symlinked folder":
        (root / "link").symlink_to(tmp_path / "outside")
        path = "link/x.png"
    else:
        (root / "img" / "evil.png").symlink_to(tmp_path / "outside" / "x.png")
        path = "img/evil.png"
    (root / "labels.csv").write_text(f"path,label\nimg/a.png,cat\n{path},dog\nimg/b.png,dog\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["prepare", "csv", "--root", str(root), "--out", str(out)])
    assert result.exit_code == 1
    assert result.output.replace("\n", "") == (f"error: 1 listed image path(s) resolve outside {root}, e.g. "
                                               f"{path!r}; pass --allow-outside-root to accept them")
    assert not out.exists()
    result = runner.invoke(app, ["prepare", "csv", "--root", str(root), "--out", str(out), "--allow-outside-root"])
    assert result.exit_code == 0, result.output
    assert artifacts.read_table(out, artifacts.MANIFEST).to_pandas()["path"].tolist()[1] == path


def test_a_symlink_inside_the_root_is_fine(tmp_path: Path) -> None:
    root = make_csv(tmp_path, ["img/a.png,cat", "img/alias.png,dog"])
    (root / "img" / "alias.png").symlink_to(root / "img" / "b.png")
    result = run(PrepareConfig("csv", tmp_path / "out", root=root))
    assert result.record["counts"]["train"] == 2


def test_a_dangling_link_is_missing_not_outside(tmp_path: Path) -> None:
    root = make_csv(tmp_path, ["img/a.png,cat", "img/gone.png,dog"])
    (root / "img" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(SageError, match=r"1 listed image\(s\) under .* are bad \(1 missing\)"):
        run(PrepareConfig("csv", tmp_path / "out", root=root))
