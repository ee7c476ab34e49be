"""The export stage: a trained run as a deployable model directory (``sage export RUN --out DIR``).

Public API: :class:`ExportConfig`, :func:`run` -> :class:`ExportResult`, and :func:`load_export`
(what ``sage predict EXPORT_DIR`` uses). An export directory holds the model file and
``export.json``: the format, the source run's fingerprint, the class names, the eval
preprocessing (image size, mean/std, resize mode, interpolation, centre crop), the input and
output tensors, and the sha256 of every file. Formats:

- ``torchscript``: ``model.pt``, the whole classifier traced (images [N, 3, H, W] -> logits [N, C]);
- ``onnx``: ``model.onnx``, torch's ONNX exporter with a dynamic batch axis (input ``images``,
  output ``logits``);
- ``open_clip``: ``open_clip.safetensors``, the CLIP model's state dict with the PEFT module merged
  into the image tower (:mod:`sage_cli.model.merge`), loadable by ``open_clip.create_model`` +
  ``load_state_dict``, and ``head.safetensors``, the classifier head.

Before anything is published the export is loaded back and run on random images; its logits
must match the run's classifier (``check`` in export.json). Everything is written into a staging
directory first, the record last, so an interrupted export leaves the old one (or nothing).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from sage_cli import artifacts
from sage_cli.errors import SageError, explain_write_errors
from sage_cli.locks import lock_output_dir

logger = logging.getLogger(__name__)

ExportFormat = Literal["torchscript", "onnx", "open_clip"]
FORMATS: tuple[str, ...] = ("torchscript", "onnx", "open_clip")
EXPORT_RECORD = "export.json"
MODEL_FILES = {"torchscript": "model.pt", "onnx": "model.onnx", "open_clip": "open_clip.safetensors"}
HEAD_FILE = "head.safetensors"
ONNX_DATA = "model.onnx.data"  # ONNX weights beside the graph, for models over protobuf's 2 GB
OUTPUTS = (*MODEL_FILES.values(), HEAD_FILE, ONNX_DATA)
ONNX_EXTRA = "pip install 'sage-lt[onnx]' (onnx, onnxscript, onnxruntime)"
CHECK_IMAGES = 3  # images of the post-export check; the trace / ONNX graph is built on 2 (a dynamic batch)
CHECK_TOLERANCE = 1e-3  # max |logit difference| / max(1, max |logit|): another computation path, not a bug


@dataclass(frozen=True)
class ExportConfig:
    """A run directory, the export directory to write and the format."""

    run: Path
    out: Path
    format: ExportFormat = "torchscript"
    checkpoint: Path | None = None
    text_cache: Path | None = None
    force: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "run", Path(self.run))
        object.__setattr__(self, "out", Path(self.out))
        if self.format not in FORMATS:
            raise SageError(f"--format must be one of {', '.join(FORMATS)}; got {self.format!r}")
        if self.out.resolve() == self.run.resolve():
            raise SageError(f"--out {self.out}: is the run directory itself; choose a directory of its own")


@dataclass(frozen=True)
class ExportResult:
    out: Path
    record: dict[str, Any]
    skipped: bool  # True when --out already held this exact export


@dataclass(frozen=True)
class LoadedExport:
    """An export read back: ``predict(images [N, 3, H, W]) -> logits [N, C]`` on ``device``."""

    predict: Callable[[torch.Tensor], torch.Tensor]
    record: dict[str, Any]
    class_names: tuple[str, ...]
    transform: Callable[[Any], torch.Tensor]  # PIL image -> [3, H, W], the run's eval preprocessing
    device: torch.device


def run(config: ExportConfig) -> ExportResult:
    """Write the export of ``config.run`` into ``config.out`` unless it already holds exactly it."""
    with lock_output_dir(config.out, "export"):
        return _run_locked(config)


def _run_locked(config: ExportConfig) -> ExportResult:
    from sage_cli.train import load_trained_classifier
    from sage_cli.train.restore import describe_weights, resolve_weights_path

    run_record = artifacts.read_record(config.run, artifacts.TRAIN_RECORD)
    weights = resolve_weights_path(config.run, config.checkpoint, run_record)
    inputs = {"run_fingerprint": run_record.get("fingerprint"), "format": config.format,
              "weights_sha256": artifacts.sha256_file(weights) if weights.is_file() else None}
    fingerprint = artifacts.sha256_json(inputs)
    if artifacts.guard_output_dir(config.out, EXPORT_RECORD, fingerprint, OUTPUTS, config.force,
                                  required=(MODEL_FILES[config.format],)):
        logger.info("%s already holds this export", config.out)
        return ExportResult(config.out, artifacts.read_record(config.out, EXPORT_RECORD), True)
    classifier, clip, record, names = load_trained_classifier(config.run, config.checkpoint, "cpu", config.text_cache)
    if config.format == "open_clip":
        from sage_cli.model.merge import check_mergeable

        check_mergeable(classifier.visual)  # refused before anything is written
    config.out.parent.mkdir(parents=True, exist_ok=True)
    with explain_write_errors(config.out, "export"):
        staging = Path(tempfile.mkdtemp(prefix=f".{config.out.name}.", suffix=".export.tmp", dir=config.out.parent))
        try:
            staging.chmod(0o777 & ~artifacts.current_umask())  # mkdtemp makes it private
            fields = WRITERS[config.format](classifier, clip, staging)
            fields = {**fields, "weights": describe_weights(weights, run_record, config.run)}
            export = build_export_record(config, inputs, classifier, record, names, fields)
            export = artifacts.seal_record(staging, export, [p.name for p in staging.iterdir()])
            artifacts.write_record(staging, EXPORT_RECORD, export)
            export = check_export(staging, classifier, export)
            publish(staging, config.out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(config.out, export, False)


def build_export_record(config: ExportConfig, inputs: dict[str, Any], classifier: nn.Module,
                        run_record: dict[str, Any], names: tuple[str, ...], fields: dict[str, Any]) -> dict[str, Any]:
    """export.json before sealing: the source run, classes, preprocessing, tensors and format details."""
    model = run_record["model"]
    preprocessing = {key: model.get(key, default) for key, default in (
        ("image_size", None), ("mean", None), ("std", None), ("interpolation", "bicubic"), ("resize_mode", "shortest"),
        ("eval_resize", "clip"))}
    height, width = preprocessing["image_size"]
    return artifacts.build_record(
        "export", inputs, format=config.format, model_file=MODEL_FILES[config.format],
        run={"path": artifacts.relative_path(config.run, config.out), "fingerprint": run_record.get("fingerprint"),
             "method": run_record.get("method"), "peft": classifier.summary()["peft"], "model": model["model"],
             "pretrained": model["pretrained"], "checkpoint": str(config.checkpoint) if config.checkpoint else None},
        class_names=list(names),
        preprocessing={**preprocessing, "crop": "center",
                       "eval_transform": " ".join(str(build_transform(preprocessing)).split())},
        input={"name": "images", "shape": ["batch", 3, height, width], "dtype": "float32",
               "layout": "NCHW, RGB, after the preprocessing (resize, centre crop, scale to [0, 1], normalise)"},
        output={"name": "logits", "shape": ["batch", len(names)], "dtype": "float32"},
        **fields,
    )


def build_transform(preprocessing: dict[str, Any]) -> Callable[[Any], torch.Tensor]:
    """open_clip's eval transform (resize, centre crop, normalise) from export.json's preprocessing."""
    from sage_cli.report.loader import build_eval_transform

    return build_eval_transform(preprocessing)


# --------------------------------------------------------------------------------------------
# Writers: (classifier, clip, directory) -> fields of export.json


def build_example(image_size: list[int], images: int, seed: int = 0) -> torch.Tensor:
    """[images, 3, H, W] standard-normal pixels (preprocessed images are about that), seeded."""
    height, width = image_size
    return torch.randn(images, 3, int(height), int(width), generator=torch.Generator().manual_seed(seed))


def write_torchscript(classifier: nn.Module, clip: Any, directory: Path) -> dict[str, Any]:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation and tracer notes about Python-side shape checks
        traced = torch.jit.trace(classifier, build_example(clip.record["image_size"], 2), check_trace=False)
    traced.save(str(directory / MODEL_FILES["torchscript"]))
    return {"torchscript": {"torch": torch.__version__}}


def write_onnx(classifier: nn.Module, clip: Any, directory: Path) -> dict[str, Any]:
    require_onnx_exporter()
    example = build_example(clip.record["image_size"], 2)
    large = sum(p.numel() * p.element_size() for p in classifier.parameters()) > 1.8 * 2**30
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad(), warnings.catch_warnings(), _quiet_loggers("torch.onnx", "torch.export", "onnxscript"):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(classifier, (example,), None, dynamo=True, input_names=["images"],
                                    output_names=["logits"], dynamic_shapes={"images": {0: batch}}, verbose=False)
        program.save(str(directory / MODEL_FILES["onnx"]), external_data=large)
    import onnx

    graph = onnx.load(str(directory / MODEL_FILES["onnx"]), load_external_data=False)
    opset = next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
    return {"onnx": {"opset": int(opset), "dynamic_axes": {"images": {"0": "batch"}, "logits": {"0": "batch"}},
                     "external_data": ONNX_DATA if large else None}}


def write_open_clip(classifier: nn.Module, clip: Any, directory: Path) -> dict[str, Any]:
    from safetensors.torch import save_file

    from sage_cli.model.merge import build_merged_tower

    tower = build_merged_tower(classifier.visual)
    state = {k: v for k, v in clip.model.state_dict().items() if not k.startswith("visual.")}
    state.update({f"visual.{k}": v for k, v in tower.state_dict().items()})
    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(directory / MODEL_FILES["open_clip"]))
    head = classifier.head
    save_file({k: v.detach().contiguous().clone() for k, v in head.state_dict().items()}, str(directory / HEAD_FILE))
    quick_gelu = any(type(m).__name__ == "QuickGELU" for m in tower.modules())
    return {"open_clip": {
        "model": clip.record["model"], "quick_gelu": quick_gelu,
        "merged": getattr(classifier.visual, "sage_peft", None),
        "head": {"file": HEAD_FILE, "kind": classifier.config.head.kind, "scale": float(getattr(head, "scale", 1.0)),
                 "input": "normalized" if head.normalized_input else "raw", "feature": classifier.head_feature},
    }}


WRITERS: dict[str, Callable[[nn.Module, Any, Path], dict[str, Any]]] = {
    "torchscript": write_torchscript, "onnx": write_onnx, "open_clip": write_open_clip}


def require_onnx_exporter() -> None:
    for module in ("onnx", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            raise SageError(f"--format onnx needs the {module} package: {ONNX_EXTRA}") from None


@contextlib.contextmanager
def _quiet_loggers(*names: str):
    """Raise the level of the exporter's chatty loggers for the block."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


# --------------------------------------------------------------------------------------------
# Check and publish


def check_export(directory: Path, classifier: nn.Module, record: dict[str, Any]) -> dict[str, Any]:
    """Run the export in ``directory`` on random images against the classifier; the sealed record
    with ``check`` added (rewritten), or a SageError when the logits do not match."""
    images = build_example(record["input"]["shape"][2:], CHECK_IMAGES, seed=1)
    with torch.no_grad():
        expected = classifier(images)  # [N, C]
        got = load_export(directory, "cpu").predict(images)
    diff = float((got - expected).abs().max())
    tolerance = CHECK_TOLERANCE * max(1.0, float(expected.abs().max()))
    if not diff <= tolerance:
        raise SageError(f"the {record['format']} export's logits differ from the run's by {diff:.3g} (tolerance "
                        f"{tolerance:.3g}) on random images; nothing was written; please report this")
    check = {"images": CHECK_IMAGES, "max_abs_logit_diff": diff, "tolerance": tolerance,
             "same_top1": bool((got.argmax(-1) == expected.argmax(-1)).all())}
    record = artifacts.seal_record(directory, {**record, "check": check}, list(record[artifacts.FILES]))
    artifacts.write_record(directory, EXPORT_RECORD, record)
    return record


def publish(staging: Path, out: Path) -> None:
    """Move the staged files into ``out``: the old record and model files go first, the record last."""
    out.mkdir(parents=True, exist_ok=True)
    for name in (EXPORT_RECORD, *OUTPUTS):
        (out / name).unlink(missing_ok=True)  # no stale file of another format stays beside the new one
    for entry in sorted(staging.iterdir(), key=lambda p: (p.name == EXPORT_RECORD, p.name)):
        entry.chmod(0o666 & ~artifacts.current_umask())  # some writers make their files private
        os.replace(entry, out / entry.name)


# --------------------------------------------------------------------------------------------
# Loading an export (sage predict EXPORT_DIR)


def is_export(directory: Path) -> bool:
    return (Path(directory) / EXPORT_RECORD).is_file()


def load_export(directory: str | os.PathLike[str], device: str | torch.device = "cpu") -> LoadedExport:
    """Read an export directory back (its files verified against export.json) for inference."""
    from sage_cli.backbone import resolve_device

    directory = Path(directory)
    record = artifacts.read_record(directory, EXPORT_RECORD)  # refuses a changed or missing model file
    if record.get("stage") != "export" or record.get("format") not in LOADERS:
        raise SageError(f"{directory / EXPORT_RECORD}: not a sage export record (format {record.get('format')!r})")
    device = resolve_device(device)
    predict = LOADERS[record["format"]](directory, record, device)
    return LoadedExport(predict, record, tuple(record["class_names"]), build_transform(record["preprocessing"]),
                        device)


def load_torchscript(directory: Path, record: dict[str, Any], device: torch.device) -> Callable:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation note
        module = torch.jit.load(str(directory / record["model_file"]), map_location=device).eval()

    def predict(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(images.to(device)).float()

    return predict


def load_onnx(directory: Path, record: dict[str, Any], device: torch.device) -> Callable:
    try:
        import onnxruntime
    except ImportError:
        raise SageError(f"{directory}: an ONNX export needs onnxruntime to run: {ONNX_EXTRA}") from None
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    session = onnxruntime.InferenceSession(str(directory / record["model_file"]), providers=providers)

    def predict(images: torch.Tensor) -> torch.Tensor:
        (logits,) = session.run(["logits"], {"images": images.detach().cpu().float().numpy()})
        return torch.from_numpy(logits)

    return predict


def load_open_clip(directory: Path, record: dict[str, Any], device: torch.device) -> Callable:
    import open_clip
    from safetensors.torch import load_file

    from sage_cli.backbone import _quiet_open_clip  # importing it registers the package's own model configs
    from sage_cli.model.features import PRE_PROJ, encode_tower
    from sage_cli.model.head import build_head

    info = record["open_clip"]
    with _quiet_open_clip():  # "initialized randomly": the weights are loaded next
        model = open_clip.create_model(info["model"], pretrained=None, force_quick_gelu=info["quick_gelu"])
    model.load_state_dict(load_file(str(directory / record["model_file"])))
    head_state = load_file(str(directory / info["head"]["file"]))
    head = build_head(info["head"]["kind"], head_state["weight"], info["head"]["scale"])
    head.load_state_dict(head_state)
    visual, head = model.visual.to(device).eval().requires_grad_(False), head.to(device).eval().requires_grad_(False)

    @torch.no_grad()
    def predict(images: torch.Tensor) -> torch.Tensor:
        # an export written before --head-feature read the projected feature
        features, _ = encode_tower(visual, images.to(device), info["head"].get("feature") == PRE_PROJ)
        return head(F.normalize(features, dim=-1) if info["head"]["input"] == "normalized" else features).float()

    return predict


LOADERS: dict[str, Callable[[Path, dict[str, Any], torch.device], Callable]] = {
    "torchscript": load_torchscript, "onnx": load_onnx, "open_clip": load_open_clip}


__all__ = ["EXPORT_RECORD", "FORMATS", "ExportConfig", "ExportResult", "LoadedExport", "is_export", "load_export",
           "run"]
