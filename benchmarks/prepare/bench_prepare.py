"""Seconds for `sage prepare inat2018` on an iNaturalist-2018-sized split, existence check included.

Writes, in a temp dir, iNaturalist18_train.txt (437,513 lines, 8,142 classes, a long tail from
1,000 down to 2 images), iNaturalist18_val.txt (24,426 lines, 3 per class) and an empty file for
every listed image, then times ``sage_cli.prepare.run`` (parse, names, existence check of all
461,939 files, Parquet and record writes) with imports already done, and once more through the
CLI in a fresh process (Python start-up and imports included).

    .venv/bin/python benchmarks/prepare/bench_prepare.py --json-out benchmarks/prepare/cpu_inat2018.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

NUM_CLASSES, TRAIN, VAL_PER_CLASS, MAX, MIN = 8142, 437_513, 3, 1000, 2


def compute_profile() -> np.ndarray:
    """Per-class train counts: MIN + (MAX - MIN) * exp(-i / tau), tau set so the total is TRAIN."""
    lo, hi = 1.0, 5000.0
    for _ in range(60):
        tau = (lo + hi) / 2
        counts = (MIN + (MAX - MIN) * np.exp(-np.arange(NUM_CLASSES) / tau)).astype(np.int64)
        lo, hi = (tau, hi) if counts.sum() < TRAIN else (lo, tau)
    counts[1:1 + TRAIN - counts.sum()] += 1  # the rounding remainder, one image each
    assert counts.sum() == TRAIN and counts.max() == MAX and counts.min() == MIN
    return counts


def write_dataset(root: Path, counts: np.ndarray) -> None:
    """Split files and empty images in the layout of train_val2018/<kingdom>/<id>/<hash>.jpg."""
    for name, per_class in (("train", counts), ("val", np.full(NUM_CLASSES, VAL_PER_CLASS))):
        lines = []
        for label, n in enumerate(per_class):
            folder = root / "train_val2018" / f"K{label % 13}" / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                rel = f"train_val2018/K{label % 13}/{label}/{name}{i:04d}.jpg"
                os.close(os.open(root / rel, os.O_CREAT | os.O_WRONLY, 0o644))
                lines.append(f"{rel} {label}\n")
        (root / f"iNaturalist18_{name}.txt").write_text("".join(lines))


def machine() -> dict[str, str]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"nproc": str(os.cpu_count()), "cpu": model, "date": dt.date.today().isoformat(),
            "load_average": " ".join(f"{x:.1f}" for x in os.getloadavg())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=None, help="threads for the existence check")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()

    import torch  # noqa: F401  (the record lists versions; keep that import out of the timing)

    from sage_cli.prepare import PrepareConfig, run

    with tempfile.TemporaryDirectory() as tmp:
        root, start = Path(tmp) / "inat", time.perf_counter()
        write_dataset(root, compute_profile())
        print(f"wrote the dataset in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        seconds = []
        for k in range(args.repeats):
            start = time.perf_counter()
            result = run(PrepareConfig("inat2018", Path(tmp) / f"out{k}", root=root, workers=args.workers))
            seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sage_cli", "-q", "prepare", "inat2018", "--root", str(root),
                        "--out", str(Path(tmp) / "cli")], check=True)
        cli = time.perf_counter() - start
    record = {"benchmark": "prepare inat2018-sized", "train": result.record["counts"]["train"],
              "test": result.record["counts"]["test"], "classes": result.record["num_classes"],
              "max_count": result.record["max_count"], "min_count": result.record["min_count"],
              "run_seconds": [round(s, 2) for s in seconds], "run_seconds_best": round(min(seconds), 2),
              "cli_seconds": round(cli, 2), "workers": args.workers or "auto", **machine(),
              "versions": result.record["versions"]}
    print(json.dumps(record))
    if args.json_out:
        args.json_out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
