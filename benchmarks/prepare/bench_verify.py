"""What the content hashes cost on the iNaturalist-2018-sized preparation of ``bench_prepare.py``.

Writes the tables that ``sage prepare inat2018`` writes for that benchmark (the same 461,939
manifest rows and paths, 8,142 classes; the images themselves are not needed: only the tables are
hashed), then times, best of ``--repeats``:

- ``seal``: hashing the tables into the record at the end of prepare;
- ``read_record``: reading ``prepare.json`` with and without verifying the tables' sha256;
- ``load_prepared_data``: what train and report do to read the dataset (verification included),
  and the share of it that verification is.

    .venv/bin/python benchmarks/prepare/bench_verify.py --json-out benchmarks/prepare/cpu_verify_inat2018.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_prepare import MIN, NUM_CLASSES, VAL_PER_CLASS, compute_profile, machine  # noqa: E402


def write_tables(out: Path) -> None:
    """manifest.parquet, classes.parquet and a sealed prepare.json of the benchmark's size."""
    from sage_cli import artifacts
    from sage_cli.prepare import compute_class_table

    counts = compute_profile()
    rows: dict[str, list] = {"path": [], "label": [], "split": []}
    for split, per_class in (("train", counts), ("test", np.full(NUM_CLASSES, VAL_PER_CLASS))):
        for label, n in enumerate(per_class):
            for i in range(n):
                rows["path"].append(f"train_val2018/K{label % 13}/{label}/{split}{i:04d}.jpg")
                rows["label"].append(label)
                rows["split"].append(split)
    rows["sample_id"] = list(range(len(rows["path"])))
    artifacts.write_table(out, artifacts.MANIFEST, rows)
    classes = compute_class_table([f"species {i}" for i in range(NUM_CLASSES)], np.repeat(np.arange(NUM_CLASSES), counts),
                                  100, 20)
    artifacts.write_table(out, artifacts.CLASSES, classes)
    record = artifacts.build_record("prepare", {"dataset": "inat2018-sized"}, dataset="inat2018", image_root=".",
                                    group_thresholds={"many": 100, "few": 20}, min_count=MIN)
    artifacts.write_record(out, artifacts.PREPARE_RECORD,
                           artifacts.seal_record(out, record, (artifacts.MANIFEST.filename, artifacts.CLASSES.filename)))


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from sage_cli import artifacts
    from sage_cli.data import load_prepared_data

    files = (artifacts.MANIFEST.filename, artifacts.CLASSES.filename)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        write_tables(out)
        record = artifacts.read_record(out, artifacts.PREPARE_RECORD)
        sizes = {name: (out / name).stat().st_size for name in files}
        seal = best(lambda: artifacts.seal_record(out, record, files), args.repeats)
        verified = best(lambda: artifacts.read_record(out, artifacts.PREPARE_RECORD), args.repeats)
        unverified = best(lambda: artifacts.read_record(out, artifacts.PREPARE_RECORD, verify=False), args.repeats)
        load = best(lambda: load_prepared_data(out), args.repeats)
    result = {
        "benchmark": "content-hash verification, inat2018-sized prepared dataset",
        "manifest_rows": 461_939, "classes": NUM_CLASSES, "bytes": sizes,
        "seal_seconds": round(seal, 4), "read_record_verified_seconds": round(verified, 4),
        "read_record_unverified_seconds": round(unverified, 4),
        "load_prepared_data_seconds": round(load, 4),
        "verification_share_of_load": round((verified - unverified) / load, 3),
        "torch_threads": torch.get_num_threads(), "repeats": args.repeats, **machine(),
        "versions": artifacts.software_versions(),
    }
    print(json.dumps(result))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
