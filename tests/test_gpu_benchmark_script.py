"""benchmarks/gpu/run.sh: --dry-run prints the plan and writes nothing; --cpu-smoke runs every figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu" / "run.sh"
GPU_FIGURES = 4 + 2 + 8 + 2  # model steps, encode-text, sage train runs, report


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SAGE_PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=600)


def test_dry_run_prints_the_gpu_plan_and_writes_nothing(tmp_path: Path) -> None:
    result = _run("--dry-run", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout[result.stdout.index("{"):])
    assert plan["plan"]["model"] == "ViT-B-16" and plan["plan"]["batch"] == 128
    assert plan["plan"]["classes"] == [1000, 8142] and len(plan["figures"]) == GPU_FIGURES
    assert "train_sage_c8142_fast" in plan["figures"] and "encode_text_c8142" in plan["figures"]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cpu_smoke_writes_one_json_per_figure(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _run("--cpu-smoke", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    plan = json.loads((out / "plan.json").read_text())
    names = sorted(plan["figures"])
    assert len(names) == GPU_FIGURES and plan["plan"]["model"] == "sage-tiny"
    for name in names:
        figure = json.loads((out / f"{name}.json").read_text())
        assert figure["figure"] == name and figure["machine"]["device"] == "cpu"
        speed = figure.get("images_per_s", figure.get("texts_per_s"))
        assert speed > 0, name
    train = json.loads((out / "train_lift_c10_fast.json").read_text())
    assert train["input"] == "fast (--image-cache)" and train["steps"] == 4
    model = json.loads((out / "model_sage_c20.json").read_text())
    assert model["flops_per_image"] > 0 and 0 < model["mfu"] < 1
    assert json.loads((out / "encode_text_c20.json").read_text())["texts"] == 20 * 10
