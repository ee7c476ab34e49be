"""One-shot GPU benchmark: what a run costs on one GPU, one JSON file per figure.

Figures (ViT-B/16, random weights: no network on the GPU host; bf16 autocast, batch 128):

- ``model_{method}_c{C}.json``: a training step (forward + loss + backward) on in-memory
  batches, for lift and sage at 1,000 and 8,142 classes: images/s, model-FLOP utilisation
  (FLOPs counted by ``torch.utils.flop_counter`` on the real step / step time / peak), peak memory;
- ``train_{method}_c{C}_{plain|fast}.json``: ``sage train`` itself on generated ImageNet-like
  JPEGs, through the plain input path (PIL decode) and the fast one (``--image-cache``), from its
  metrics.jsonl (windows after the first) and train.json (peak memory); MFU from the same count;
- ``encode_text_c{C}.json``: ``sage encode-text`` of C classes x 10 templates;
- ``report_tte_{off|on}.json``: the report's evaluation loop (zero-shot head) without and with
  five-crop TTE;
- ``plan.json``: what ran, where, and the wall time of each figure.

``--cpu-smoke`` runs every figure with sage-tiny, tiny batches and class counts on the CPU (a test
runs it); ``--dry-run`` prints the plan and exits. Run through ``benchmarks/gpu/run.sh``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "input"))

TEMPLATES = (
    "a photo of a {}.", "a bad photo of a {}.", "a close-up photo of a {}.", "a bright photo of a {}.",
    "a cropped photo of a {}.", "a photo of the large {}.", "a photo of the small {}.", "a blurry photo of a {}.",
    "a good photo of a {}.", "a rendering of a {}.",
)


@dataclass(frozen=True)
class Plan:
    """Sizes of one benchmark run (the GPU plan, or the tiny CPU smoke)."""

    model: str
    device: str
    batch: int
    classes: tuple[int, ...]
    methods: tuple[str, ...]
    images: int  # generated JPEGs of the train runs
    train_steps: int
    log_every: int
    model_warmup: int
    model_steps: int
    num_workers: int
    eval_batch: int
    eval_batches: int
    peak_tflops: float

    @classmethod
    def build(cls, args: argparse.Namespace) -> Plan:
        if args.cpu_smoke:
            return cls("sage-tiny", "cpu", 4, (10, 20), ("lift", "sage"), 16, 4, 2, 1, 2, 0, 4, 2, args.peak_tflops)
        workers = min(16, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        return cls("ViT-B-16", "cuda", 128, (1000, 8142), ("lift", "sage"), 2048, 16, 4, 3, 10, workers, 256, 8,
                   args.peak_tflops)

    def figures(self) -> list[str]:
        names = [f"model_{m}_c{c}" for c in self.classes for m in self.methods]
        names += [f"encode_text_c{c}" for c in self.classes]
        names += [f"train_{m}_c{c}_{i}" for c in self.classes for m in self.methods for i in ("plain", "fast")]
        names += ["report_tte_off", "report_tte_on"]
        return names


class Recorder:
    """Writes one JSON file per figure under ``out`` with the machine and the plan beside it."""

    def __init__(self, out: Path, plan: Plan, machine: dict[str, Any]) -> None:
        self.out, self.plan, self.machine = out, plan, machine
        self.out.mkdir(parents=True, exist_ok=True)
        self.walls: dict[str, float] = {}

    def measure(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        start = time.perf_counter()
        figure = fn()
        self.walls[name] = round(time.perf_counter() - start, 2)
        record = {"figure": name, **figure, "wall_s": self.walls[name], "machine": self.machine,
                  "model": self.plan.model, "batch": self.plan.batch}
        (self.out / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
        print(f"{name}: {json.dumps({k: v for k, v in figure.items() if not isinstance(v, (dict, list))})}",
              flush=True)
        return record


def describe_machine(device: str) -> dict[str, Any]:
    import torch

    info = {"platform": platform.platform(), "cpus": len(os.sched_getaffinity(0)), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "device": device}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 1e9, 1)
    return info


# --------------------------------------------------------------------------------------------
# Data: generated JPEGs, prepared datasets, text caches, the image cache


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


def generate_jpegs(directory: Path, count: int, workers: int) -> list[Path]:
    """``count`` ImageNet-like JPEGs (imagenet_like.py), written by ``workers`` processes."""
    import multiprocessing

    import imagenet_like

    if workers <= 1:
        return imagenet_like.write_images(directory, count)
    chunks = [(directory / f"part{i}", count // workers + (i < count % workers), i) for i in range(workers)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        parts = pool.starmap(imagenet_like.write_images, chunks)
    return [p for part in parts for p in part]


# --------------------------------------------------------------------------------------------
# Figures


def count_step_flops(step: Callable[[], None]) -> int:
    """FLOPs of one call of ``step`` (torch's flop counter: matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def measure_model_step(plan: Plan, method: str, num_classes: int) -> dict[str, Any]:
    """A training step on in-memory batches: images/s, MFU, peak memory."""
    import torch
    import torch.nn.functional as F

    from sage_cli.losses import build_loss
    from sage_cli.methods import METHODS, model_config
    from sage_cli.model import build_classifier
    from sage_cli.backbone import build_backbone

    device = torch.device(plan.device)
    clip = build_backbone(plan.model, "none", device)
    generator = torch.Generator().manual_seed(0)
    embeddings = F.normalize(torch.randn(num_classes, clip.record["embedding_dim"], generator=generator), dim=-1)
    counts = torch.randint(2, 1000, (num_classes,), generator=generator).float()
    classifier = build_classifier(clip.model, embeddings.to(device), model_config(method)).train()
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

    for _ in range(plan.model_warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(plan.model_steps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    flops = count_step_flops(step)
    peak = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
    return {"kind": "model_step", "method": method, "classes": num_classes, "images_per_s": plan.batch / seconds,
            "step_s": seconds, "flops_per_image": flops / plan.batch, "mfu": flops / seconds / (plan.peak_tflops * 1e12),
            "peak_tflops_assumed": plan.peak_tflops, "peak_memory_bytes": peak,
            "precision": "bf16-autocast" if device.type == "cuda" else "fp32"}


def measure_encode_text(plan: Plan, prepared: Path, out: Path, num_classes: int) -> dict[str, Any]:
    from sage_cli.encode_text import EncodeTextConfig, run

    templates = out.parent / "templates.txt"
    templates.write_text("\n".join(TEMPLATES) + "\n")
    result = run(EncodeTextConfig(prepared=prepared, out=out, model=plan.model, pretrained="none",
                                  templates=str(templates), batch_size=1024 if plan.device == "cuda" else 64,
                                  device=plan.device, force=True))
    record = result.record
    return {"kind": "encode_text", "classes": num_classes, "texts": record["counts"]["texts"],
            "texts_per_s": record["texts_per_second"], "seconds": record["seconds"]}


def measure_train(plan: Plan, prepared: Path, text: Path, out: Path, method: str, num_classes: int,
                  image_cache: Path | None, flops_per_image: float | None) -> dict[str, Any]:
    """``sage train --max-steps`` through the plain or the fast input path; speed from its own records."""
    from sage_cli import artifacts
    from sage_cli.train import build_train_config, run

    config = build_train_config({
        "prepared": prepared, "text_cache": text, "out": out, "method": method, "batch_size": plan.batch,
        "num_workers": plan.num_workers, "device": plan.device, "max_steps": plan.train_steps, "epochs": 1,
        "log_every": plan.log_every, "eval_every": 0, "seed": 0, "force": True, "image_cache": image_cache,
    })
    result = run(config)
    windows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    speeds = [w["images_per_s"] for w in windows if w.get("kind") == "train"]
    steady = speeds[1:] or speeds  # the first window holds start-up (workers, kernels)
    images_per_s = statistics.median(steady)
    record = artifacts.read_record(out, artifacts.TRAIN_RECORD)
    mfu = images_per_s * flops_per_image / (plan.peak_tflops * 1e12) if flops_per_image else None
    return {"kind": "train", "method": method, "classes": num_classes,
            "input": "fast (--image-cache)" if image_cache else "plain (PIL decode)",
            "images_per_s": images_per_s, "windows_images_per_s": speeds, "mfu": mfu,
            "num_workers": plan.num_workers, "peak_memory": record["peak_memory"],
            "whole_run_images_per_s": record["images_per_s"], "steps": result.record["steps"]}


def measure_report(plan: Plan, tte: bool) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from sage_cli.methods import model_config
    from sage_cli.model import build_classifier
    from sage_cli.report.evaluate import evaluate_classifier
    from sage_cli.backbone import build_backbone

    device = torch.device(plan.device)
    clip = build_backbone(plan.model, "none", device)
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


def run_all(plan: Plan, out: Path, work: Path) -> dict[str, Any]:
    import torch

    from sage_cli.data import load_prepared_data
    from sage_cli.image_cache import Geometry, build_image_cache
    from sage_cli.backbone import build_backbone

    torch.manual_seed(0)
    recorder = Recorder(out, plan, describe_machine(plan.device))
    start = time.perf_counter()
    flops: dict[tuple[str, int], float] = {}
    for num_classes in plan.classes:
        for method in plan.methods:
            figure = recorder.measure(f"model_{method}_c{num_classes}",
                                      lambda m=method, c=num_classes: measure_model_step(plan, m, c))
            flops[(method, num_classes)] = figure["flops_per_image"]
    jpegs = generate_jpegs(work / "jpegs", plan.images, max(1, plan.num_workers))
    clip = build_backbone(plan.model, "none", "cpu")
    for num_classes in plan.classes:
        prepared = write_prepared(work / f"prepared_c{num_classes}", jpegs, num_classes)
        text = work / f"text_c{num_classes}"
        recorder.measure(f"encode_text_c{num_classes}",
                         lambda p=prepared, t=text, c=num_classes: measure_encode_text(plan, p, t, c))
        cache = work / f"images_c{num_classes}"
        build_image_cache(load_prepared_data(prepared), clip.preprocess_eval, Geometry.from_record(clip.record),
                          cache, force=True, workers=plan.num_workers)
        for method in plan.methods:
            for name, image_cache in (("plain", None), ("fast", cache)):
                recorder.measure(
                    f"train_{method}_c{num_classes}_{name}",
                    lambda m=method, c=num_classes, p=prepared, t=text, ic=image_cache, n=name: measure_train(
                        plan, p, t, work / f"run_{m}_c{c}_{n}", m, c, ic, flops[(m, c)]))
    for tte in (False, True):
        recorder.measure(f"report_tte_{'on' if tte else 'off'}", lambda t=tte: measure_report(plan, t))
    summary = {"plan": plan.__dict__, "figures": recorder.walls, "total_wall_s": round(time.perf_counter() - start, 1),
               "machine": recorder.machine}
    (out / "plan.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-bench"), help="directory for the JSON files")
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: OUT/work)")
    parser.add_argument("--cpu-smoke", action="store_true", help="every figure, tiny, on the CPU")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument("--peak-tflops", type=float, default=989.0,
                        help="the GPU's dense bf16 peak for MFU (H100 / H200 SXM: 989)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = Plan.build(args)
    if args.dry_run:
        print(json.dumps({"plan": plan.__dict__, "figures": plan.figures(), "out": str(args.out)}, indent=2))
        return 0
    import torch

    if plan.device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device; use --cpu-smoke on a CPU", file=sys.stderr)
        return 2
    torch.set_num_threads(1 if args.cpu_smoke else torch.get_num_threads())
    summary = run_all(plan, args.out, args.work or args.out / "work")
    print(f"bench_gpu: {len(summary['figures'])} figures in {args.out} ({summary['total_wall_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
