"""Measure the world's instrument criteria (issue 15) on Shapes-LT: no method is compared with another.

    OMP_NUM_THREADS=1 python benchmarks/world/criteria.py --work runs/world-criteria

Every figure comes from `sage` commands this script prints and runs (each skips itself when its
output already holds the same inputs, so a re-run resumes), all with lift at the preset's settings:

1. zero-shot top-1 of the toy CLIP on the test split (the demo's template ensemble): 40 to 65;
2. lift on the long-tailed split >= zero-shot + 8 (overall);
3. lift on a balanced split of about the same size (65 per class: 5,200 images against 5,213) >=
   lift long-tailed + 8 on the few group (classes with < 20 images in the long-tailed split);
4. lift long-tailed at the preset's epochs within 2 points of lift at 3x the epochs;
5. the augmentation (LIFT's RandomResizedCrop + flip, or none) is the one with the higher VAL
   accuracy of the balanced oracle (lift on the balanced split); the preset must record it.

Also the domain-gap table: zero-shot ("a photo of a {}.") on 20 held-out images per class of each
domain and of the two components of the downstream shift. Writes WORK/criteria.json and prints a
Markdown card (for docs/world.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PRESET = REPO / "sage_cli" / "presets" / "shapes_lt.yaml"
BALANCED_PER_CLASS = 65  # 80 x 65 = 5,200 images, the long-tailed split's 5,213 to within 0.3%
GAP_DOMAINS = ("open", "clean", "cast-only", "mild-texture-only", "shades-only", "fine", "texture-only", "moderate",
               "shifted")
AUGMENT = {"rrc": "--augment", "none": "--no-augment"}


def sage(*args: str) -> None:
    """Run one `sage` command (printed first); fail loudly."""
    command = [sys.executable, "-m", "sage_cli", *args]
    print("+ sage " + " ".join(args), flush=True)
    subprocess.run(command, check=True, env={**os.environ, "COLUMNS": "120"})


def prepare(work: Path, name: str, options: list[str], weights: Path) -> tuple[Path, Path]:
    """Prepared split + its text cache (the demo's 18-template ensemble of the toy text tower)."""
    prepared, text = work / name, work / f"{name}_text"
    sage("prepare", "shapes-lt", "--out", str(prepared), *options)
    sage("encode-text", "--prepared", str(prepared), "--model", "sage-toy", "--pretrained", str(weights),
         "--templates", "ensemble", "--device", "cpu", "--out", str(text))
    return prepared, text


def train(work: Path, name: str, prepared: Path, text: Path, augment: str, epochs: int | None = None,
          lr: float | None = None) -> Path:
    out = work / "runs" / (name if lr is None else f"{name}_lr{lr:g}")
    extra = (["--epochs", str(epochs)] if epochs else []) + (["--lr", f"{lr:g}"] if lr is not None else [])
    sage("train", "--config", str(PRESET), "--prepared", str(prepared), "--text-cache", str(text),
         "--method", "lift", "--seed", "0", "--device", "cpu", AUGMENT[augment], *extra, "--out", str(out))
    return out


def report(work: Path, name: str, runs: list[Path], split: str, zero_shot: tuple[Path, Path] | None = None
           ) -> list[dict[str, Any]]:
    """report.json's runs (zero-shot first when asked), evaluated on ``split``."""
    out = work / f"report_{name}"
    extra = ["--zero-shot", str(zero_shot[0]), "--text-cache", str(zero_shot[1])] if zero_shot else []
    sage("report", *map(str, runs), *extra, "--split", split, "--device", "cpu", "--workers", "0", "--out", str(out))
    return json.loads((out / "report.json").read_text())["runs"]


def group_top1(run: dict[str, Any], groups: list[str], group: str) -> float:
    """Top-1 (%) over the classes of ``group`` (balanced test: the mean of their per-class accuracies)."""
    accuracy = [a for a, g in zip(run["metrics"]["per_class_accuracy"], groups) if g == group]
    return 100.0 * sum(accuracy) / len(accuracy)


def load_groups(prepared: Path) -> list[str]:
    import pandas as pd

    return pd.read_parquet(prepared / "classes.parquet")["group"].tolist()


def measure_domain_gap(weights: Path) -> dict[str, float]:
    import torch

    from sage_cli.world.pretrain import build_toy_model, evaluate_world_zero_shot
    from sage_cli.world.shapes import DOMAINS

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    clip, tokenizer = build_toy_model(weights=weights)
    clip.eval()
    return {d: round(evaluate_world_zero_shot(clip, tokenizer, DOMAINS[d], per_class=20, seed=0), 1)
            for d in GAP_DOMAINS}


def read_preset_augment() -> str:
    import yaml

    return "rrc" if yaml.safe_load(PRESET.read_text()).get("augment", True) else "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/world-criteria"))
    parser.add_argument("--weights", type=Path, default=None, help="toy CLIP weights (default: the shipped default)")
    parser.add_argument("--domain", default=None, help="sage prepare shapes-lt --domain (default: its default)")
    parser.add_argument("--variant", type=int, default=0, help="sage prepare shapes-lt --variant")
    parser.add_argument("--quick", action="store_true", help="only lift long-tailed and balanced without "
                        "augmentation, and print criteria 1-3 from them on VAL, for choosing a world without "
                        "reading test (the full pass reuses both runs)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate of every lift run instead of "
                        "the preset's (a candidate demo budget; its runs are named *_lrLR)")
    args = parser.parse_args()
    from sage_cli.world import TOY_WEIGHTS

    weights = (args.weights or TOY_WEIGHTS).resolve()
    world = (["--domain", args.domain] if args.domain else []) + ["--variant", str(args.variant)]
    start = time.perf_counter()
    import yaml

    preset = yaml.safe_load(PRESET.read_text())
    epochs, lr = int(preset["epochs"]), (args.lr if args.lr is not None else float(preset["lr"]))
    at = {"lr": args.lr}  # None: the preset's
    lt = prepare(args.work, "lt", world, weights)
    balanced = prepare(args.work, "balanced", [*world, "--imbalance-ratio", "1", "--max-count",
                                               str(BALANCED_PER_CLASS)], weights)
    if args.quick:  # criteria 1-3 first, without augmentation (the runs are reused by a full pass)
        runs = {"balanced_none": train(args.work, "balanced_none", *balanced, "none", **at),
                "lt_none": train(args.work, "lt_none", *lt, "none", **at)}
        zs, lift_lt = report(args.work, "quick_val", [runs["lt_none"]], "val", zero_shot=lt)
        (lift_bal,) = report(args.work, "quick_val_balanced", [runs["balanced_none"]], "val")
        groups = load_groups(lt[0])
        print(json.dumps({name: {"top1": round(100 * r["metrics"]["top1"], 2),
                                 **{g: round(group_top1(r, groups, g), 2) for g in ("many", "medium", "few")}}
                          for name, r in (("zero-shot", zs), ("lift lt", lift_lt), ("lift balanced", lift_bal))},
                         indent=2))
        return
    # 5: the balanced oracle's val accuracy picks the augmentation (no Sage run involved).
    oracle = {aug: train(args.work, f"balanced_{aug}", *balanced, aug, **at) for aug in ("none", "rrc")}
    val = report(args.work, "val", [oracle["rrc"], oracle["none"]], "val")
    val_top1 = {aug: 100.0 * run["metrics"]["top1"] for aug, run in zip(("rrc", "none"), val)}
    chosen = max(val_top1, key=val_top1.get)
    lt_run = train(args.work, f"lt_{chosen}", *lt, chosen, **at)
    lt_3x = train(args.work, f"lt_{chosen}_3x", *lt, chosen, epochs=3 * epochs, **at)
    zs, lift_lt, lift_3x = report(args.work, "test", [lt_run, lt_3x], "test", zero_shot=lt)
    # Its own report: a report compares runs of one prepared split (the test images are the same).
    (lift_bal,) = report(args.work, "test_balanced", [oracle[chosen]], "test")
    groups = load_groups(lt[0])
    figures = {
        "zero_shot": 100.0 * zs["metrics"]["top1"],
        "lift_lt": 100.0 * lift_lt["metrics"]["top1"],
        "lift_lt_3x": 100.0 * lift_3x["metrics"]["top1"],
        "lift_balanced": 100.0 * lift_bal["metrics"]["top1"],
        **{f"{name}_{g}": group_top1(run, groups, g) for name, run in
           (("zero_shot", zs), ("lift_lt", lift_lt), ("lift_lt_3x", lift_3x), ("lift_balanced", lift_bal))
           for g in ("many", "medium", "few")},
        "val_balanced": val_top1,
    }
    criteria = {
        "1 zero-shot in [40, 65]": 40 <= figures["zero_shot"] <= 65,
        "2 lift LT >= zero-shot + 8": figures["lift_lt"] >= figures["zero_shot"] + 8,
        "3 balanced few >= LT few + 8": figures["lift_balanced_few"] >= figures["lift_lt_few"] + 8,
        "4 |lift LT - lift LT 3x| <= 2": abs(figures["lift_lt"] - figures["lift_lt_3x"]) <= 2,
        "5 preset augmentation = oracle's choice": read_preset_augment() == chosen,
    }
    record = {
        "weights": str(weights), "world_options": world, "epochs": epochs, "lr": lr, "augment_chosen": chosen,
        "figures": {k: (round(v, 2) if isinstance(v, float) else v) for k, v in figures.items()},
        "criteria": criteria, "domain_gap": measure_domain_gap(weights),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None, "seconds": round(time.perf_counter() - start),
    }
    (args.work / "criteria.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    print(format_card(record))


def format_card(record: dict[str, Any]) -> str:
    """The criteria and domain-gap tables of docs/world.md's instrument card."""
    f, ok = record["figures"], list(record["criteria"].values())
    mark = ["met" if m else "**not met**" for m in ok]
    rows = [
        ("1. zero-shot top-1 on test in [40, 65]", f"{f['zero_shot']:.1f}", mark[0]),
        ("2. lift long-tailed >= zero-shot + 8", f"{f['lift_lt']:.1f} vs {f['zero_shot']:.1f} "
         f"(+{f['lift_lt'] - f['zero_shot']:.1f})", mark[1]),
        ("3. lift balanced >= lift long-tailed + 8 on few", f"{f['lift_balanced_few']:.1f} vs {f['lift_lt_few']:.1f} "
         f"(+{f['lift_balanced_few'] - f['lift_lt_few']:.1f})", mark[2]),
        (f"4. lift long-tailed, {record['epochs']} vs {3 * record['epochs']} epochs (peak lr {record['lr']:g}), "
         "within 2",
         f"{f['lift_lt']:.1f} vs {f['lift_lt_3x']:.1f} ({f['lift_lt'] - f['lift_lt_3x']:+.1f})", mark[3]),
        ("5. augmentation = the balanced oracle's val choice", f"{record['augment_chosen']} (val: rrc "
         f"{f['val_balanced']['rrc']:.1f}, none {f['val_balanced']['none']:.1f})", mark[4]),
    ]
    lines = ["| criterion | measured | |", "|---|---|---|", *(f"| {a} | {b} | {c} |" for a, b, c in rows), "",
             "| zero-shot top-1 (\"a photo of a {}.\", 20 per class) | " + " | ".join(record["domain_gap"]) + " |",
             "|---|" + "---:|" * len(record["domain_gap"]),
             "| toy CLIP | " + " | ".join(f"{v:.1f}" for v in record["domain_gap"].values()) + " |"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
