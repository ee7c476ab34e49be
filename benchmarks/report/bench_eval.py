"""Evaluation throughput of `sage report`: images/s through the report's own loop.

Random-init models (no download), synthetic in-memory batches, so the figure is the model and the
loop (forward, softmax, top-5), not image decoding. For each model: a zero-shot head and a Sage
classifier (SG-Adapters in every block) over ``--classes`` classes, with and without five-crop
TTE (which costs 5 forwards per image). One warm-up batch, then ``--batches`` timed batches.

    .venv/bin/python benchmarks/report/bench_eval.py                          # CPU: sage-tiny and ViT-B-16
    .venv/bin/python benchmarks/report/bench_eval.py --models ViT-B-16 --device cuda --batch 256
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch
import torch.nn.functional as F

from sage_cli.backbone import load_clip
from sage_cli.methods import model_config
from sage_cli.model import build_classifier
from sage_cli.report.evaluate import evaluate_classifier


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["sage-tiny", "ViT-B-16"])
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="Write the figures as JSON here.")
    return parser.parse_args()


def measure(model_name: str, method: str, tte: bool, args: argparse.Namespace) -> dict[str, object]:
    torch.manual_seed(0)
    device = torch.device(args.device)
    clip = load_clip(model_name, "none", device)
    size = clip.record["image_size"]
    text = F.normalize(torch.randn(args.classes, clip.record["embedding_dim"]), dim=-1)
    classifier = build_classifier(clip.model, text, model_config(method)).eval()
    shape = (args.batch, 5, 3, *size) if tte else (args.batch, 3, *size)
    batch = (torch.randn(shape), torch.zeros(args.batch, dtype=torch.long), torch.arange(args.batch))
    evaluate_classifier(classifier, [batch], device, args.batch)  # warm-up
    _, stats = evaluate_classifier(classifier, [batch] * args.batches, device, args.batch * args.batches)
    return {"model": model_name, "method": method, "tte": tte, "classes": args.classes, "batch": args.batch,
            "images_per_second": round(stats.images_per_second, 2), "precision": stats.precision}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    rows = [measure(m, method, tte, args) for m in args.models for method in ("zeroshot", "sage")
            for tte in (False, True)]
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpu_count": os.cpu_count(), "threads": args.threads, "device": args.device,
               "torch": torch.__version__}
    if args.device.startswith("cuda"):
        machine["gpu"] = torch.cuda.get_device_name()
    for row in rows:
        print(f"{row['model']:>10} {row['method']:>8} tte={str(row['tte']):5} {row['images_per_second']:>9.2f} images/s")
    if args.out:
        args.out.write_text(json.dumps({"machine": machine, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
