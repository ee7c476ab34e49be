"""Class names with control characters and terminal escapes: stripped at prepare, with a warning."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sage_cli import artifacts
from sage_cli.errors import SageError
from sage_cli.prepare import PrepareConfig, run
from sage_cli.prepare.names import clean_names

LINK = "[link=file:///etc/passwd]click[/link]"


def test_clean_names_strips_escapes_and_controls() -> None:
    names = ["\x1b[31mred\x1b[0m fox", "tab\tand\nnewline", "\x1b]8;;file:///etc/passwd\x07link\x1b]8;;\x07",
             "bell\x07", LINK, "plain", "plain\x1b[1m"]
    cleaned, warnings = clean_names(names)
    assert cleaned == ["red fox", "tab and newline", "link", "bell", LINK, "plain", "plain (2)"]
    assert len(warnings) == 2
    assert warnings[0].startswith("control characters removed from 5 class name(s): "
                                  "class 0 '\\x1b[31mred\\x1b[0m fox' -> 'red fox'; class 1 ")
    assert "class 6 'plain' -> 'plain (2)'" in warnings[1]
    assert clean_names(["cat", "dog"]) == (["cat", "dog"], [])


def test_a_name_of_control_characters_only_is_an_error() -> None:
    with pytest.raises(SageError, match=r"^class 1 is named '\\x1b\[0m\\x07': nothing is left of the name"):
        clean_names(["cat", "\x1b[0m\x07"])


def test_prepare_strips_control_characters_from_names(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "csvdata"
    (root / "img").mkdir(parents=True)
    for name in ("a", "b", "c"):
        (root / "img" / f"{name}.png").touch()
    (root / "labels.csv").write_text("path,label,split\nimg/a.png,0,train\nimg/b.png,1,train\nimg/c.png,2,train\n")
    names = tmp_path / "names.txt"
    names.write_text(f"\x1b[31mred\x1b[0m\n{LINK}\n[/bold]\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="sage_cli"):
        result = run(PrepareConfig("csv", tmp_path / "out", root=root, classnames=names))
    classes = artifacts.read_table(tmp_path / "out", artifacts.CLASSES).column("name").to_pylist()
    assert classes == ["red", LINK, "[/bold]"]  # markup is text, kept (and escaped wherever printed)
    expected = "control characters removed from 1 class name(s): class 0 '\\x1b[31mred\\x1b[0m' -> 'red'"
    assert result.record["warnings"] == [expected]
    assert [r.getMessage() for r in caplog.records] == [expected]


def test_categories_json_nested_too_deep_is_one_line(tmp_path: Path) -> None:
    from sage_cli.prepare.names import read_categories_json

    path = tmp_path / "categories.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(SageError, match=r"categories\.json: not a list of \{'id', 'name'\} categories \(maximum "
                                        r"recursion depth exceeded"):
        read_categories_json(path)
