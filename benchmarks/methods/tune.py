"""Tune Sage's loss options on Shapes-LT's VALIDATION split (never on test), demo settings.

    python benchmarks/methods/tune.py --out runs/bench-methods --seed 0 \\
        --grid "lam=1" "lam=0.5" "lam=0.25" "lam=0.1" "compensation=count lam=0.25"

Each grid entry is a set of `sage train` options (name=value) on top of `--method sage` (or
`method=lift` ...) with the demo's training settings. The val figures are train.json's final
evaluation; results go to tuning.json and TUNING.md beside this script unless --no-record.
Shares --out with run_methods.py, so the prepared data and text cache are made once.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from run_methods import HERE, machine_description, prepare_inputs

from sage_cli.demo import DemoConfig


def parse_entry(entry: str) -> dict[str, object]:
    """``"lam=0.25 compensation=count"`` -> {"lam": 0.25, "compensation": "count"}."""
    options: dict[str, object] = {}
    for item in entry.split():
        key, _, value = item.partition("=")
        try:
            options[key] = float(value) if "." in value or value.isdigit() else value
        except ValueError:
            options[key] = value
    return options


def train_entry(entry: str, seed: int, out: Path, base: DemoConfig) -> dict:
    from sage_cli.train import build_train_config
    from sage_cli.train import run as train

    extra = parse_entry(entry)
    method = str(extra.pop("method", "sage"))
    run_dir = out / "tune" / f"seed{seed}" / (f"{method}_" + entry.replace(" ", "_").replace("=", "-"))
    options = {
        "prepared": out / "prepared", "text_cache": out / "text", "out": run_dir, "method": method,
        "epochs": base.epochs, "batch_size": base.batch_size, "lr": base.lr, "seed": seed,
        "device": base.device, "num_workers": 0, "eval_every": 0, "eval_split": "val", **extra,
        "force": run_dir.exists() and not (run_dir / "train.json").exists(),
    }
    record = train(build_train_config(options)).record
    final = record["final_eval"]
    return {"entry": entry, "method": method, "seed": seed, "loss": record["config"]["loss"],
            **{k: final[k] for k in ("top1", "many", "medium", "few")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-methods"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", nargs="+", required=True)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    base = DemoConfig(out=args.out, device="cpu")
    prepare_inputs(args.out, base)
    rows = []
    for entry in args.grid:
        rows.append(train_entry(entry, args.seed, args.out, base))
        row = rows[-1]
        print(f"{row['method']:6s} {entry:40s} val top1 {100 * row['top1']:.1f}  many {100 * row['many']:.1f}  "
              f"medium {100 * row['medium']:.1f}  few {100 * row['few']:.1f}", flush=True)
        if not args.no_record:
            write_tuning(rows, args.seed)


def write_tuning(rows: list[dict], seed: int) -> None:
    path = HERE / "tuning.json"
    old = json.loads(path.read_text())["rows"] if path.is_file() else []
    keep = [r for r in old if (r["method"], r["entry"], r["seed"]) not in {(x["method"], x["entry"], x["seed"]) for x in rows}]
    merged = keep + rows
    machine = machine_description()
    path.write_text(json.dumps({"machine": machine, "split": "val", "rows": merged}, indent=2) + "\n")
    lines = ["| method | options | seed | val overall | many | medium | few |", "|---|---|---|---|---|---|---|"]
    for r in merged:
        lines.append(f"| {r['method']} | {r['entry']} | {r['seed']} | " + " | ".join(
            f"{100 * r[k]:.1f}" for k in ("top1", "many", "medium", "few")) + " |")
    (HERE / "TUNING.md").write_text(
        "# Shapes-LT: tuning the compensation factor on the validation split\n\n"
        "Demo training settings; toy CLIP; **val** split (the test split is only used by "
        f"run_methods.py). Written by tune.py.\nMachine: {machine}.\n\n" + "\n".join(lines) + "\n"
    )


if __name__ == "__main__":
    main()
