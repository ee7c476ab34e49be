"""Per-method loss defaults: sage uses the compensation factor, the baselines plain LA."""

from __future__ import annotations

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
