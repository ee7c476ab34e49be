"""The reproduction scripts: every one in dry-run mode, and Shapes-LT for real with tiny settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ("imagenet_lt.sh", "places_lt.sh", "inat2018.sh", "cifar100_lt.sh", "shapes_lt.sh")


def _run(script: str, *args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "SAGE": f"{sys.executable} -m sage_cli", **(env or {})}
    return subprocess.run(["bash", str(REPO / "pipelines" / script), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("script", SCRIPTS)
def test_dry_run_prints_the_four_stages(script, tmp_path):
    result = _run(script, "--dry-run", "--work", str(tmp_path / "w"))
    assert result.returncode == 0, result.stderr
    commands = [line for line in result.stdout.splitlines() if line.startswith("+ ")]
    stages = [line.split(" -m sage_cli ")[1].split()[0] for line in commands]
    assert stages[:2] == ["prepare", "encode-text"]
    assert stages[-1] == "report" and set(stages[2:-1]) == {"train"}
    assert not (tmp_path / "w").exists()  # a dry run writes nothing


def test_missing_data_root_says_what_to_download(tmp_path):
    result = _run("imagenet_lt.sh", "--root", str(tmp_path), "--work", str(tmp_path / "w"))
    assert result.returncode == 2
    assert "lacks ImageNet_LT_train.txt" in result.stderr and "image-net.org" in result.stderr


def test_cifar_script_passes_the_imbalance_ratio():
    result = _run("cifar100_lt.sh", "50", "--dry-run")
    assert "--imbalance-ratio 50" in result.stdout and "runs/cifar100_lt_ir50" in result.stdout


@pytest.mark.slow
def test_shapes_lt_runs_for_real_then_skips_everything(tmp_path):
    from sage_cli.world import TOY_WEIGHTS

    if not TOY_WEIGHTS.is_file():
        pytest.skip("toy CLIP weights not shipped")
    env = {"EXTRA_TRAIN_ARGS": "--max-steps 2 --batch-size 16", "DEVICE": "cpu"}
    work = tmp_path / "shapes"
    first = _run("shapes_lt.sh", "--work", str(work), "--methods", "linear sage", env=env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert (work / "report" / "report.html").is_file()
    assert f"report: {work}/report/report.html" in first.stdout
    stamp = (work / "runs" / "sage" / "train.json").stat().st_mtime_ns
    second = _run("shapes_lt.sh", "--work", str(work), "--methods", "linear sage", env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "nothing to do" in second.stdout
    assert (work / "runs" / "sage" / "train.json").stat().st_mtime_ns == stamp


def test_pretrain_recipe_matches_the_shipped_weights_record(tmp_path):
    import json

    from sage_cli.world import TOY_WEIGHTS_V1 as TOY_WEIGHTS  # pretrain_toy.sh is world v1's recipe

    result = _run("pretrain_toy.sh", "--dry-run", "--work", str(tmp_path / "toy"))
    assert result.returncode == 0, result.stderr
    command = next(line for line in result.stdout.splitlines() if line.startswith("+ "))
    shipped = json.loads(TOY_WEIGHTS.with_name("sage_toy.pretrain.json").read_text())["inputs"]
    flags = {"steps": "--steps", "batch_size": "--batch-size", "lr": "--lr", "seed": "--seed",
             "threads": "--threads", "eval_per_class": "--eval-per-class"}
    words = command.split()
    for key, flag in flags.items():  # the script's recipe is the one the shipped weights record
        assert float(words[words.index(flag) + 1]) == float(shipped[key]), flag
    assert not (tmp_path / "toy").exists()


def test_gpus_flag_trains_under_torchrun(tmp_path):
    result = _run("imagenet_lt.sh", "--dry-run", "--gpus", "4", "--work", str(tmp_path / "w"),
                  env={"TORCHRUN": "torchrun"})
    assert result.returncode == 0, result.stderr
    trains = [line for line in result.stdout.splitlines() if " train " in line and line.startswith("+ ")]
    assert len(trains) == 2  # lift and sage
    assert all(line.startswith("+ torchrun --standalone --nproc-per-node 4 -m sage_cli train ") for line in trains)
    bad = _run("imagenet_lt.sh", "--dry-run", "--gpus", "0")
    assert bad.returncode == 2 and "--gpus needs a positive integer" in bad.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_benchmark_and_the_world_encode_lift_s_single_template(script, tmp_path):
    result = _run(script, "--dry-run", "--work", str(tmp_path / "w"))
    encode = next(line for line in result.stdout.splitlines() if " encode-text " in line)
    assert "--templates single" in encode
