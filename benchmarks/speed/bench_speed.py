"""CPU measurements of issue 23's speed changes, each the median of repeats (RESULTS.md beside this).

- ``batches``: a batch of 128 crops of 224 x 224 as uint8 vs float32: bytes, collate time, one
  thread's copy of it into a buffer (the pin-memory thread's work per batch), the float pass the workers no
  longer do (ToTensor + Normalize of one crop), the device normalisation of a whole batch, and
  a uint8 flip of one crop (why the flip stays on the workers);
- ``attention``: the SG-Adapter's guidance attention, forward + backward, all B x N queries in one
  group (the flattened form) vs the groups of ``compute_attention_groups`` (CPU: one per thread);
- ``compile``: a sage training step (forward, loss, backward) of a small tower, eager vs the tower
  compiled as ``--compile`` compiles it (inductor), and the one-off compile time;
- ``frozen_cast``: what casting the frozen weights once saves per pass: the fp32 -> bf16 cast of
  ViT-B/16's frozen weights, which autocast repeats at every op of every pass.

    flock /tmp/sage-heavy.lock .venv/bin/python benchmarks/speed/bench_speed.py --out benchmarks/speed/cpu_t2.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "input"))


def median_s(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_batches(repeats: int) -> dict[str, Any]:
    import numpy as np
    from PIL import Image
    from torch.utils.data import default_collate
    from torchvision import transforms as T

    from sage_cli.pixels import Normalize

    mean, std = [0.481, 0.458, 0.408], [0.269, 0.261, 0.276]
    crops = [torch.randint(0, 256, (3, 224, 224), dtype=torch.uint8) for _ in range(128)]
    floats = [T.Normalize(mean, std)(c.float().div(255)) for c in crops]
    pil = Image.fromarray(np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8))
    batch_u8, batch_f32 = default_collate(crops), default_collate(floats)
    buffers = (torch.empty_like(batch_u8), torch.empty_like(batch_f32))
    to_float = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
    normalize = Normalize(mean, std)
    return {
        "batch": "128 x 3 x 224 x 224",
        "bytes": {"uint8": batch_u8.numel(), "float32": batch_f32.numel() * 4},
        "collate_ms": {"uint8": 1e3 * median_s(lambda: default_collate(crops), repeats),
                       "float32": 1e3 * median_s(lambda: default_collate(floats), repeats)},
        # into a buffer allocated once, as the pin-memory thread copies into reused pinned blocks
        "one_thread_copy_ms": {"uint8": 1e3 * median_s(lambda: buffers[0].copy_(batch_u8), repeats),
                               "float32": 1e3 * median_s(lambda: buffers[1].copy_(batch_f32), repeats)},
        "worker_float_pass_us_per_image": {
            "PILToTensor (uint8 path)": 1e6 * median_s(lambda: T.PILToTensor()(pil), 20 * repeats),
            "ToTensor + Normalize (float path)": 1e6 * median_s(lambda: to_float(pil), 20 * repeats),
            "to float + normalise of a cached uint8 crop (the cached path's float pass)":
                1e6 * median_s(lambda: normalize(crops[0]), 20 * repeats)},
        "normalise_batch_on_cpu_ms": 1e3 * median_s(lambda: normalize(batch_u8), repeats),
        "flip_uint8_crop_us": 1e6 * median_s(lambda: crops[0].flip(-1), 20 * repeats),
    }


def measure_attention(repeats: int, batch: int, tokens: int, keys: int, rank: int) -> dict[str, Any]:
    from sage_cli.model.adapters import attend_in_groups, compute_attention_groups, count_parallel_slots

    generator = torch.Generator().manual_seed(0)
    queries = batch * tokens
    q0 = torch.randn(queries, rank, generator=generator)
    k0 = torch.randn(1, 1, keys, rank, generator=generator)
    v0 = torch.randn(1, 1, keys, rank, generator=generator)
    grouped = compute_attention_groups(queries, keys, 1, count_parallel_slots("cpu", 0), key_tile=keys)

    def step(groups: int) -> Callable[[], None]:
        def run() -> None:
            q, k, v = (t.clone().requires_grad_() for t in (q0, k0, v0))
            attend_in_groups(q, k, v, groups).sum().backward()
        return run

    times = {g: 1e3 * median_s(step(g), repeats) for g in sorted({1, grouped})}
    return {"queries": f"{batch} images x {tokens} tokens = {queries}", "keys_M": keys, "rank_r": rank, "heads": 1,
            "groups_by_rule": grouped, "fwd_bwd_ms": {f"G={g}": t for g, t in times.items()},
            "speedup": times[1] / times[grouped]}


def measure_compile(repeats: int, batch: int) -> dict[str, Any]:
    import copy

    import torch.nn.functional as F

    from sage_cli.backbone import build_backbone
    from sage_cli.losses import LossConfig, build_loss
    from sage_cli.methods import model_config
    from sage_cli.model import build_classifier

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="bench-speed-inductor-"))  # cold
    clip = build_backbone("sage-tiny", "none", "cpu")
    embeddings = F.normalize(torch.randn(100, 64, generator=torch.Generator().manual_seed(0)), dim=-1)
    eager = build_classifier(clip.model, embeddings, model_config("sage")).train()
    compiled = copy.deepcopy(eager)
    compiled.compile_tower()
    loss_fn = build_loss(LossConfig(loss="la", compensation="semantic"), torch.arange(1, 101).float(), embeddings)
    images = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(batch) % 100

    def step(model: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            logits, features = model.forward_with_features(images)
            loss_fn(logits, labels, features).backward()
            model.zero_grad(set_to_none=True)
        return run

    start = time.perf_counter()
    step(compiled)()
    compile_s = time.perf_counter() - start
    eager_ms, compiled_ms = 1e3 * median_s(step(eager), repeats), 1e3 * median_s(step(compiled), repeats)
    return {"model": "sage-tiny (width 64, 2 blocks, 32 px), sage, 100 classes", "batch": batch,
            "first_step_with_cold_compile_s": compile_s, "step_ms": {"eager": eager_ms, "compiled": compiled_ms},
            "speedup": eager_ms / compiled_ms}


def measure_frozen_cast(repeats: int) -> dict[str, Any]:
    import open_clip

    from sage_cli.precision import NORMS

    visual = open_clip.create_model("ViT-B-16", pretrained=None).visual
    norms = {id(p) for m in visual.modules() if isinstance(m, NORMS) for p in m.parameters(recurse=False)}
    frozen = [p.detach() for p in visual.parameters() if id(p) not in norms]
    count = sum(p.numel() for p in frozen)
    seconds = median_s(lambda: [p.to(torch.bfloat16) for p in frozen], repeats)
    return {"tower": "ViT-B/16 image tower", "frozen_params_cast": count,
            "bytes_per_pass_autocast": count * 6, "cast_all_ms_on_cpu": 1e3 * seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--parts", nargs="+", default=["batches", "attention", "compile", "frozen_cast"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import bench_input

    result: dict[str, Any] = {
        "machine": {"cpu": bench_input.cpu_model(), "cores_visible": len(os.sched_getaffinity(0)),
                    "platform": platform.platform(), "load_average_before": list(os.getloadavg())},
        "threads": args.threads, "torch": torch.__version__, "repeats": args.repeats}
    parts = {"batches": lambda: measure_batches(args.repeats),
             "attention": lambda: measure_attention(args.repeats, 32, 197, 1024, 32),
             "compile": lambda: measure_compile(args.repeats, 64),
             "frozen_cast": lambda: measure_frozen_cast(args.repeats)}
    for name in args.parts:
        result[name] = parts[name]()
        print(name, json.dumps(result[name], indent=1), flush=True)
    result["machine"]["load_average_after"] = list(os.getloadavg())
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
