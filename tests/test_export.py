"""`sage export` on tiny trained runs (sage-tiny, random weights, CPU): parity with the run, the
record, `sage predict EXPORT_DIR`, and the refusals."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from sage_cli import artifacts, export
from sage_cli.cli import app
from sage_cli.errors import SageError
from sage_cli.export import ExportConfig, load_export
from sage_cli.train import build_train_config, load_trained_classifier
from sage_cli.train import run as train

runner = CliRunner()
# The export is another computation path than the run's classifier. TorchScript replays torch's
# own kernels; onnxruntime has kernels of its own (fused attention, other summation orders), so
# its logits (scale 25) get a looser bound; both are far below the gaps between classes.
ATOL = {"torchscript": 1e-5, "onnx": 1e-4, "open_clip": 1e-5}


def _train(prepared: Path, text: Path, out: Path, method: str) -> Path:
    train(build_train_config({"prepared": prepared, "text_cache": text, "out": out, "method": method,
                              "batch_size": 8, "max_steps": 3, "lr": 0.05, "device": "cpu", "num_workers": 0,
                              "seed": 0}))
    return out


@pytest.fixture(scope="module")
def runs(synthetic_prepared: Path, synthetic_text_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    """Run directories by method, trained lazily (3 steps each)."""
    root, made = tmp_path_factory.mktemp("export-runs"), {}

    def get(method: str) -> Path:
        if method not in made:
            made[method] = _train(synthetic_prepared, synthetic_text_cache, root / method, method)
        return made[method]

    return get


@pytest.fixture(scope="module")
def test_images(synthetic_prepared: Path) -> list[Path]:
    manifest = artifacts.read_table(synthetic_prepared, artifacts.MANIFEST).to_pandas()
    rows = manifest[manifest["split"] == "test"]
    return [synthetic_prepared / "images" / p for p in rows["path"]]


def _export(run_dir: Path, out: Path, fmt: str, **options) -> export.ExportResult:
    return export.run(ExportConfig(run=run_dir, out=out, format=fmt, **options))


def _batch(paths: list[Path], transform) -> torch.Tensor:
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(transform(image.convert("RGB")))
    return torch.stack(images)  # [N, 3, 32, 32]


@pytest.mark.parametrize(("method", "fmt"), [("lift", "torchscript"), ("sage-topk", "torchscript"),
                                             ("sage", "onnx"), ("lora", "open_clip")])
def test_export_logits_match_the_run(runs, test_images, tmp_path: Path, method: str, fmt: str) -> None:
    run_dir = runs(method)
    result = _export(run_dir, tmp_path / "export", fmt)
    classifier, clip, record, names = load_trained_classifier(run_dir)
    loaded = load_export(tmp_path / "export")
    images = _batch(test_images, loaded.transform)
    torch.testing.assert_close(images, _batch(test_images, clip.preprocess_eval), atol=0, rtol=0)  # same pixels
    with torch.no_grad():
        expected = classifier(images)  # [8, 4]
        got = loaded.predict(images)
    assert got.shape == (8, 4)  # 8 images: the graph was built on 2, the batch axis is dynamic
    torch.testing.assert_close(got, expected, atol=ATOL[fmt], rtol=0)
    assert got.argmax(-1).tolist() == expected.argmax(-1).tolist()
    assert (expected - expected.mean()).abs().max() > 0.1  # trained logits, not a constant
    exported = result.record
    assert exported["format"] == fmt and exported["class_names"] == list(names) == list(loaded.class_names)
    assert exported["run"]["fingerprint"] == record["fingerprint"] and exported["run"]["method"] == method
    assert exported["input"]["shape"] == ["batch", 3, 32, 32] and exported["output"]["shape"] == ["batch", 4]
    model_file = tmp_path / "export" / exported["model_file"]
    assert exported["files"][model_file.name] == artifacts.sha256_file(model_file)
    assert exported["check"]["images"] == 3 and exported["check"]["max_abs_logit_diff"] <= ATOL[fmt]
    prep = exported["preprocessing"]
    assert (prep["image_size"], prep["interpolation"], prep["resize_mode"], prep["crop"]) == \
        ([32, 32], "bicubic", "shortest", "center")
    assert prep["mean"] == record["model"]["mean"] and prep["std"] == record["model"]["std"]
    if fmt == "onnx":
        assert exported["onnx"]["opset"] >= 18 and exported["onnx"]["dynamic_axes"]["images"] == {"0": "batch"}


@pytest.mark.parametrize("method", ["lora", "ssf", "bitfit"])
def test_open_clip_weights_load_into_open_clip(runs, tmp_path: Path, method: str) -> None:
    run_dir = runs(method)
    result = _export(run_dir, tmp_path / "oc", "open_clip")
    classifier, *_ = load_trained_classifier(run_dir)
    model = open_clip.create_model("sage-tiny", pretrained=None)
    model.load_state_dict(load_file(str(tmp_path / "oc" / "open_clip.safetensors")))  # strict
    head = load_file(str(tmp_path / "oc" / "head.safetensors"))
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images), classifier.encode_raw(images), atol=1e-5, rtol=0)
        torch.testing.assert_close(head["weight"], classifier.head.weight, atol=0, rtol=0)
    info = result.record["open_clip"]
    assert info["merged"] == method and info["quick_gelu"] is False
    assert info["head"] == {"file": "head.safetensors", "kind": "cosine", "scale": 25.0, "input": "normalized",
                            "feature": "pre-proj"}


def test_predict_on_an_export_prints_the_runs_classes(runs, test_images, tmp_path: Path) -> None:
    run_dir = runs("lift")
    assert runner.invoke(app, ["export", str(run_dir), "-o", str(tmp_path / "ts")]).exit_code == 0
    args = [*map(str, test_images), "--json", "-k", "4", "--device", "cpu"]
    on_run = runner.invoke(app, ["predict", str(run_dir), *args])
    on_export = runner.invoke(app, ["predict", str(tmp_path / "ts"), *args])
    assert on_run.exit_code == 0 and on_export.exit_code == 0, on_export.output
    expected, got = json.loads(on_run.stdout), json.loads(on_export.stdout)
    assert len(got) == 8
    for want, have in zip(expected, got):
        assert have["image"] == want["image"]
        assert [c["name"] for c in have["top"]] == [c["name"] for c in want["top"]]
        assert [c["score"] for c in have["top"]] == pytest.approx([c["score"] for c in want["top"]], abs=1e-5)
    with_checkpoint = runner.invoke(app, ["predict", str(tmp_path / "ts"), *args, "--checkpoint", "x.safetensors"])
    assert with_checkpoint.exit_code == 1 and "--checkpoint applies to a run directory" in with_checkpoint.output


def test_a_changed_model_file_is_refused(runs, test_images, tmp_path: Path) -> None:
    out = tmp_path / "ts"
    _export(runs("lift"), out, "torchscript")
    with open(out / "model.pt", "ab") as f:
        f.write(b"\0")
    result = runner.invoke(app, ["predict", str(out), str(test_images[0])])
    assert result.exit_code == 1 and result.output.strip().count("\n") == 0
    assert "model.pt: content differs from the sha256 recorded in" in result.output


def test_an_export_that_does_not_match_the_run_is_not_written(runs, tmp_path: Path, monkeypatch) -> None:
    real = export.LOADERS["torchscript"]

    def off_by_a_little(directory, record, device):
        predict = real(directory, record, device)
        return lambda images: predict(images) + torch.tensor([0.0, 0.0, 0.0, 0.5])  # one class's logit moved

    monkeypatch.setitem(export.LOADERS, "torchscript", off_by_a_little)
    with pytest.raises(SageError, match=r"logits differ from the run's by 0.5 .*nothing was written"):
        _export(runs("lift"), tmp_path / "ts", "torchscript")
    assert not (tmp_path / "ts").exists() and list(tmp_path.iterdir()) == []  # no staging left behind


def test_open_clip_refuses_modules_with_layers_of_their_own(runs, tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", str(runs("lift")), "-o", str(tmp_path / "oc"), "--format", "open_clip"])
    assert result.exit_code == 1 and result.output.strip().count("\n") == 0
    assert "the adaptformer module cannot be merged" in result.output and "torchscript or onnx" in result.output
    assert not (tmp_path / "oc").exists()


def test_reexport_is_a_no_op_and_another_runs_export_is_kept(runs, tmp_path: Path) -> None:
    out = tmp_path / "export"
    first = runner.invoke(app, ["export", str(runs("lift")), "-o", str(out)])
    assert first.exit_code == 0 and f"{out / 'model.pt'}: torchscript, 4 classes, input 3x32x32" in first.output
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = runner.invoke(app, ["export", str(runs("lift")), "-o", str(out)])
    assert again.exit_code == 0 and "already holds this export" in again.output
    other = runner.invoke(app, ["export", str(runs("lora")), "-o", str(out), "--format", "open_clip"])
    assert other.exit_code == 1 and "holds a export result of other inputs" in other.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing touched
    forced = runner.invoke(app, ["export", str(runs("lora")), "-o", str(out), "--format", "open_clip", "--force"])
    assert forced.exit_code == 0, forced.output
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "head.safetensors", "open_clip.safetensors"]
    assert load_export(out).record["run"]["method"] == "lora"


def test_bad_arguments_are_one_line(runs, tmp_path: Path) -> None:
    with pytest.raises(SageError, match="--format must be one of torchscript, onnx, open_clip; got 'tflite'"):
        ExportConfig(run=tmp_path, out=tmp_path / "x", format="tflite")
    with pytest.raises(SageError, match="is the run directory itself"):
        ExportConfig(run=runs("lift"), out=runs("lift"))
    result = runner.invoke(app, ["export", str(tmp_path), "-o", str(tmp_path / "x")])
    assert result.exit_code == 1 and "train.json: missing" in result.output
    assert not (tmp_path / "x").exists()


def test_onnx_without_its_packages_is_one_line(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # `import onnxscript` raises ImportError
    with pytest.raises(SageError, match=r"^--format onnx needs the onnxscript package: pip install 'sage-lt\[onnx\]'"):
        export.require_onnx_exporter()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(SageError, match=r"an ONNX export needs onnxruntime to run: pip install 'sage-lt\[onnx\]'"):
        export.load_onnx(tmp_path, {"model_file": "model.onnx"}, torch.device("cpu"))
