"""End-to-end runs of the train stage on the synthetic fixture with sage-tiny (CPU, seconds)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from sage_cli import artifacts
from sage_cli.encode_text import load_text_cache
from sage_cli.errors import SageError
from sage_cli.train import build_train_config, load_trained_classifier, run

runner = CliRunner()


def _config(prepared: Path, text: Path, out: Path, **options: Any):
    base = {"prepared": prepared, "text_cache": text, "out": out, "method": "sage", "batch_size": 8,
            "device": "cpu", "num_workers": 0, "log_every": 1, "seed": 0}
    return build_train_config({**base, **options})


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sage_run(synthetic_prepared: Path, synthetic_text_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("runs") / "sage"
    config = _config(synthetic_prepared, synthetic_text_cache, out, epochs=6, lr=0.01, warmup_epochs=0.5)
    return run(config)


def test_training_lowers_the_loss(sage_run) -> None:
    losses = [e["loss"] for e in _metrics(sage_run.out) if e["kind"] == "train"]
    assert len(losses) == 36  # 45 images, batch 8 -> 6 steps per epoch, 6 epochs, logged every step
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.5 * first, (first, last)


def test_run_writes_every_output(sage_run, synthetic_prepared: Path, synthetic_text_cache: Path) -> None:
    out = sage_run.out
    assert (out / "adapter.safetensors").is_file() and (out / "train.json").is_file()
    record = artifacts.read_record(out, artifacts.TRAIN_RECORD)
    for key in ("config", "inputs", "model", "trainable_params", "wall_time_s", "images_per_s", "peak_memory",
                "final_eval", "preprocessing", "steps", "fingerprint"):
        assert key in record, key
    assert record["steps"] == 36 and record["epochs_completed"] == 6 and record["images_seen"] == 6 * 45
    inputs = record["inputs"]
    assert inputs["prepared"]["classes_sha256"] == artifacts.sha256_file(synthetic_prepared / "classes.parquet")
    assert inputs["prepared"]["fingerprint"] == artifacts.read_record(synthetic_prepared, "prepare.json")["fingerprint"]
    assert inputs["text_cache"]["fingerprint"] == artifacts.read_record(synthetic_text_cache, "encode.json")["fingerprint"]
    assert record["model"]["model"] == "sage-tiny" and record["model"]["pretrained"] == "none"
    assert record["preprocessing"]["interpolation"] == "bicubic" and "RandomResizedCrop" in record["preprocessing"]["train"]
    assert set(record["final_eval"]) >= {"top1", "many", "medium", "few", "split", "samples"}
    assert record["final_eval"]["split"] == "val" and record["final_eval"]["samples"] == 8
    assert record["peak_memory"]["bytes"] > 0
    metrics = _metrics(out)
    train = [e for e in metrics if e["kind"] == "train"]
    evals = [e for e in metrics if e["kind"] == "eval"]
    assert set(train[0]) == {"kind", "step", "epoch", "loss", "lr", "images_per_s", "steps", "compensation"}
    assert set(train[0]["compensation"]) <= {"mean", "std", "min", "max", "many", "medium", "few"}  # sage compensates
    assert [e["step"] for e in evals] == [6, 12, 18, 24, 30, 36]
    assert evals[-1] == record["final_eval"]
    assert train[0]["lr"] == pytest.approx(0.01 / 3) and train[2]["lr"] == pytest.approx(0.01)  # 3 warm-up steps


def test_weights_hold_only_adapters_and_head(sage_run) -> None:
    tensors = load_file(str(sage_run.out / "adapter.safetensors"))
    classifier, _, _, _ = load_trained_classifier(sage_run.out)
    assert set(tensors) == set(classifier.checkpoint_names())
    assert all(".adapter" in k or k.startswith("head.") for k in tensors), sorted(tensors)
    assert sum(t.numel() for t in tensors.values()) == sage_run.record["trainable_params"]
    trainable = {n for n, p in classifier.named_parameters() if p.requires_grad}
    assert trainable == set(tensors)


def test_load_trained_classifier_reproduces_the_final_eval(sage_run, synthetic_prepared: Path) -> None:
    from sage_cli.data import ManifestDataset, load_prepared_data
    from sage_cli.train.evaluate import evaluate

    classifier, clip, record, _ = load_trained_classifier(sage_run.out, device="cpu")
    assert not classifier.training and record["fingerprint"] == sage_run.record["fingerprint"]
    data = load_prepared_data(synthetic_prepared)
    dataset = ManifestDataset(data.split("val"), data.image_root, clip.preprocess_eval)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4)
    result = evaluate(classifier, loader, data.classes["group"].tolist(), torch.device("cpu"))
    assert result["top1"] == sage_run.record["final_eval"]["top1"]


def test_reloaded_classifier_gives_the_trained_logits(sage_run, synthetic_prepared: Path) -> None:
    from sage_cli.data import ManifestDataset, load_prepared_data

    reloaded, clip, _, _ = load_trained_classifier(sage_run.out, device="cpu")
    data = load_prepared_data(synthetic_prepared)
    dataset = ManifestDataset(data.split("val"), data.image_root, clip.preprocess_eval)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])  # [8, 3, 32, 32]
    with torch.no_grad():
        trained, again = sage_run.classifier(images), reloaded(images)  # [8, 4]
    assert trained.shape == (8, 4)
    torch.testing.assert_close(again, trained, atol=1e-5, rtol=0)  # float32 matmuls: not bitwise across copies
    initial, _, _, _ = load_trained_classifier(sage_run.out, device="cpu")
    initial.load_trainable_state_dict({k: torch.zeros_like(v) for k, v in initial.trainable_state_dict().items()})
    with torch.no_grad():
        assert float((initial(images) - trained).abs().max()) > 1e-3  # the comparison can fail


def test_damaged_weights_are_refused_naming_the_file(sage_run, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(sage_run.out, broken)
    data = (broken / "adapter.safetensors").read_bytes()
    (broken / "adapter.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(SageError, match="adapter.safetensors"):
        load_trained_classifier(broken)
    (broken / "adapter.safetensors").unlink()
    with pytest.raises(SageError, match="adapter.safetensors"):
        load_trained_classifier(broken)


def test_max_steps_is_exact(synthetic_prepared: Path, synthetic_text_cache: Path, tmp_path: Path) -> None:
    result = run(_config(synthetic_prepared, synthetic_text_cache, tmp_path / "r", method="linear", max_steps=7))
    steps = [e["step"] for e in _metrics(result.out) if e["kind"] == "train"]
    assert steps == list(range(1, 8)) and result.record["steps"] == 7
    assert result.record["final_eval"]["step"] == 7


@pytest.mark.parametrize("loss", [{"method": "sage", "compensation": "count"}, {"method": "lift", "loss": "cb"}],
                         ids=["sage-count", "lift-cb"])
def test_gradient_accumulation_matches_one_big_batch(synthetic_prepared: Path, synthetic_text_cache: Path,
                                                     tmp_path: Path, loss: dict) -> None:
    # Deterministic transforms, one step. The "count" compensation does not depend on the batches
    # (the "semantic" statistics are updated per micro-batch, so they would differ by design); cb's
    # micro-batches are weighted by their class weights' share of the step's, not by their images'
    # (seed 1: micro-batches of labels [0, 0, 1, 0] and [1, 1, 0, 1], so the two shares differ).
    common = {**loss, "seed": 1, "max_steps": 1, "augment": False, "lr": 0.5, "warmup_steps": 0}
    whole = run(_config(synthetic_prepared, synthetic_text_cache, tmp_path / "whole", **common))
    split = run(_config(synthetic_prepared, synthetic_text_cache, tmp_path / "split", micro_batch_size=4, **common))
    a = load_file(str(whole.out / "adapter.safetensors"))
    b = load_file(str(split.out / "adapter.safetensors"))
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6, rtol=0), name
    initial_head = load_text_cache(synthetic_text_cache).class_embeddings
    assert float((a["head.weight"] - initial_head).abs().max()) > 1e-4  # the step did move the weights
    first = [e for e in _metrics(whole.out) if e["kind"] == "train"][0]["loss"]
    second = [e for e in _metrics(split.out) if e["kind"] == "train"][0]["loss"]
    assert first == pytest.approx(second, abs=1e-6)


def test_mismatched_text_cache_is_refused_before_any_work(synthetic_prepared: Path, synthetic_text_cache: Path,
                                                          tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(synthetic_prepared, other)
    classes = artifacts.read_table(other, artifacts.CLASSES).to_pandas()
    classes.loc[0, "name"] = "purple hexagon"
    artifacts.write_table(other, artifacts.CLASSES, classes)
    out = tmp_path / "out"
    with pytest.raises(SageError, match="other classes"):
        run(_config(other, synthetic_text_cache, out))
    with pytest.raises(SageError, match="text cache was encoded with sage-tiny"):
        run(_config(synthetic_prepared, synthetic_text_cache, out, model="sage-toy", pretrained="none"))
    assert not out.exists()


def test_occupied_out_dir_is_refused_and_untouched(sage_run, synthetic_prepared: Path,
                                                   synthetic_text_cache: Path) -> None:
    before = _snapshot(sage_run.out)
    with pytest.raises(SageError, match="--force"):
        run(_config(synthetic_prepared, synthetic_text_cache, sage_run.out, method="lift", max_steps=1))
    assert _snapshot(sage_run.out) == before
    again = run(_config(synthetic_prepared, synthetic_text_cache, sage_run.out, epochs=6, lr=0.01, warmup_epochs=0.5))
    assert again.skipped and _snapshot(sage_run.out) == before


def test_force_replaces_another_run(synthetic_prepared: Path, synthetic_text_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    run(_config(synthetic_prepared, synthetic_text_cache, out, method="linear", max_steps=3))
    result = run(_config(synthetic_prepared, synthetic_text_cache, out, method="lift", max_steps=2, force=True))
    assert result.record["method"] == "lift"
    assert [e["step"] for e in _metrics(out) if e["kind"] == "train"] == [1, 2]


def test_resume_ends_with_the_same_weights(synthetic_prepared: Path, synthetic_text_cache: Path,
                                           tmp_path: Path) -> None:
    options = {"method": "sage", "epochs": 2, "checkpoint_every": 3, "lr": 0.05}
    straight = run(_config(synthetic_prepared, synthetic_text_cache, tmp_path / "a", **options))
    out = tmp_path / "b"
    run(_config(synthetic_prepared, synthetic_text_cache, out, **options))
    # make it look killed after the step-9 checkpoint (mid-epoch 2)
    for name in ("train.json", "adapter.safetensors", "checkpoints/last.json"):
        (out / name).unlink()
    shutil.rmtree(out / "checkpoints" / "step-00000012")
    with pytest.raises(SageError, match="--force"):
        run(_config(synthetic_prepared, synthetic_text_cache, out, **options))
    resumed = run(_config(synthetic_prepared, synthetic_text_cache, out, resume=True, **options))
    a = load_file(str(straight.out / "adapter.safetensors"))
    b = load_file(str(resumed.out / "adapter.safetensors"))
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6, rtol=0), name
    def timeless(run_dir: Path) -> list[dict[str, Any]]:
        return [{k: v for k, v in e.items() if k != "images_per_s"} for e in _metrics(run_dir)]

    assert timeless(resumed.out) == timeless(straight.out)  # killed-run entries after step 9 dropped
    assert resumed.record["final_eval"] == straight.record["final_eval"]
