"""benchmarks/gpu/: the one-shot GPU check. The dry run prints the GPU plan (preset guidance tokens,
input figures, steps sized past the DataLoader's prefetch) and writes nothing; the CPU smoke runs
every step through run.sh with a brought wheel installed into a target folder, one figure forced
to fail, and returns at most 8 files with the work outside them; the runner's parts (a failure
recorded and its dependents skipped, the budget, time limits, folder checks) on their own."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU_DIR = ROOT / "benchmarks" / "gpu"
SCRIPT = GPU_DIR / "run.sh"
RETURNED = {"summary.json", "summary.md", "results.tar.gz", "gpu_tests.log", "bench.log"}
# model steps (eager; compiled at 1,000 classes), input (plain / cached at 4 and 16 workers), encode-text,
# sage train runs, report
GPU_FIGURES = 4 + 2 + 4 + 2 + 8 + 2


def _run(*args: str, env: dict[str, str] | None = None, python: str | None = sys.executable
         ) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    full.pop("SAGE_PYTHON", None)
    if python is not None:
        full["SAGE_PYTHON"] = python
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=full, timeout=600)


def _module(name: str):
    if str(GPU_DIR) not in sys.path:
        sys.path.insert(0, str(GPU_DIR))
    return importlib.import_module(name)


def _write_wheel(directory: Path, name: str) -> Path:
    """A minimal pure-Python wheel holding the package ``name`` (made by hand: no network, no build)."""
    directory.mkdir(parents=True)
    wheel = directory / f"{name}-0.1-py3-none-any.whl"
    info = f"{name}-0.1.dist-info"
    files = {f"{name}/__init__.py": "VALUE = 42\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def test_dry_run_prints_the_gpu_plan_and_writes_nothing(tmp_path: Path) -> None:
    result = _run("--dry-run", "--cpus", "16", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    plan = shown["plan"]
    assert plan["model"] == "ViT-B-16" and plan["batch"] == 128 and plan["classes"] == [1000, 8142]
    assert plan["guidance_tokens"] == [None, 1024]  # ImageNet-LT's preset: M = C; iNaturalist's: 1,024
    assert len(shown["figures"]) == GPU_FIGURES and "train_sage_c8142_fast" in shown["figures"]
    assert {"input_plain_w4", "input_cached_w4", "input_plain_w16", "input_cached_w16"} <= set(shown["figures"])
    # 16 workers ask for 32 batches at once: the training runs go well past them, in one epoch
    assert plan["num_workers"] == 16 and plan["train_steps"] == 96 and plan["images"] == 96 * 128
    assert (plan["train_steps"] - 2 * plan["num_workers"]) // plan["log_every"] == 8  # steady windows
    steps = {s["name"]: s for s in shown["steps"]}
    assert steps["train_sage_c8142_plain"]["needs"] == ["setup_data_c8142", "encode_text_c8142"]
    # expected time by arithmetic: twice, with machine starts, inside 15 minutes; the budget inside 10
    assert steps["model_sage_c1000_compile"]["needs"] == ["model_sage_c1000"]  # its FLOPs: the eager step's count
    assert 300 < shown["estimated_wall_s"] < 390 and plan["budget_s"] + plan["step_timeout_s"] < 600
    assert len(shown["returned_files"]) <= 8
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cpu_smoke_runs_every_step_installs_wheels_and_returns_few_files(tmp_path: Path) -> None:
    out, site, scratch = tmp_path / "out", tmp_path / "site", tmp_path / "tmp"
    wheel = _write_wheel(tmp_path / "wheels", "sagebenchprobe")
    scratch.mkdir()
    result = _run("--cpu-smoke", "--out", str(out), "--wheels", str(wheel.parent), "--site", str(site),
                  "--fail-figure", "model_lift_c10",
                  env={"SAGE_BENCH_MODULES": "open_clip sagebenchprobe", "TMPDIR": str(scratch)})
    assert result.returncode == 1, result.stderr[-3000:]  # one step failed, on purpose
    assert "installing 1 wheels" in result.stderr and (site / "sagebenchprobe" / "__init__.py").is_file()
    returned = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert {str(p) for p in returned} == RETURNED and len(returned) <= 8  # five plain files, no folder

    summary = json.loads((out / "summary.json").read_text())
    steps = {s["name"]: s for s in summary["steps"]}
    assert summary["state"] == "complete" and summary["counts"] == {"ok": 26, "failed": 1, "skipped": 1}
    assert steps["model_lift_c10"]["error"] == "RuntimeError: forced failure of model_lift_c10 (--fail-figure)"
    assert steps["model_lift_c10_compile"]["status"] == "skipped"  # it needs the failed eager step
    compiled = steps["model_sage_c10_compile"]["record"]  # --compile's call, with the smoke's backend
    assert compiled["compiled"] == "aot_eager" and compiled["images_per_s"] > 0 and 0 < compiled["mfu"] < 1
    assert steps["input_plain_w0"]["record"]["uint8_batches"] and steps["input_cached_w1"]["record"]["uint8_batches"]
    work = Path(summary["work"])
    assert work.parent == scratch and not work.is_relative_to(out) and not work.exists()  # removed at the end
    environment = summary["environment"]
    assert environment["wheels_installed"] == [wheel.name] and environment["wheel_site"] == str(site)

    train = steps["train_lift_c10_plain"]["record"]
    assert train["mfu"] is None and train["images_per_s"] > 0 and train["steps"] == 4  # no FLOP count: no MFU
    assert len(train["steady_windows_images_per_s"]) == 3  # 4 windows of one step, the first left out
    sage = steps["train_sage_c20_fast"]["record"]
    assert sage["guidance_tokens"] == 8 and sage["input"] == "fast (--image-cache)" and 0 < sage["mfu"] < 1
    assert steps["model_sage_c20"]["record"]["guidance_tokens"] == 8
    assert steps["train_sage_c10_plain"]["record"]["guidance_tokens"] == 10  # no preset: M = C
    assert steps["input_cached_w1"]["record"]["warmup_batches"] == 2  # one worker asked for 2 batches at once
    assert steps["input_plain_w0"]["record"]["warmup_batches"] == 1 and steps["input_plain_w0"]["record"]["images_per_s"] > 0
    assert steps["encode_text_c20"]["record"]["texts"] == 20 * 10
    assert steps["gpu_tests"]["record"]["exit_code"] == 0 and "skipped" in (out / "gpu_tests.log").read_text()
    assert steps["sdpa_guidance"]["record"]["shapes"]["c20"]["tokens"] == 8
    assert steps["sdpa_guidance"]["record"]["shapes"]["c20"]["backends"]["MATH"]["ok"] is True

    with tarfile.open(out / "results.tar.gz") as archive:
        names = set(archive.getnames())
    assert {f"results/{name}.json" for name in steps} <= names
    assert "results/train_sage_c20_fast/metrics.jsonl" in names
    table = (out / "summary.md").read_text()
    assert "| figure | lift, 10 | sage, 10 | lift, 20 | sage, 20 |" in table
    assert "| model step, images/s (MFU) | failed |" in table
    assert "model_lift_c10" in (out / "bench.log").read_text()


@pytest.mark.parametrize("python", [sys.executable, None])  # None: the repo's .venv, else the host's python3
def test_missing_open_clip_without_wheels_stops_with_one_line(tmp_path: Path, python: str | None) -> None:
    (tmp_path / "wheels").mkdir()
    result = _run("--cpu-smoke", "--out", str(tmp_path / "out"), "--wheels", str(tmp_path / "wheels"),
                  env={"SAGE_BENCH_MODULES": "sagebenchprobe_absent"}, python=python)
    venv = ROOT / ".venv" / "bin" / "python"
    used = python or (str(venv) if os.access(venv, os.X_OK) else shutil.which("python3"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"run.sh: sagebenchprobe_absent not importable by {used} and no wheels in {tmp_path / 'wheels'}; "
        "download them where there is a network (benchmarks/gpu/README.md)"]
    assert not (tmp_path / "out").exists()


def test_bad_folders_and_unknown_step_are_refused_before_anything_runs(tmp_path: Path) -> None:
    bench = _module("bench_gpu")
    out = tmp_path / "out"
    assert bench.main(["--cpu-smoke", "--out", str(out), "--work", str(out / "work")]) == 2
    assert bench.main(["--cpu-smoke", "--out", str(out), "--fail-figure", "nope"]) == 2
    assert not out.exists()
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert bench.main(["--cpu-smoke", "--out", str(out), "--work", str(tmp_path / "w")]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] and not (tmp_path / "w").exists()


def test_check_folders_allows_only_this_commands_files_with_force(tmp_path: Path) -> None:
    runner = _module("bench_runner")
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    with pytest.raises(runner.BenchError, match="--force replaces them"):
        runner.check_folders(out, tmp_path / "work", force=False)
    runner.check_folders(out, tmp_path / "work", force=True)
    with pytest.raises(runner.BenchError, match="inside --out"):
        runner.check_folders(tmp_path, out, force=True)


def _steps(runner, fail_message: str = "bad value\nsecond line"):
    def fail() -> dict:
        raise ValueError(fail_message)

    return [runner.Step("a", "figure", lambda: {"images_per_s": 5.0}),
            runner.Step("b", "figure", fail),
            runner.Step("c", "figure", lambda: {"images_per_s": 1.0}, needs=("b",)),
            runner.Step("d", "figure", lambda: {"images_per_s": 2.0}, needs=("a",))]


def test_runner_records_a_failure_skips_what_needs_it_and_runs_the_rest(tmp_path: Path) -> None:
    runner = _module("bench_runner")
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    summary = runner.Runner(out, work, {"mode": "test"}).run_all(_steps(runner))
    status = {s["name"]: (s["status"], s.get("error")) for s in summary["steps"]}
    assert status == {"a": ("ok", None), "b": ("failed", "ValueError: bad value"), "c": ("skipped", "needs b (failed)"),
                      "d": ("ok", None)}
    assert summary["counts"] == {"ok": 2, "failed": 1, "skipped": 1} and summary["state"] == "complete"
    assert json.loads((out / "summary.json").read_text())["steps"][3]["record"] == {"images_per_s": 2.0}
    with tarfile.open(out / "results.tar.gz") as archive:
        assert sorted(archive.getnames()) == ["results/a.json", "results/b.json", "results/c.json", "results/d.json"]


def test_runner_skips_a_step_that_would_end_past_the_budget(tmp_path: Path) -> None:
    runner = _module("bench_runner")
    (tmp_path / "out").mkdir()
    steps = [runner.Step("long", "figure", lambda: {}, estimate_s=1e6), runner.Step("unknown", "figure", lambda: {})]
    summary = runner.Runner(tmp_path / "out", tmp_path / "work", {}, budget_s=100).run_all(steps)
    assert [s["status"] for s in summary["steps"]] == ["skipped", "ok"]
    assert summary["steps"][0]["error"].startswith("budget: ") and "> 100 s" in summary["steps"][0]["error"]


def test_a_step_past_its_time_limit_fails_and_the_next_runs(tmp_path: Path) -> None:
    runner = _module("bench_runner")
    (tmp_path / "out").mkdir()

    def hang() -> dict:
        import time

        for _ in range(600):  # 60 s unless interrupted
            time.sleep(0.1)
        return {}

    steps = [runner.Step("hang", "figure", hang), runner.Step("next", "figure", lambda: {"x": 1})]
    summary = runner.Runner(tmp_path / "out", tmp_path / "work", {}, step_timeout_s=0.5).run_all(steps)
    assert [(s["status"], s.get("error")) for s in summary["steps"]] == [
        ("failed", "StepTimeout: ran past its 0.5 s limit"), ("ok", None)]


def test_run_bounded_kills_a_command_past_its_timeout(tmp_path: Path) -> None:
    runner = _module("bench_runner")
    log = tmp_path / "log"
    command = [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"]
    with pytest.raises(runner.StepTimeout, match="ran past 2 s; killed"):
        runner.run_bounded(command, log, timeout_s=2)
    assert log.read_text().splitlines()[-1] == "[run_bounded] killed after 2 s"
    code, last = runner.run_bounded([sys.executable, "-c", "print('4 passed in 1.0s')"], log, timeout_s=60)
    assert (code, last) == (0, "4 passed in 1.0s")


def test_steady_windows_start_after_the_prefetched_batches() -> None:
    bench = _module("bench_gpu")
    windows = [{"kind": "train", "step": s, "steps": 8, "images_per_s": float(s)} for s in range(8, 97, 8)]
    windows.insert(3, {"kind": "eval", "step": 32})
    # 16 workers: 32 batches asked for at once; windows (32, 40] ... (88, 96] are steady
    assert bench.steady_windows(windows, 32) == [40.0, 48.0, 56.0, 64.0, 72.0, 80.0, 88.0, 96.0]
    assert bench.steady_windows(windows, 0) == [float(s) for s in range(16, 97, 8)]  # the first window left out
    assert bench.steady_windows([], 32) == []
