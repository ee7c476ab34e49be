"""The one-shot GPU check's environment steps: the machine and packages, the SDPA backends that run
the SG-Adapter's guidance attention at the figures' shapes, and the ``gpu`` tests under a timeout."""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from bench_runner import describe_error, run_bounded

ROOT = Path(__file__).resolve().parents[2]


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def describe_environment(device: str, work: Path) -> dict[str, Any]:
    """The machine and software this run measures."""
    import torch

    info: dict[str, Any] = {
        "python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform(),
        "cpus": os.cpu_count(), "cpus_usable": usable_cpus(), "torch": torch.__version__,
        "torch_cuda": torch.version.cuda, "torch_threads": torch.get_num_threads(), "device": device,
        "dev_shm_gb": disk_gb("/dev/shm"), "work_disk_gb": disk_gb(work),
        "packages": package_versions(("sage_cli", "open_clip", "ftfy", "wcwidth", "regex", "timm", "torchvision",
                                      "numpy", "PIL", "pyarrow", "pandas")),
        "wheels_installed": os.environ.get("SAGE_BENCH_WHEELS", "").split(),
        "wheel_site": os.environ.get("SAGE_BENCH_SITE") or None, "nvidia_smi": query_nvidia_smi(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                       "multiprocessors": props.multi_processor_count, "memory_gb": round(props.total_memory / 1e9, 1),
                       "count": torch.cuda.device_count()}
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def disk_gb(path: str | Path) -> dict[str, float] | None:
    """Total and free GB of the filesystem holding ``path`` (None if absent)."""
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    return {"total": round(usage.total / 1e9, 1), "free": round(usage.free / 1e9, 1)}


def package_versions(modules: tuple[str, ...]) -> dict[str, str]:
    """``module: "version (file)"``, or ``"missing: error"``, for each module."""
    import importlib

    found = {}
    for name in modules:
        try:
            module = importlib.import_module(name)
            found[name] = f"{getattr(module, '__version__', '?')} ({Path(module.__file__).parent})"
        except Exception as exc:  # a missing package is a finding, not a failure of this step
            found[name] = f"missing: {describe_error(exc)}"
    return found


def query_nvidia_smi() -> dict[str, str] | str | None:
    """nvidia-smi's name, driver, memory, max SM clock, power limit and state of GPU 0 (None: no nvidia-smi)."""
    if shutil.which("nvidia-smi") is None:
        return None
    fields = ("name", "driver_version", "memory.total", "clocks.max.sm", "power.limit", "pstate")
    try:
        result = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"failed: {describe_error(exc)}"
    values = [v.strip() for v in result.stdout.splitlines()[0].split(",")]
    return dict(zip(fields, values))


def probe_guidance_attention(device: str, queries: int, layers: int,
                             classes_tokens: list[tuple[int, int]]) -> dict[str, Any]:
    """The SDPA backends that run the guidance attention (forward + backward) of ``queries`` queries
    (batch x tokens per image) against each (classes, guidance tokens) pair's M tokens, at LIFT's
    bottleneck width for that class count and ``layers`` blocks."""
    from sage_cli.model import compute_default_bottleneck

    from sage_cli.model.adapters import KEY_TILE, compute_attention_groups, count_parallel_slots

    shapes = {}
    for c, tokens in classes_tokens:
        dim = compute_default_bottleneck(c, layers)
        slots = count_parallel_slots(device, 0)
        groups = compute_attention_groups(queries, tokens, 1, slots, KEY_TILE if device == "cuda" else tokens)
        shapes[f"c{c}"] = {**probe_sdpa(device, queries, tokens, dim, groups), "slots": slots,
                           "flattened": probe_sdpa(device, queries, tokens, dim, 1)}
    return {"kind": "sdpa", "layout": "one head: the B*N queries in G groups [G, 1, B*N/G, r] (SGAdapter.attend) "
            "against [M, r] expanded to [G, 1, M, r]; 'flattened': G = 1",
            "shapes": shapes, "chosen": {k: v["chosen"] for k, v in shapes.items()}}


def probe_sdpa(device: str, queries: int, tokens: int, dim: int, groups: int = 1) -> dict[str, Any]:
    """Each backend tried alone under ``sdpa_kernel`` (ok and ms, or its error), and torch's own pick,
    with the queries in ``groups`` groups as the adapter cuts them."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    generator = torch.Generator().manual_seed(0)
    leaves = [torch.randn(n, dim, generator=generator).to(device, dtype).requires_grad_()
              for n in (queries, tokens, tokens)]
    # the adapter's views (SGAdapter.attend): [B*N, r] -> [G, h=1, B*N/G, r], [M, r] -> [1, 1, M, r] -> [G, 1, M, r]
    q = leaves[0].view(groups, -1, 1, dim).transpose(1, 2)
    k, v = (x.view(1, -1, 1, dim).transpose(1, 2).expand(groups, -1, -1, -1) for x in leaves[1:])
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def forward_backward_ms() -> float:
        times = []
        for _ in range(4):  # the first is the warm-up
            start = time.perf_counter()
            F.scaled_dot_product_attention(q, k, v).float().sum().backward()
            sync()
            times.append((time.perf_counter() - start) * 1e3)
        return round(statistics.median(times[1:]), 3)

    try:
        chosen = SDPBackend(torch._fused_sdp_choice(q, k, v)).name  # what the dispatcher picks here
    except Exception as exc:  # a private function: its absence is recorded, not fatal
        chosen = f"unknown ({describe_error(exc)})"
    backends: dict[str, Any] = {}
    for name in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
        with warnings.catch_warnings(record=True) as caught:  # torch warns why a backend cannot run
            warnings.simplefilter("always")
            try:
                with sdpa_kernel([getattr(SDPBackend, name)]):
                    backends[name] = {"ok": True, "ms_forward_backward": forward_backward_ms()}
            except Exception as exc:  # a backend that cannot run these shapes
                backends[name] = {"ok": False, "error": describe_error(exc)}
        reasons = [str(w.message).splitlines()[0] for w in caught if str(w.message).strip()]
        if reasons:
            backends[name]["warnings"] = reasons[:4]
    return {"queries": queries, "tokens": tokens, "head_dim": dim, "groups": groups,
            "dtype": str(dtype).replace("torch.", ""), "chosen": chosen, "default_ms_forward_backward": forward_backward_ms(), "backends": backends}


def run_gpu_tests(args: tuple[str, ...], log: Path, timeout_s: float) -> dict[str, Any]:
    """``pytest args``, killed after ``timeout_s``; its output in ``log``."""
    command = [sys.executable, "-m", "pytest", *args, "-q", "-p", "no:cacheprovider",
               "--continue-on-collection-errors"]  # a test module that cannot import must not stop the rest
    code, last = run_bounded(command, log, timeout_s, cwd=ROOT)
    if code != 0:
        raise RuntimeError(f"pytest exited {code}: {last}")
    return {"kind": "tests", "command": " ".join(command[2:]), "exit_code": code, "summary": last}
