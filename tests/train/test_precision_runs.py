"""--precision on a real run (sage-tiny on the synthetic fixture, CPU autocast): fp16 trains with
LIFT's GradScaler, checkpoints its state and resumes to the uninterrupted run's weights; fp32 and
fp16 enter the fingerprint, auto (the default) does not."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from sage_cli.train import build_train_config, run
from sage_cli.train.checkpoint import STATE, Position, load_checkpoint_state, write_manifest, write_state
from sage_cli.train.config import identity_of

OPTIONS = {"method": "sage", "batch_size": 8, "device": "cpu", "num_workers": 0, "log_every": 1, "seed": 0,
           "epochs": 2, "checkpoint_every": 3, "lr": 0.05, "precision": "fp16"}  # 12 steps, checkpoints 3, 6, 9, 12


def _config(prepared: Path, text: Path, out: Path, **options: Any):
    return build_train_config({"prepared": prepared, "text_cache": text, "out": out, **OPTIONS, **options})


def _kill_after_step_9(out: Path) -> None:
    """Make a finished run look killed after its step-9 checkpoint (mid-epoch 2)."""
    for name in ("train.json", "adapter.safetensors", "checkpoints/last.json"):
        (out / name).unlink()
    shutil.rmtree(out / "checkpoints" / "step-00000012")


def _scaler(out: Path, step: int) -> dict[str, Any]:
    return load_checkpoint_state(out / "checkpoints" / f"step-{step:08d}")["scaler"]


@pytest.fixture(scope="module")
def fp16_run(synthetic_prepared: Path, synthetic_text_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    return run(_config(synthetic_prepared, synthetic_text_cache, tmp_path_factory.mktemp("fp16") / "run"))


def test_fp16_trains_and_checkpoints_its_scaler(fp16_run) -> None:
    assert fp16_run.record["precision"] == "fp16-autocast"
    assert fp16_run.record["inputs"]["config"]["options"]["precision"] == "fp16"  # in the fingerprint
    assert fp16_run.record["steps"] == 12 and all(torch.isfinite(p).all() for p in
                                                  load_file(str(fp16_run.out / "adapter.safetensors")).values())
    scaler = _scaler(fp16_run.out, 12)
    assert set(scaler) == {"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"}
    assert (scaler["growth_factor"], scaler["backoff_factor"], scaler["growth_interval"]) == (2.0, 0.5, 2000)
    # LIFT's initial scale 2**16 backs off by halves on overflowing steps: a power of two no larger
    assert scaler["scale"] <= 2.0**16 and scaler["scale"] == 2.0 ** round(torch.tensor(scaler["scale"]).log2().item())
    # the fp16 tower's LayerNorms and frozen weights stay float32 (only bf16 casts frozen weights)
    assert all(p.dtype == torch.float32 for p in fp16_run.classifier.visual.parameters())


def test_fp16_resume_equals_the_uninterrupted_run(fp16_run, synthetic_prepared: Path, synthetic_text_cache: Path,
                                                  tmp_path: Path) -> None:
    out = tmp_path / "b"
    shutil.copytree(fp16_run.out, out)
    _kill_after_step_9(out)
    resumed = run(_config(synthetic_prepared, synthetic_text_cache, out, resume=True))
    a = load_file(str(fp16_run.out / "adapter.safetensors"))
    b = load_file(str(resumed.out / "adapter.safetensors"))
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6, rtol=0), name
    assert _scaler(resumed.out, 12) == _scaler(fp16_run.out, 12)
    assert resumed.record["final_eval"] == fp16_run.record["final_eval"]


def test_a_checkpoint_without_scaler_state_resumes_with_a_fresh_scaler(fp16_run, synthetic_prepared: Path,
                                                                       synthetic_text_cache: Path,
                                                                       tmp_path: Path) -> None:
    """A checkpoint written before --precision (no scaler state) resumes; the scaler starts at 2**16 again."""
    out = tmp_path / "old"
    shutil.copytree(fp16_run.out, out)
    _kill_after_step_9(out)
    step_9 = out / "checkpoints" / "step-00000009"
    state = load_checkpoint_state(step_9)
    del state["scaler"]
    write_state(step_9 / STATE, state)
    write_manifest(step_9, Position(**state["position"]))
    resumed = run(_config(synthetic_prepared, synthetic_text_cache, out, resume=True))
    assert resumed.record["steps"] == 12 and _scaler(resumed.out, 12)["scale"] <= 2.0**16


def test_precision_enters_the_fingerprint_only_off_its_default(synthetic_prepared: Path,
                                                                synthetic_text_cache: Path) -> None:
    identity = {p: identity_of(_config(synthetic_prepared, synthetic_text_cache, Path("o"), precision=p))
                for p in ("auto", "bf16", "fp16", "fp32")}
    assert "precision" not in identity["auto"]["options"]  # recorded runs keep their fingerprints
    for precision in ("bf16", "fp16", "fp32"):
        assert identity[precision]["options"] == {**identity["auto"]["options"], "precision": precision}


def test_fp32_run_records_fp32(synthetic_prepared: Path, synthetic_text_cache: Path, tmp_path: Path) -> None:
    result = run(_config(synthetic_prepared, synthetic_text_cache, tmp_path / "run", precision="fp32", max_steps=2))
    assert result.record["precision"] == "fp32"
    assert "scaler" not in load_checkpoint_state(tmp_path / "run" / "checkpoints" / "step-00000002")


def test_report_and_predict_evaluate_a_run_under_its_precision(fp16_run, synthetic_prepared: Path,
                                                               tmp_path: Path) -> None:
    from sage_cli.predict import PredictConfig, load_model
    from sage_cli.report import ReportConfig
    from sage_cli.report import run as report

    result = report(ReportConfig(out=tmp_path / "report", runs=(fp16_run.out,), device="cpu", figures=False))
    assert result.report["runs"][0]["evaluation"]["precision"] == "fp16-autocast"
    image = synthetic_prepared / "images" / "0.png"
    assert load_model(PredictConfig(run=fp16_run.out, images=(image,), device="cpu"))[-1] == "fp16"
