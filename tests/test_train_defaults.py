"""Per-method loss defaults: sage uses the compensation factor, the baselines plain LA."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from sage_cli.train import build_train_config


@pytest.mark.parametrize(
    ("method", "given", "expected"),
    [("sage", None, "semantic"), ("lift", None, "none"), ("linear", None, "none"), ("lift", "count", "count")],
)
def test_compensation_default_follows_method(tmp_path, method, given, expected):
    options = {"prepared": tmp_path, "text_cache": tmp_path, "out": tmp_path / "run", "method": method}
    if given is not None:
        options["compensation"] = given
    assert build_train_config(options).loss.compensation == expected


def test_lambda_default_is_the_tuned_value_everywhere(tmp_path):
    """lambda = 0.25 (tuned on Shapes-LT val, docs/world.md): the library, the CLI and the presets agree."""
    from sage_cli.commands import train as train_command
    from sage_cli.config import load_yaml_mapping

    options = {"prepared": tmp_path, "text_cache": tmp_path, "out": tmp_path / "run", "method": "sage"}
    assert build_train_config(options).loss.lam == 0.25
    assert inspect.signature(train_command.command).parameters["lam"].default.default == 0.25
    presets = sorted((Path(__file__).resolve().parents[1] / "sage_cli" / "presets").glob("*.yaml"))
    assert len(presets) >= 6 and all(load_yaml_mapping(p).get("lam", 0.25) == 0.25 for p in presets)
