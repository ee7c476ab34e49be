"""Methods and ablations on Shapes-LT, several seeds: overall / many / medium / few, mean ± spread.

    python benchmarks/methods/run_methods.py --out runs/bench-methods --seeds 0 1 2

Reuses `sage demo`'s prepared data and text cache layout under --out and the same training
settings as the demo (so the table explains what the demo shows). Writes results.json and
RESULTS.md beside this script unless --no-record.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from sage_cli.demo import DemoConfig
from sage_cli.demo import _encode as encode
from sage_cli.demo import _prepare as prepare
from sage_cli.stats import summarise as summarise_values
from sage_cli.stats import summarise_paired

# name -> (method, extra options): the four methods, then the ablations of Sage's two pieces.
VARIANTS = {
    "linear": ("linear", {}),
    "lift": ("lift", {}),
    "sage": ("sage", {}),
    "sage, guidance off": ("sage", {"guidance": False}),
    "sage, compensation none": ("sage", {"compensation": "none"}),
    "sage, compensation count": ("sage", {"compensation": "count"}),
    "sage, lambda 1": ("sage", {"lam": 1.0}),  # the method spec's starting value
    # issue 10's named variants (docs/method.md#named-variants); run with --variants
    "sage-topk": ("sage-topk", {}),
    "sage-zs": ("sage-zs", {}),
    "sage-zs, lambda 1": ("sage-zs", {"lam": 1.0}),  # GLA's full correction
}
DEFAULT_VARIANTS = [name for name in VARIANTS if not name.startswith(("sage-topk", "sage-zs"))]
HERE = Path(__file__).resolve().parent


def train_variant(name: str, seed: int, out: Path, base: DemoConfig) -> Path:
    from sage_cli.train import build_train_config
    from sage_cli.train import run as train

    method, extra = VARIANTS[name]
    run_dir = out / f"seed{seed}" / name.replace(", ", "_").replace(" ", "-")
    options = {
        "prepared": out / "prepared", "text_cache": out / "text", "out": run_dir, "method": method,
        "epochs": base.epochs, "batch_size": base.batch_size, "lr": base.lr, "augment": base.augment, "seed": seed,
        "device": base.device, "num_workers": 0, "eval_every": 0, **extra,
        # A run cut off by a killed benchmark is redone; a finished one is reused as it is.
        "force": run_dir.exists() and not (run_dir / "train.json").exists(),
    }
    train(build_train_config(options))
    return run_dir


def evaluate(runs: list[Path], out: Path, split: str = "test") -> dict:
    from sage_cli.report import ReportConfig
    from sage_cli.report import run as report

    result = report(ReportConfig(out=out, runs=tuple(runs), zero_shot=out.parent / "prepared",
                                 text_cache=out.parent / "text", device="cpu", num_workers=0, split=split))
    return result.report


def summarise(rows: dict[str, list[dict]]) -> str:
    lines = ["| method | overall | many | medium | few |", "|---|---|---|---|---|"]
    for name, metrics in rows.items():
        cells = []
        for key in ("top1", "many", "medium", "few"):
            summary = summarise_values(100 * m[key] for m in metrics)
            cells.append(f"{summary.mean:.1f} ± {summary.std or 0.0:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summarise_against(rows: dict[str, list[dict]], seeds: list[int], reference: str = "lift") -> str:
    """Each variant minus ``reference``, paired by seed: mean difference and its 95% t-interval (points)."""
    if reference not in rows:
        return ""
    lines = [f"| method - {reference} | overall | many | medium | few |", "|---|---|---|---|---|"]
    for name, metrics in rows.items():
        if name in (reference, "zero-shot"):
            continue
        cells = []
        for key in ("top1", "many", "medium", "few"):
            ours = {seed: 100 * m[key] for seed, m in zip(seeds, metrics)}
            theirs = {seed: 100 * m[key] for seed, m in zip(seeds, rows[reference])}
            s = summarise_paired(ours, theirs)
            cells.append("–" if s is None else f"{s.mean:+.1f}" + ("" if s.low is None else
                                                                  f" [{s.low:+.1f}, {s.high:+.1f}]"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-methods"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    parser.add_argument("--split", default="test", choices=["test", "val"],
                        help="split the report reads (val: for choices; recorded as results-val.json, never RESULTS.md)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    base = DemoConfig(out=args.out, device="cpu")
    started = time.perf_counter()
    prepare_inputs(args.out, base)
    rows: dict[str, list[dict]] = {"zero-shot": []}
    for i, seed in enumerate(args.seeds):
        runs = [train_variant(name, seed, args.out, base) for name in args.variants]
        report = evaluate(runs, args.out / f"report-{args.split}-seed{seed}", args.split)
        for name, run in zip(["zero-shot", *args.variants], report["runs"]):
            rows.setdefault(name, []).append(run["metrics"])
        print(summarise(rows), flush=True)
        if not args.no_record:  # after every seed, so a cut-off run still leaves its figures
            write_results(rows, args.seeds[: i + 1], base, time.perf_counter() - started, args.split)


def prepare_inputs(out: Path, base: DemoConfig) -> None:
    """The demo's Shapes-LT preparation and toy-CLIP text cache under ``out`` (skipped when done)."""
    prepare(out / "prepared", base)
    encode(out / "prepared", out / "text", base)


def machine_description() -> str:
    cpu = subprocess.run(["sh", "-c", "lscpu | grep 'Model name' | cut -d: -f2"], capture_output=True, text=True)
    return f"{cpu.stdout.strip() or platform.processor()}, {os.cpu_count()} cores, CPU only, torch {torch.__version__}"


def write_results(rows: dict[str, list[dict]], seeds: list[int], base: DemoConfig, seconds: float,
                  split: str = "test") -> None:
    table = summarise(rows)
    paired = summarise_against(rows, seeds)
    machine = machine_description()
    record = {"seeds": seeds, "split": split, "settings": {"epochs": base.epochs, "batch_size": base.batch_size,
              "lr": base.lr}, "machine": machine, "seconds": round(seconds), "results": rows}
    if split == "val":  # choices are made on val; RESULTS.md holds the test tables only
        (HERE / "results-val.json").write_text(json.dumps(record, indent=2) + "\n")
        print(f"\nval, paired by seed against lift:\n{paired}", flush=True)
        return
    (HERE / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    (HERE / "RESULTS.md").write_text(
        f"# Shapes-LT: methods and ablations\n\nSeeds {seeds}; demo settings (epochs {base.epochs}, "
        f"batch {base.batch_size}, lr {base.lr}); toy CLIP; test split, top-1 %, mean ± sample std over "
        f"seeds.\nMachine: {machine}; {record['seconds']} s in all.\n\n{table}\n"
        + (f"\nDifference to lift, paired by seed (points): mean [95% t-interval].\n\n{paired}\n" if paired else "")
    )


if __name__ == "__main__":
    main()
