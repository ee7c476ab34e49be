"""Micro-benchmark: images/s of the frozen forward, LIFT and Sage training steps on ViT-B/16.

Random init (no download). For each class count it builds a LIFT and a Sage classifier on copies
of the same image tower and alternates their timed steps, so machine noise hits both alike; the
figure per mode is the median step time. A training step is forward + compensated LA loss +
backward (no optimizer step: the SGD update over ~1e5 adapter parameters is negligible).

    .venv/bin/python benchmarks/train_speed/bench_forward.py                  # CPU, batch 8
    .venv/bin/python benchmarks/train_speed/bench_forward.py --device cuda --batch 128 --bf16
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from sage_cli.losses import build_loss
from sage_cli.methods import METHODS, model_config
from sage_cli.model import build_classifier


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--classes", type=int, nargs="+", default=[1000, 8142])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    parser.add_argument("--sage-tokens", type=int, default=None,
                        help="also time sage with this many k-means guidance tokens where M < C")
    parser.add_argument("--json", default=None, help="write the results to this file")
    return parser.parse_args()


def build_tower_holder(visual: nn.Module) -> nn.Module:
    """A stand-in CLIP model holding only a copy of the image tower (the text tower is not needed)."""
    holder = nn.Module()
    holder.visual = copy.deepcopy(visual)
    return holder.eval().requires_grad_(False)


def make_train_step(classifier: nn.Module, loss: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    autocast: Callable) -> Callable[[], None]:
    def step() -> None:
        with autocast():
            logits, features = classifier.forward_with_features(images)
            value = loss(logits, labels, features)
        value.backward()
        classifier.zero_grad(set_to_none=True)
    return step


def time_steps(steps: dict[str, Callable[[], None]], warmup: int, timed: int, sync: Callable) -> dict[str, float]:
    """Median seconds per step for each named step, the steps interleaved round-robin."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    sync()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(timed):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def bench_classes(visual: nn.Module, num_classes: int, args: argparse.Namespace) -> dict[str, float]:
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    embeddings = F.normalize(torch.randn(num_classes, visual.output_dim, generator=generator), dim=-1)
    counts = torch.randint(1, 1000, (num_classes,), generator=generator).float()
    size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
    images = torch.randn(args.batch, 3, size, size, generator=generator).to(device)
    labels = torch.randint(0, num_classes, (args.batch,), generator=generator).to(device)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.bf16 else torch.enable_grad
    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)
    frozen = build_tower_holder(visual).to(device)

    def frozen_step() -> None:
        with torch.no_grad(), autocast():
            frozen.visual(images)

    variants = {"lift": model_config("lift"), "sage": model_config("sage")}
    if args.sage_tokens and args.sage_tokens < num_classes:
        variants[f"sage_m{args.sage_tokens}"] = model_config("sage", guidance_tokens=args.sage_tokens)
    steps = {"frozen": frozen_step}
    for name, cfg in variants.items():
        classifier = build_classifier(build_tower_holder(visual).to(device), embeddings, cfg)
        loss = build_loss(METHODS["sage"].loss, counts, embeddings).to(device).train()
        steps[name] = make_train_step(classifier.train(), loss, images, labels, autocast)
    seconds = time_steps(steps, args.warmup, args.steps, sync)
    result = {f"{name}_images_per_s": args.batch / s for name, s in seconds.items()}
    for name in variants:
        if name.startswith("sage"):
            result[f"{name}_over_lift_time"] = seconds[name] / seconds["lift"]
    return result


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = open_clip.create_model(args.model, pretrained=None)
    results = {"model": args.model, "batch": args.batch, "device": args.device, "threads": args.threads,
               "bf16": args.bf16, "warmup": args.warmup, "steps": args.steps, "classes": {}}
    for num_classes in args.classes:
        results["classes"][num_classes] = bench_classes(model.visual, num_classes, args)
        print(num_classes, json.dumps(results["classes"][num_classes]), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
