"""One-shot GPU check: every figure of one GPU run in one command (README.md beside this).

Steps, in order (ViT-B/16 with random weights, as the GPU host has no network; bf16 autocast, batch 128):

- ``environment``: the machine (GPU, driver, torch, CUDA, /dev/shm, CPUs, the packages and wheels);
- ``sdpa_guidance``: which scaled-dot-product-attention backends run the SG-Adapter's guidance
  attention at the sage figures' shapes (forward + backward), their times, and the one torch picks;
- ``gpu_tests``: ``pytest -m gpu`` under a timeout, its log returned as ``gpu_tests.log``;
- ``model_{method}_c{C}``: a training step on in-memory batches: images/s, model-FLOP utilisation
  (FLOPs counted by ``torch.utils.flop_counter`` on the real step), peak memory; the frozen tower's
  weights cast to bf16 once, as ``sage train`` casts them;
- ``model_{method}_c{C0}_compile``: the same step with the image tower compiled as ``--compile``
  compiles it (``SageClassifier.compile_tower``), at the first class count: its compile time too;
- ``setup_jpegs``, ``setup_data_c{C}``: generated ImageNet-like JPEGs, a long-tailed prepared
  dataset of them with C classes, and its image cache;
- ``input_{plain|cached}_w{W}``: the training DataLoader alone (no model) with W workers, timed
  after a warm-up that covers the workers' first round: the input ceiling of each path;
- ``encode_text_c{C}``: ``sage encode-text`` of C classes x 10 templates;
- ``train_{method}_c{C}_{plain|fast}``: ``sage train`` itself, through PIL decode or
  ``--image-cache``, long enough that its steady log windows (after the DataLoader's prefetch of
  2 x workers batches) measure the input path or the model rather than the prefetch; sage takes its
  guidance token count from the preset of that benchmark (1,024 at iNaturalist's 8,142 classes);
- ``report_tte_{off|on}``: the report's evaluation loop without and with five-crop TTE.

Each step runs under try/except and a time limit, and is skipped when a step it needs failed or
when it would not end inside the budget. ``--cpu-smoke`` runs every step with sage-tiny and tiny
sizes on the CPU (a test runs it); ``--dry-run`` prints the plan and its expected wall time.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import json
import logging
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent / "input"))
sys.path.insert(0, str(HERE))

from bench_env import describe_environment, probe_guidance_attention, run_gpu_tests, usable_cpus  # noqa: E402
from bench_runner import (  # noqa: E402
    RETURNED, SUMMARY_MD, TESTS_LOG, BenchError, Runner, Step, check_folders, open_log,
)
from bench_tables import render_markdown  # noqa: E402

logger = logging.getLogger("bench_gpu")

TEMPLATES = (
    "a photo of a {}.", "a bad photo of a {}.", "a close-up photo of a {}.", "a bright photo of a {}.",
    "a cropped photo of a {}.", "a photo of the large {}.", "a photo of the small {}.", "a blurry photo of a {}.",
    "a good photo of a {}.", "a rendering of a {}.",
)
PRESETS = {1000: "imagenet_lt", 8142: "inat2018"}  # the benchmark whose recipe each GPU class count takes
PRESET_DIR = ROOT / "sage_cli" / "presets"
PREFETCH_FACTOR = 2  # torch's DataLoader default: each worker is asked for 2 batches ahead
# Assumed rates for the expected wall time (README.md, "Expected wall time"); GPU plan only.
RATES = {"jpeg_cpu_s": 0.014, "cache_cpu_s": 0.006, "plain_per_worker": 260.0, "cached_per_worker": 1000.0,
         "train_images_per_s": 3000.0, "texts_per_s": 8000.0}
FIXED_S = {"environment": 15.0, "sdpa_guidance": 5.0, "gpu_tests": 60.0, "model": 7.0, "report": 6.0, "start": 10.0,
           "compile": 40.0}  # compile: inductor on ViT-B/16's forward + backward with 16 compile workers (a guess)


def read_preset_guidance_tokens(num_classes: int) -> int | None:
    """The guidance token count M in the preset of ``num_classes``'s benchmark (None: M = C)."""
    import yaml

    preset = PRESET_DIR / f"{PRESETS[num_classes]}.yaml"
    return yaml.safe_load(preset.read_text()).get("guidance_tokens")


@dataclass(frozen=True)
class Plan:
    """Sizes of one run: the GPU plan, or the tiny CPU smoke."""

    mode: str  # gpu | cpu-smoke
    model: str
    device: str
    batch: int
    classes: tuple[int, ...]
    methods: tuple[str, ...]
    guidance_tokens: tuple[int | None, ...]  # sage's M at each class count (None: M = C)
    images: int  # generated JPEGs: one epoch of train_steps batches, so no run restarts its DataLoader
    train_steps: int
    log_every: int
    model_warmup: int
    model_steps: int
    num_workers: int
    input_workers: tuple[int, ...]
    input_batches: int  # timed batches of each input figure, after 2 x workers warm-up batches
    eval_batch: int
    eval_batches: int
    tokens_per_image: int  # queries per image in the guidance attention (ViT-B/16 at 224 px: 197)
    layers: int  # vision blocks (LIFT's bottleneck rule)
    gpu_tests: tuple[str, ...]
    compile_backend: str  # torch.compile's backend for the compiled model steps (the smoke's: no code generation)
    tests_timeout_s: float
    step_timeout_s: float
    budget_s: float | None
    peak_tflops: float

    @classmethod
    def build(cls, args: argparse.Namespace) -> Plan:
        common = {"methods": ("lift", "sage"), "budget_s": args.budget_s, "peak_tflops": args.peak_tflops}
        if args.cpu_smoke:  # sage-tiny: 32 px, patch 8 (17 tokens), 2 blocks
            return cls(mode="cpu-smoke", model="sage-tiny", device="cpu", batch=4, classes=(10, 20),
                       guidance_tokens=(None, 8), images=16, train_steps=4, log_every=1, model_warmup=1,
                       model_steps=2, num_workers=0, input_workers=(0, 1), input_batches=2, eval_batch=4,
                       eval_batches=2, tokens_per_image=17, layers=2, gpu_tests=("-m", "gpu", "tests/test_gpu.py"),
                       compile_backend="aot_eager", tests_timeout_s=args.tests_timeout or 120.0, step_timeout_s=300.0, **common)
        workers = min(16, args.cpus or usable_cpus())
        classes = (1000, 8142)
        return cls(mode="gpu", model="ViT-B-16", device="cuda", batch=128, classes=classes,
                   guidance_tokens=tuple(read_preset_guidance_tokens(c) for c in classes), images=96 * 128,
                   train_steps=96, log_every=8, model_warmup=3, model_steps=10, num_workers=workers,
                   input_workers=tuple(sorted({4, workers})), input_batches=64, eval_batch=256, eval_batches=8,
                   tokens_per_image=197, layers=12, gpu_tests=("-m", "gpu", "tests"), compile_backend="inductor",
                   tests_timeout_s=args.tests_timeout or 180.0, step_timeout_s=90.0,
                   **{**common, "budget_s": 420.0 if args.budget_s is None else args.budget_s})

    def guidance_tokens_for(self, num_classes: int) -> int | None:
        return self.guidance_tokens[self.classes.index(num_classes)]

    def prefetch_batches(self, workers: int) -> int:
        """Batches a fresh DataLoader asks its workers for at once."""
        return PREFETCH_FACTOR * workers


@dataclass
class Context:
    """What steps hand on: where the data lives, the CPU backbone, the FLOPs of each model step."""

    plan: Plan
    out: Path
    work: Path
    jpegs: list[Path] = field(default_factory=list)
    backbone: Any = None
    flops: dict[tuple[str, int], float] = field(default_factory=dict)

    def prepared(self, num_classes: int) -> Path:
        return self.work / f"prepared_c{num_classes}"

    def cache(self, num_classes: int) -> Path:
        return self.work / f"images_c{num_classes}"

    def text(self, num_classes: int) -> Path:
        return self.work / f"text_c{num_classes}"

    def cpu_backbone(self) -> Any:
        """The backbone on the CPU (its preprocessing record and eval transform), built once."""
        if self.backbone is None:
            self.backbone = load_backbone(self.plan.model, "cpu")
        return self.backbone


def load_backbone(model: str, device: Any) -> Any:
    """``model`` with random weights on ``device`` (a LoadedClip: .model, .record, .preprocess_eval)."""
    try:
        from sage_cli.backbone import build_backbone
    except ImportError:  # before build_backbone moved out of the train package
        from sage_cli.train.inputs import build_backbone
    return build_backbone(model, "none", device)


# --------------------------------------------------------------------------------------------
# The plan: steps, their inputs and expected times


def build_steps(plan: Plan, ctx: Context) -> list[Step]:
    """Every step of the run, in order, with what each needs and its expected time."""
    shapes = [(c, plan.guidance_tokens_for(c) or c) for c in plan.classes]
    steps = [Step("environment", "environment", functools.partial(describe_environment, plan.device, ctx.work)),
             Step("sdpa_guidance", "environment", functools.partial(
                 probe_guidance_attention, plan.device, plan.batch * plan.tokens_per_image, plan.layers, shapes)),
             Step("gpu_tests", "tests", functools.partial(run_gpu_tests, plan.gpu_tests, ctx.out / TESTS_LOG,
                                                          plan.tests_timeout_s))]
    steps += [Step(f"model_{m}_c{c}", "figure", functools.partial(measure_model_step, ctx, m, c))
              for c in plan.classes for m in plan.methods]
    steps += [Step(f"model_{m}_c{plan.classes[0]}_compile", "figure",
                   functools.partial(measure_model_step, ctx, m, plan.classes[0], True),
                   needs=(f"model_{m}_c{plan.classes[0]}",)) for m in plan.methods]
    steps.append(Step("setup_jpegs", "setup", functools.partial(generate_jpegs, ctx)))
    for c in plan.classes:
        data = f"setup_data_c{c}"
        steps.append(Step(data, "setup", functools.partial(prepare_data, ctx, c), needs=("setup_jpegs",)))
        if c == plan.classes[0]:
            steps += [Step(f"input_{path}_w{w}", "figure", functools.partial(measure_input, ctx, c, path, w),
                           needs=(data,)) for w in plan.input_workers for path in ("plain", "cached")]
        steps.append(Step(f"encode_text_c{c}", "figure", functools.partial(measure_encode_text, ctx, c),
                          needs=(data,)))
        steps += [Step(f"train_{m}_c{c}_{i}", "figure", functools.partial(measure_train, ctx, m, c, i == "fast"),
                       needs=(data, f"encode_text_c{c}")) for m in plan.methods for i in ("plain", "fast")]
    steps += [Step(f"report_tte_{'on' if tte else 'off'}", "figure", functools.partial(measure_report, plan, tte))
              for tte in (False, True)]
    return [dataclasses.replace(s, estimate_s=estimate_s(plan, s.name)) for s in steps]


def estimate_s(plan: Plan, name: str) -> float | None:
    """Expected wall seconds of step ``name`` on the GPU host, by arithmetic from :data:`RATES`."""
    if plan.mode != "gpu":
        return None
    kind = name.split("_")[0]
    workers = plan.num_workers
    if name.endswith("_compile"):
        return FIXED_S["model"] + FIXED_S["compile"]
    if name in FIXED_S or kind in FIXED_S:
        return FIXED_S.get(name, FIXED_S.get(kind))
    if name == "setup_jpegs":
        return 2 + plan.images * RATES["jpeg_cpu_s"] / workers
    if kind == "setup":  # two views decoded per image; the first also builds the CPU backbone
        return 2 + 3 * (name.endswith(f"c{plan.classes[0]}")) + 2 * plan.images * RATES["cache_cpu_s"] / workers
    if kind == "input":
        w = int(name.rsplit("_w", 1)[1])
        images = (plan.prefetch_batches(w) + plan.input_batches) * plan.batch
        return 2 + images / (w * RATES["cached_per_worker" if "cached" in name else "plain_per_worker"])
    if kind == "encode":
        return 2 + int(name.rsplit("_c", 1)[1]) * len(TEMPLATES) / RATES["texts_per_s"]
    if kind == "train":
        return 5 + plan.train_steps * plan.batch / RATES["train_images_per_s"]
    raise ValueError(f"no estimate for step {name}")


def describe_plan(plan: Plan, steps: list[Step], out: Path, work: Path | None) -> dict[str, Any]:
    """The dry run's output: sizes, steps (with what they need and their expected time), total."""
    known = [s.estimate_s for s in steps if s.estimate_s is not None]
    total = round(FIXED_S["start"] + sum(known), 1) if plan.mode == "gpu" else None
    return {"plan": dataclasses.asdict(plan), "out": str(out), "work": str(work or "(a new folder under $TMPDIR)"),
            "returned_files": list(RETURNED),
            "steps": [{"name": s.name, "kind": s.kind, "needs": list(s.needs),
                       "estimate_s": None if s.estimate_s is None else round(s.estimate_s, 1)} for s in steps],
            "figures": [s.name for s in steps if s.kind == "figure"], "estimated_wall_s": total,
            "assumed_rates": RATES if plan.mode == "gpu" else None}


# --------------------------------------------------------------------------------------------
# Data: generated JPEGs, prepared datasets, image caches


def generate_jpegs(ctx: Context) -> dict[str, Any]:
    """The plan's ImageNet-like JPEGs (imagenet_like.py), written by ``num_workers`` processes."""
    import multiprocessing

    import imagenet_like

    directory, count, workers = ctx.work / "jpegs", ctx.plan.images, max(1, ctx.plan.num_workers)
    if workers <= 1:
        ctx.jpegs = imagenet_like.write_images(directory, count)
    else:
        chunks = [(directory / f"part{i}", count // workers + (i < count % workers), i) for i in range(workers)]
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            ctx.jpegs = [p for part in pool.starmap(imagenet_like.write_images, chunks) for p in part]
    return {"kind": "setup", "images": len(ctx.jpegs), "processes": workers,
            "mean_kb": round(sum(p.stat().st_size for p in ctx.jpegs) / len(ctx.jpegs) / 1e3, 1)}


def write_prepared(directory: Path, image_paths: list[Path], num_classes: int, seed: int = 0) -> Path:
    """A long-tailed prepared dataset over ``image_paths`` (train split only) with ``num_classes`` classes."""
    import numpy as np

    from sage_cli import artifacts

    counts = np.maximum(2, np.round(1000 * np.arange(1, num_classes + 1) ** -1.0)).astype(np.int64)  # Zipf-like
    prior = counts / counts.sum()
    labels = np.random.default_rng(seed).choice(num_classes, size=len(image_paths), p=prior)
    artifacts.write_table(directory, artifacts.MANIFEST, {
        "sample_id": list(range(len(image_paths))), "path": [str(p) for p in image_paths],
        "label": labels.tolist(), "split": ["train"] * len(image_paths)})
    groups = ["many" if c > 100 else "medium" if c >= 20 else "few" for c in counts]
    artifacts.write_table(directory, artifacts.CLASSES, {
        "class_id": list(range(num_classes)), "name": [f"class {i}" for i in range(num_classes)],
        "train_count": counts.tolist(), "prior": prior.tolist(), "group": groups})
    record = artifacts.build_record("prepare", {"dataset": "bench-gpu", "classes": num_classes, "n": len(image_paths)},
                                    dataset="bench-gpu", image_root=str(directory))
    artifacts.write_record(directory, artifacts.PREPARE_RECORD, record)
    return directory


def prepare_data(ctx: Context, num_classes: int) -> dict[str, Any]:
    """The prepared dataset with ``num_classes`` classes over the JPEGs, and its image cache."""
    from sage_cli.data import load_prepared_data
    from sage_cli.image_cache import Geometry, build_image_cache

    prepared = write_prepared(ctx.prepared(num_classes), ctx.jpegs, num_classes)
    clip = ctx.cpu_backbone()
    start = time.perf_counter()
    result = build_image_cache(load_prepared_data(prepared), clip.preprocess_eval, Geometry.from_record(clip.record),
                               ctx.cache(num_classes), force=True, workers=ctx.plan.num_workers)
    seconds = time.perf_counter() - start
    return {"kind": "setup", "classes": num_classes, "images": len(ctx.jpegs), "cache_seconds": round(seconds, 2),
            "cache_images_per_s": len(ctx.jpegs) / seconds, "cache_bytes": result.record["bytes"]}


# --------------------------------------------------------------------------------------------
# Figures


def count_step_flops(step: Callable[[], None]) -> int:
    """FLOPs of one call of ``step`` (torch's flop counter: matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def measure_model_step(ctx: Context, method: str, num_classes: int, compiled: bool = False) -> dict[str, Any]:
    """A training step on in-memory batches: images/s, MFU, peak memory; ``compiled``: the image
    tower compiled as ``--compile`` does (FLOPs from the eager step's count, which it needs)."""
    import torch
    import torch.nn.functional as F

    from sage_cli.losses import build_loss
    from sage_cli.methods import METHODS, model_config
    from sage_cli.model import build_classifier
    from sage_cli.precision import cast_frozen_weights

    plan, device = ctx.plan, torch.device(ctx.plan.device)
    clip = load_backbone(plan.model, device)
    generator = torch.Generator().manual_seed(0)
    embeddings = F.normalize(torch.randn(num_classes, clip.record["embedding_dim"], generator=generator), dim=-1)
    counts = torch.randint(2, 1000, (num_classes,), generator=generator).float()
    tokens = {"guidance_tokens": plan.guidance_tokens_for(num_classes)} if method == "sage" else {}
    classifier = build_classifier(clip.model, embeddings.to(device), model_config(method, **tokens)).train()
    if device.type == "cuda":
        cast_frozen_weights(classifier.visual, torch.bfloat16)  # as sage train does under bf16 autocast
    if compiled:
        classifier.compile_tower(backend=plan.compile_backend)
    loss_fn = build_loss(METHODS[method].loss, counts, embeddings).to(device).train()
    images = torch.randn(plan.batch, 3, *clip.record["image_size"], generator=generator).to(device)
    labels = torch.randint(0, num_classes, (plan.batch,), generator=generator).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits, features = classifier.forward_with_features(images)
            loss = loss_fn(logits, labels, features if loss_fn.estimator.needs_features else None)
        loss.backward()
        classifier.zero_grad(set_to_none=True)

    start = time.perf_counter()
    for _ in range(plan.model_warmup):  # with compiled: the compile happens in the first
        step()
    sync()
    warmup_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(plan.model_steps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    if compiled:  # the flop counter does not see inside a compiled graph: the eager step's count
        flops = ctx.flops[(method, num_classes)] * plan.batch
    else:
        flops = count_step_flops(step)
        ctx.flops[(method, num_classes)] = flops / plan.batch
    peak = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
    described = classifier.summary()
    return {"kind": "model_step", "method": method, "classes": num_classes, "images_per_s": plan.batch / seconds,
            "step_s": seconds, "flops_per_image": flops / plan.batch, "mfu": flops / seconds / (plan.peak_tflops * 1e12),
            "peak_tflops_assumed": plan.peak_tflops, "peak_memory_bytes": peak,
            "guidance_tokens": described["guidance_tokens"], "bottleneck": described["bottleneck"],
            "precision": "bf16-autocast, frozen weights bf16" if device.type == "cuda" else "fp32",
            "compiled": plan.compile_backend if compiled else None, "warmup_s": warmup_s}


def measure_input(ctx: Context, num_classes: int, path: str, workers: int) -> dict[str, Any]:
    """The training DataLoader alone (plain PIL decode or the image cache), after its first round."""
    import bench_input

    from sage_cli.data import load_prepared_data
    from sage_cli.pixels import device_normalizer

    plan = ctx.plan
    data = load_prepared_data(ctx.prepared(num_classes))
    plain, cached = bench_input.build_train_datasets(data, ctx.cache(num_classes), ctx.cpu_backbone().record)
    warmup = max(1, plan.prefetch_batches(workers))
    images = plan.input_batches * plan.batch
    dataset = cached if path == "cached" else plain
    rate = bench_input.time_loader(dataset, workers, plan.batch, images, warmup, plan.device)
    return {"kind": "input", "input": "cached (--image-cache)" if path == "cached" else "plain (PIL decode)",
            "uint8_batches": device_normalizer(dataset) is not None, "workers": workers, "batch": plan.batch, "warmup_batches": warmup, "timed_images": images,
            "images_per_s": rate}


def measure_encode_text(ctx: Context, num_classes: int) -> dict[str, Any]:
    """``sage encode-text`` of the class names x 10 templates."""
    from sage_cli.encode_text import EncodeTextConfig, run

    plan = ctx.plan
    templates = ctx.work / "templates.txt"
    templates.write_text("\n".join(TEMPLATES) + "\n")
    result = run(EncodeTextConfig(prepared=ctx.prepared(num_classes), out=ctx.text(num_classes), model=plan.model,
                                  pretrained="none", templates=str(templates),
                                  batch_size=1024 if plan.device == "cuda" else 64, device=plan.device, force=True))
    record = result.record
    return {"kind": "encode_text", "classes": num_classes, "texts": record["counts"]["texts"],
            "texts_per_s": record["texts_per_second"], "seconds": record["seconds"]}


def steady_windows(windows: list[dict[str, Any]], prefetch_batches: int) -> list[float]:
    """images/s of the train log windows that start after the first window and after the
    DataLoader's first ``prefetch_batches`` batches (one micro-batch a step): until then the
    steps eat batches the workers made all at once, not at their steady rate."""
    train = [w for w in windows if w.get("kind") == "train"]
    if not train:
        return []
    start_after = max(prefetch_batches, train[0]["step"])
    return [w["images_per_s"] for w in train if w["step"] - w["steps"] >= start_after]


def measure_train(ctx: Context, method: str, num_classes: int, fast: bool) -> dict[str, Any]:
    """``sage train --max-steps`` through the plain or the cached input path; speed from its own records."""
    from sage_cli import artifacts
    from sage_cli.train import build_train_config, run

    plan = ctx.plan
    out = ctx.work / f"run_{method}_c{num_classes}_{'fast' if fast else 'plain'}"
    options = {
        "prepared": ctx.prepared(num_classes), "text_cache": ctx.text(num_classes), "out": out, "method": method,
        "batch_size": plan.batch, "num_workers": plan.num_workers, "device": plan.device,
        "max_steps": plan.train_steps, "epochs": 1, "log_every": plan.log_every, "eval_every": 0, "seed": 0,
        "force": True, "image_cache": ctx.cache(num_classes) if fast else None,
    }
    if method == "sage":
        options["guidance_tokens"] = plan.guidance_tokens_for(num_classes)
    run(build_train_config(options))
    windows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    prefetch = plan.prefetch_batches(plan.num_workers)
    steady = steady_windows(windows, prefetch)
    if not steady:
        raise RuntimeError(f"no log window after the first {prefetch} prefetched batches; raise train_steps")
    images_per_s = statistics.median(steady)
    record = artifacts.read_record(out, artifacts.TRAIN_RECORD)
    flops = ctx.flops.get((method, num_classes))
    return {"kind": "train", "method": method, "classes": num_classes,
            "input": "fast (--image-cache)" if fast else "plain (PIL decode)", "images_per_s": images_per_s,
            "steady_windows_images_per_s": steady, "prefetch_batches": prefetch,
            "windows_images_per_s": [w["images_per_s"] for w in windows if w.get("kind") == "train"],
            "mfu": images_per_s * flops / (plan.peak_tflops * 1e12) if flops else None,
            "num_workers": plan.num_workers, "peak_memory": record["peak_memory"],
            "guidance_tokens": record["classifier"]["guidance_tokens"],
            "bottleneck": record["classifier"]["bottleneck"],
            "whole_run_images_per_s": record["images_per_s"], "steps": record["steps"],
            "files": [str(out / "metrics.jsonl"), str(out / artifacts.TRAIN_RECORD)]}


def measure_report(plan: Plan, tte: bool) -> dict[str, Any]:
    """The report's evaluation loop (zero-shot head) on in-memory batches, with or without five-crop TTE."""
    import torch
    import torch.nn.functional as F

    from sage_cli.methods import model_config
    from sage_cli.model import build_classifier
    from sage_cli.report.evaluate import evaluate_classifier

    device = torch.device(plan.device)
    clip = load_backbone(plan.model, device)
    classes = plan.classes[0]
    text = F.normalize(torch.randn(classes, clip.record["embedding_dim"]), dim=-1).to(device)
    classifier = build_classifier(clip.model, text, model_config("zeroshot")).eval()
    size = clip.record["image_size"]
    shape = (plan.eval_batch, 5, 3, *size) if tte else (plan.eval_batch, 3, *size)
    batch = (torch.randn(shape), torch.zeros(plan.eval_batch, dtype=torch.long), torch.arange(plan.eval_batch))
    evaluate_classifier(classifier, [batch], device, plan.eval_batch)  # warm-up
    _, stats = evaluate_classifier(classifier, [batch] * plan.eval_batches, device, plan.eval_batch * plan.eval_batches)
    return {"kind": "report", "tte": tte, "classes": classes, "eval_batch": plan.eval_batch,
            "images_per_s": stats.images_per_second, "precision": stats.precision}


# --------------------------------------------------------------------------------------------
# Driver


def release_memory() -> None:
    """Between steps: drop what the last one left (models, CUDA cache)."""
    gc.collect()
    if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
        sys.modules["torch"].cuda.empty_cache()


def stop_on_term(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-bench"),
                        help="the returned folder: summary.json, summary.md, results.tar.gz and two logs")
    parser.add_argument("--work", type=Path, default=None,
                        help="scratch folder outside --out (default: a new one under $TMPDIR, removed at the end)")
    parser.add_argument("--keep-work", action="store_true", help="keep the default scratch folder")
    parser.add_argument("--force", action="store_true", help="replace an earlier run's files in --out")
    parser.add_argument("--cpu-smoke", action="store_true", help="every step, tiny, on the CPU")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and its expected time, run nothing")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="skip steps that would end past this many seconds (GPU default 420; smoke: none)")
    parser.add_argument("--cpus", type=int, default=None,
                        help="CPUs to size the DataLoader workers for (default: those this process may use)")
    parser.add_argument("--tests-timeout", type=float, default=None, help="seconds for pytest (GPU default 180)")
    parser.add_argument("--fail-figure", action="append", default=[], metavar="STEP",
                        help="make STEP raise (checks that one failure is recorded and the others still run)")
    parser.add_argument("--peak-tflops", type=float, default=989.0,
                        help="the GPU's dense bf16 peak for MFU (H100 / H200 SXM: 989)")
    return parser.parse_args(argv)


def check_request(args: argparse.Namespace, plan: Plan, work: Path) -> None:
    """BenchError for a step name that does not exist, unusable folders, or no CUDA for the GPU plan."""
    unknown = set(args.fail_figure) - {s.name for s in build_steps(plan, Context(plan, args.out, work))}
    if unknown:
        raise BenchError(f"--fail-figure {sorted(unknown)[0]}: no such step (see --dry-run)")
    check_folders(args.out, work, args.force)
    if plan.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise BenchError("no CUDA device; use --cpu-smoke on a CPU")


def run(args: argparse.Namespace, plan: Plan, work: Path) -> dict[str, Any]:
    """Every step into ``args.out`` (bench.log, the summary files) with scratch under ``work``."""
    import torch

    if plan.mode == "cpu-smoke":
        torch.set_num_threads(1)
    torch.manual_seed(0)
    ctx = Context(plan, args.out, work)
    header = {"mode": plan.mode, "out": str(args.out.resolve()), "work": str(work.resolve()),
              "plan": dataclasses.asdict(plan)}
    runner = Runner(args.out, work, header, budget_s=plan.budget_s, step_timeout_s=plan.step_timeout_s,
                    fail=frozenset(args.fail_figure), render=render_markdown, after_step=release_memory)
    return runner.run_all(build_steps(plan, ctx))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = Plan.build(args)
    if args.dry_run:
        steps = build_steps(plan, Context(plan, args.out, args.work or Path("work")))
        print(json.dumps(describe_plan(plan, steps, args.out, args.work), indent=2))
        return 0
    made_work = args.work is None
    work = Path(tempfile.mkdtemp(prefix="sage-gpu-bench-")) if made_work else args.work
    try:
        check_request(args, plan, work)
        args.out.mkdir(parents=True, exist_ok=True)
        for name in RETURNED:
            (args.out / name).unlink(missing_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        open_log(args.out)
        signal.signal(signal.SIGTERM, stop_on_term)  # `timeout` sends it: the summary still says interrupted
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")
        summary = run(args, plan, work)
    except BenchError as exc:
        print(f"bench_gpu: {exc}", file=sys.stderr)
        return 2
    finally:
        if made_work and not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    print((args.out / SUMMARY_MD).read_text())  # the tables in the output's tail too
    counts = summary["counts"]
    failed = [s["name"] for s in summary["steps"] if s["status"] == "failed"]
    print(f"bench_gpu: {counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped in "
          f"{summary['elapsed_s']} s; {args.out}/summary.md" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
