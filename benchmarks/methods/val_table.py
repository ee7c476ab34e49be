"""Val figures of finished runs, paired by seed against a reference: the table choices are made from.

    python benchmarks/methods/val_table.py runs/bench-methods [--reference lift]

Reads each run's last val evaluation from its metrics.jsonl (the one `sage train` writes at the end
of training on --eval-split val), so no report is needed. Layout: ROOT/seed<N>/<variant>/ as
`run_methods.py` writes it. Prints, per variant, mean val top-1 over seeds and the difference to
the reference paired by seed (mean [95% t-interval], points) for overall / many / medium / few.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sage_cli.stats import summarise

from run_methods import format_paired  # this script's directory (run as a script)

KEYS = ("top1", "many", "medium", "few")


def read_val(run: Path) -> dict | None:
    """The last ``eval`` entry on val of a finished run (train.json present), else None."""
    if not (run / "train.json").is_file() or not (run / "metrics.jsonl").is_file():
        return None
    last = None
    for line in (run / "metrics.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry.get("kind") == "eval" and entry.get("split") == "val":
            last = entry
    return last


def collect(root: Path) -> dict[str, dict[int, dict]]:
    """variant -> seed -> val metrics, for every finished run under ``root``."""
    table: dict[str, dict[int, dict]] = {}
    for seed_dir in sorted(root.glob("seed*")):
        seed = int(seed_dir.name.removeprefix("seed"))
        for run in sorted(p for p in seed_dir.iterdir() if p.is_dir()):
            metrics = read_val(run)
            if metrics is not None:
                table.setdefault(run.name, {})[seed] = metrics
    return table


def format_table(table: dict[str, dict[int, dict]], reference: str) -> str:
    lines = [f"| variant | seeds | val overall | many | medium | few | overall - {reference} | many | medium | few |",
             "|---|---|---:|---:|---:|---:|---|---|---|---|"]
    base = table.get(reference, {})
    for name, runs in sorted(table.items(), key=lambda item: (item[0] != reference, item[0])):
        means = [f"{summarise(100 * m[k] for m in runs.values()).mean:.1f}" for k in KEYS]
        diffs = ["–" if name == reference else format_paired({s: 100 * m[k] for s, m in runs.items()},
                                                             {s: 100 * m[k] for s, m in base.items()})
                 for k in KEYS]
        seeds = ",".join(str(s) for s in sorted(runs))
        lines.append(f"| {name} | {seeds} | " + " | ".join(means) + " | " + " | ".join(diffs) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path)
    parser.add_argument("--reference", default="lift")
    args = parser.parse_args()
    print(format_table(collect(args.root), args.reference))


if __name__ == "__main__":
    main()
