"""``--compile``: the image tower compiled (the loss eager) trains sage-tiny as eager does, within 1e-5.

Two compilers: ``aot_eager`` (dynamo's capture and AOT autograd without code generation: seconds)
checks the capture of every method piece, with no graph break; inductor (what ``--compile`` uses)
is the real thing, marked slow: its first compile on a cold cache takes minutes on a busy 2-core CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from sage_cli.model import SageClassifier
from sage_cli.train import build_train_config, run


def _train(prepared: Path, text: Path, out: Path, method: str = "sage", **options: Any) -> dict[str, torch.Tensor]:
    config = build_train_config({"prepared": prepared, "text_cache": text, "out": out, "method": method,
                                 "batch_size": 8, "device": "cpu", "num_workers": 0, "max_steps": 3, "seed": 0,
                                 "lr": 0.05, "warmup_steps": 0, **options})
    result = run(config)
    assert result.record["config"]["run"]["compile"] is bool(options.get("compile"))
    return load_file(str(out / "adapter.safetensors"))


def _assert_trained_alike(eager: dict[str, torch.Tensor], compiled: dict[str, torch.Tensor]) -> None:
    assert set(compiled) == set(eager)
    ups = [name for name in eager if name.endswith("up.bias")]
    assert ups and all(float(eager[name].abs().max()) > 1e-3 for name in ups)  # zero at init: the steps trained
    for name in sorted(eager):
        torch.testing.assert_close(compiled[name], eager[name], rtol=0, atol=1e-5, msg=name)


@pytest.fixture
def compiled_with(monkeypatch: pytest.MonkeyPatch):
    """Make ``--compile`` use ``backend`` and count the towers it compiled."""
    calls: list[dict[str, Any]] = []
    original = SageClassifier.compile_tower

    def use(backend: str) -> list[dict[str, Any]]:
        def compile_tower(self: SageClassifier, **options: Any) -> None:
            calls.append({**options, "backend": backend})
            original(self, **options, backend=backend)
        monkeypatch.setattr(SageClassifier, "compile_tower", compile_tower)
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        return calls

    yield use
    torch._dynamo.reset()


@pytest.mark.parametrize("method", ["sage", "sage-topk"])  # sage-topk: the frozen pass and the routed one
def test_compiled_tower_captures_whole_and_trains_as_eager(method: str, synthetic_prepared: Path,
                                                           synthetic_text_cache: Path, tmp_path: Path,
                                                           compiled_with) -> None:
    eager = _train(synthetic_prepared, synthetic_text_cache, tmp_path / "eager", method)
    calls = compiled_with("aot_eager")
    compiled = _train(synthetic_prepared, synthetic_text_cache, tmp_path / "compiled", method, compile=True)
    assert len(calls) == 1
    assert sum(torch._dynamo.utils.counters["graph_break"].values()) == 0
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # the tower did go through dynamo
    _assert_trained_alike(eager, compiled)


@pytest.mark.slow
def test_inductor_compiled_tower_trains_sage_tiny_as_eager(synthetic_prepared: Path, synthetic_text_cache: Path,
                                                           tmp_path: Path, compiled_with, monkeypatch) -> None:
    # Inductor's own cache in tmp_path: a kernel it cached under another ATEN_CPU_CAPABILITY (an earlier run of
    # the suite on this machine) can fail to load under this one ("tuple args required").
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor-cache"))
    eager = _train(synthetic_prepared, synthetic_text_cache, tmp_path / "eager")
    compiled_with("inductor")
    compiled = _train(synthetic_prepared, synthetic_text_cache, tmp_path / "compiled", compile=True)
    _assert_trained_alike(eager, compiled)


def test_compile_is_not_part_of_the_run_identity(synthetic_prepared: Path, synthetic_text_cache: Path,
                                                 tmp_path: Path, compiled_with) -> None:
    """The same run with --compile is the same run: it is skipped, not retrained or refused."""
    options = {"prepared": synthetic_prepared, "text_cache": synthetic_text_cache, "out": tmp_path / "run",
               "method": "linear", "batch_size": 8, "device": "cpu", "num_workers": 0, "max_steps": 1}
    first = run(build_train_config(options))
    compiled_with("aot_eager")
    again = run(build_train_config({**options, "compile": True}))
    assert not first.skipped and again.skipped
    assert again.record["fingerprint"] == first.record["fingerprint"]
