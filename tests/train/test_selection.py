"""--keep best, --select-metric and --patience: a run whose val peaks early keeps that evaluation's
weights, stops where patience runs out, resumes with both, and report / predict / export use and
name the kept weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from sage_cli import artifacts
from sage_cli.errors import SageError
from sage_cli.train import build_train_config, load_trained_classifier, run
from sage_cli.train import loop
from sage_cli.train.selection import Selection, compute_selection_value

# val top-1 of the scripted evaluations, one per epoch (6 steps each): it peaks at the 2nd (step 12)
SCRIPT = (0.5, 0.75, 0.5, 0.25, 0.6, 0.1)


def _config(prepared: Path, text: Path, out: Path, **options: Any):
    base = {"prepared": prepared, "text_cache": text, "out": out, "method": "lift", "batch_size": 8,
            "device": "cpu", "num_workers": 0, "log_every": 1, "seed": 0, "epochs": 6, "lr": 0.01}
    return build_train_config({**base, **options})


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Evaluations score SCRIPT[i] (from ``start``) whatever the model; each eval's weights are recorded by step."""
    state: dict[str, Any] = {"start": 0, "calls": 0, "weights": {}}
    real = loop.Trainer.run_eval

    def summarise(predictions, labels, groups):
        value = SCRIPT[state["start"] + state["calls"]]
        state["calls"] += 1
        return {"samples": len(labels), "top1": value, "many": value, "medium": value, "few": value}

    def run_eval(self, *args, **kwargs):
        state["weights"][self.position.global_step] = {k: v.clone() for k, v in self.task.trainable_state_dict().items()}
        return real(self, *args, **kwargs)

    monkeypatch.setattr(loop, "summarise_predictions", summarise)
    monkeypatch.setattr(loop.Trainer, "run_eval", run_eval)
    return state


def _evals(run_dir: Path) -> list[int]:
    return [e["step"] for e in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if e["kind"] == "eval"]


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name].float(), b[name].float()), name


def test_selection_values_and_ties() -> None:
    result = {"step": 6, "epoch": 0, "split": "val", "top1": 0.5, "many": 0.9, "medium": 0.6, "few": None}
    assert compute_selection_value(result, "top1") == 0.5
    assert compute_selection_value(result, "few") is None
    assert compute_selection_value(result, "mean-groups") == pytest.approx(0.75)  # (0.9 + 0.6) / 2: few has no images
    selection = Selection("top1", patience=2, keep_best=True)
    weights = {"w": torch.ones(2)}
    assert selection.observe({**result, "step": 6}, weights)
    assert not selection.observe({**result, "step": 12}, {"w": torch.zeros(2)})  # a tie is not better: the first stays
    assert selection.best["step"] == 6 and torch.equal(selection.weights["w"], torch.ones(2))
    assert selection.since_best == 1 and not selection.exhausted
    assert not selection.observe({**result, "step": 18, "top1": 0.25}, weights)
    assert selection.exhausted
    with pytest.raises(SageError, match="^select_metric few: the val split has no images for it at step 6; "):
        Selection("few", 0, True).observe(result, weights)


def test_keep_best_and_patience_need_evaluations_during_the_run(tmp_path: Path) -> None:
    for option in ({"keep": "best"}, {"patience": 2}):
        with pytest.raises(SageError, match="^--keep best and --patience follow evaluations during the run; "
                           "--eval-every is 0"):
            _config(tmp_path, tmp_path, tmp_path / "run", eval_every=0, **option)
    with pytest.raises(SageError, match="--patience"):
        _config(tmp_path, tmp_path, tmp_path / "run", patience=-1)
    with pytest.raises(SageError, match="--select-metric"):
        _config(tmp_path, tmp_path, tmp_path / "run", select_metric="top5")


def test_best_is_the_early_peak_and_patience_stops_the_run(synthetic_prepared: Path, synthetic_text_cache: Path,
                                                            tmp_path: Path, scripted: dict[str, Any]) -> None:
    result = run(_config(synthetic_prepared, synthetic_text_cache, tmp_path / "run", keep="best", patience=2))
    out, record = result.out, result.record
    # evals at 6 (0.5, best), 12 (0.75, best), 18 (0.5: 1 without), 24 (0.25: 2 without -> stop), of 36 planned
    assert _evals(out) == [6, 12, 18, 24]
    assert record["steps"] == 24 and record["epochs_completed"] == 4
    assert record["early_stop"] == {"step": 24, "epoch": 4, "patience": 2, "planned_steps": 36}
    assert record["kept"] == {"keep": "best", "file": "best.safetensors", "step": 12, "epoch": 1, "split": "val",
                              "metric": "top1", "value": 0.75}
    best, last = load_file(str(out / "best.safetensors")), load_file(str(out / "adapter.safetensors"))
    _assert_same(best, scripted["weights"][12])
    _assert_same(last, scripted["weights"][24])
    assert any(not torch.equal(best[k], last[k]) for k in best)
    assert record["files"]["best.safetensors"] == artifacts.sha256_file(out / "best.safetensors")  # sealed
    classifier = load_trained_classifier(out).classifier  # what report, predict and export load
    _assert_same(classifier.trainable_state_dict(), scripted["weights"][12])


def test_last_is_kept_by_default_and_named(synthetic_prepared: Path, synthetic_text_cache: Path, tmp_path: Path,
                                           scripted: dict[str, Any]) -> None:
    result = run(_config(synthetic_prepared, synthetic_text_cache, tmp_path / "run", epochs=2, select_metric="few"))
    assert not (result.out / "best.safetensors").exists() and result.record["early_stop"] is None
    assert result.record["kept"] == {"keep": "last", "file": "adapter.safetensors", "step": 12, "epoch": 2,
                                     "split": "val", "metric": "few", "value": 0.75}


def test_resume_keeps_the_best_so_far_and_the_patience_count(synthetic_prepared: Path, synthetic_text_cache: Path,
                                                              tmp_path: Path, scripted: dict[str, Any]) -> None:
    options = {"keep": "best", "patience": 3}
    straight = run(_config(synthetic_prepared, synthetic_text_cache, tmp_path / "a", **options))
    assert straight.record["steps"] == 30 and straight.record["kept"]["step"] == 12  # 18, 24, 30 not better
    out = tmp_path / "b"
    scripted["calls"] = 0
    run(_config(synthetic_prepared, synthetic_text_cache, out, **options))
    for name in ("train.json", "adapter.safetensors", "best.safetensors", "checkpoints/last.json"):
        (out / name).unlink()
    shutil.rmtree(out / "checkpoints" / "step-00000030")  # killed after the step-24 checkpoint
    assert (out / "checkpoints" / "step-00000024" / "best.safetensors").is_file()
    scripted.update(start=4, calls=0)  # the evaluations after step 24
    resumed = run(_config(synthetic_prepared, synthetic_text_cache, out, resume=True, **options))
    assert resumed.record["steps"] == 30  # 2 evals without a better one were carried over: the 3rd stops it
    assert resumed.record["kept"] == straight.record["kept"]
    _assert_same(load_file(str(out / "best.safetensors")), load_file(str(straight.out / "best.safetensors")))


def test_report_predict_and_export_use_and_name_the_kept_weights(synthetic_prepared: Path,
                                                                  synthetic_text_cache: Path, tmp_path: Path,
                                                                  scripted: dict[str, Any]) -> None:
    from sage_cli import export
    from sage_cli.export import ExportConfig
    from sage_cli.predict import PredictConfig
    from sage_cli.predict import run as predict
    from sage_cli.report import ReportConfig
    from sage_cli.report import run as report

    out = run(_config(synthetic_prepared, synthetic_text_cache, tmp_path / "run", keep="best", patience=2)).out
    from rich.console import Console

    from sage_cli.commands.train import summary_table

    console = Console(width=200)
    with console.capture() as captured:
        console.print(summary_table(artifacts.read_record(out, artifacts.TRAIN_RECORD)))
    table = " ".join(captured.get().split())
    assert "stopped early │ step 24 of 36 (patience 2)" in table
    assert "best.safetensors: best top1 on val, step 12 (epoch 1): 75.0%" in table
    written = report(ReportConfig(out=tmp_path / "report", runs=(out,), device="cpu", figures=False)).report
    entry = written["runs"][0]
    assert entry["weights"] == {"keep": "best", "file": "best.safetensors", "step": 12, "epoch": 1, "split": "val",
                                "metric": "top1", "value": 0.75}
    assert entry["identity"]["checkpoint_sha256"] == artifacts.sha256_file(out / "best.safetensors")
    line = "best.safetensors: best top1 on val, step 12 (epoch 1): 75.0%"
    assert f"- **run**: {line}" in (tmp_path / "report" / "report.md").read_text()
    assert f"<li><b>run</b>: {line}</li>" in (tmp_path / "report" / "report.html").read_text()
    stored = json.loads((tmp_path / "report" / "report.json").read_text())
    assert stored["runs"][0]["weights"] == entry["weights"]

    image = synthetic_prepared / "images" / "0.png"
    assert predict(PredictConfig(run=out, images=(image,), device="cpu")).weights == entry["weights"]
    picked = out / "checkpoints" / "step-00000024" / "adapter.safetensors"
    assert predict(PredictConfig(run=out, images=(image,), device="cpu", checkpoint=picked)).weights == {
        "keep": "checkpoint", "file": str(picked), "step": 24}

    from typer.testing import CliRunner

    from sage_cli.cli import app

    shown = CliRunner().invoke(app, ["predict", str(out), str(image), "--device", "cpu"])
    assert shown.exit_code == 0, shown.output
    assert f"weights: {line}" in shown.output
    shown = CliRunner().invoke(app, ["report", str(out), "--out", str(tmp_path / "report"), "--device", "cpu",
                                     "--no-figures", "--force"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert f"run: {line}" in shown.output  # under the terminal's table

    exported = export.run(ExportConfig(run=out, out=tmp_path / "export", format="torchscript"))
    assert exported.record["weights"] == entry["weights"]
    assert predict(PredictConfig(run=tmp_path / "export", images=(image,), device="cpu")).weights == entry["weights"]


def test_keep_best_without_an_eval_split_is_refused_before_any_work(train_only_prepared, tmp_path: Path) -> None:
    prepared, text = train_only_prepared
    with pytest.raises(SageError, match=r"^--keep best and --patience follow evaluations: .*prepared has neither a "
                                        r"val nor a test split \(sage prepare --val-fraction makes one\)$"):
        run(_config(prepared, text, tmp_path / "run", keep="best"))
    assert not (tmp_path / "run").exists()
