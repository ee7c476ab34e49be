"""`sage demo`'s training options (the stages themselves are the CLI's, tested there)."""

from __future__ import annotations

from pathlib import Path

import pytest

import sage_cli.train
from sage_cli import demo
from sage_cli.demo import DemoConfig
from sage_cli.train.config import identity_of


@pytest.mark.parametrize(("method", "augment", "cached"), [("linear", False, True), ("linear", True, False),
                                                          ("lift", False, False), ("sage", False, False)])
def test_the_demo_trains_linear_on_cached_frozen_features(tmp_path: Path, monkeypatch, method: str, augment: bool,
                                                            cached: bool) -> None:
    seen = []
    monkeypatch.setattr(sage_cli.train, "run", lambda config, hooks=None: seen.append(config))
    config = DemoConfig(out=tmp_path / "demo", augment=augment)
    out = demo._train(method, tmp_path / "prepared", tmp_path / "text", config, None)
    assert out == tmp_path / "demo" / "runs" / method
    (train_config,) = seen
    assert train_config.data.feature_cache == (tmp_path / "demo" / "features" if cached else None)
    # the cache is a location, not an input: the run's identity (its fingerprint) is the uncached run's
    uncached = sage_cli.train.build_train_config({**train_config.flat(), "feature_cache": None})
    assert identity_of(train_config) == identity_of(uncached)
