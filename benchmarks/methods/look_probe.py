"""Is there anything on world v3 that the class descriptions know and a rare class's images do not show?

    python benchmarks/methods/look_probe.py RUN_DIR [RUN_DIR ...] [--split test]

World v3 gives each class 3 looks (size x background) that its descriptions name; each image shows
one. A few class's 4-19 training images may not show all three. This replays the renderer of the
runs' prepared Shapes-LT (default domain and variant, seed 0: the demo's and run_methods'), recovers
each image's look, and reads each run's accuracy on the split's images whose look its class's
training images show ("seen") and on those whose look they do not ("unseen"), per group. If unseen
looks are read much worse, the descriptions carry what the tail lacks, and text has room to help;
if not, the tail's errors come from what no text names (the class's and look's shades).
Diagnostic only: reads the split once, chooses nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sage_cli.data import ManifestDataset, build_loader, iterate_batches, load_prepared_data
from sage_cli.train import load_trained_classifier
from sage_cli.train.restore import PREPARED, locate_input
from sage_cli.world.shapes import generate
from sage_cli.world.shapes_lt import _CHUNK, _SPLIT_STREAMS, DEFAULT_DOMAIN, compute_class_order, \
    compute_variant_seed, resolve_domain


def replay_looks(labels: np.ndarray, split: str, first_image: Path | None = None, seed: int = 0,
                 domain: str = DEFAULT_DOMAIN, variant: int = 0) -> np.ndarray:
    """The look index (0..modes-1 of its class) of each image of ``split``, as prepare_shapes_lt drew it;
    ``first_image``: the split's first PNG, which the replayed stream must render bit for bit."""
    order = np.asarray(compute_class_order(compute_variant_seed(domain, variant)), dtype=np.int64)
    world = resolve_domain(domain, variant)
    rng = np.random.default_rng([seed, _SPLIT_STREAMS[split]])
    looks = []
    for start in range(0, len(labels), _CHUNK):
        ids = order[labels[start : start + _CHUNK]]
        # generate's first draw is each image's look: read it from a copy of the stream, then render to advance it
        copy = np.random.Generator(type(rng.bit_generator)())
        copy.bit_generator.state = rng.bit_generator.state
        looks.append(copy.integers(0, world.modes, size=len(ids)))
        batch = generate(ids, rng, world)
        if start == 0 and first_image is not None and not np.array_equal(batch.images[0], np.asarray(Image.open(first_image))):
            raise SystemExit(f"{first_image}: not what seed {seed} renders; prepared with other options?")
    return np.concatenate(looks)


def predict(run: Path, data, split: str) -> np.ndarray:
    classifier, clip, _, _ = load_trained_classifier(run, device="cpu")
    rows = data.split(split).reset_index(drop=True)
    loader = build_loader(ManifestDataset(rows, data.image_root, clip.preprocess_eval), 256, 0, torch.device("cpu"))
    with torch.no_grad():
        return torch.cat([classifier(batch[0]).argmax(1) for batch in iterate_batches(loader)]).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--split", default="test", choices=("val", "test"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    from sage_cli import artifacts

    record = artifacts.read_record(args.runs[0], artifacts.TRAIN_RECORD)
    data = load_prepared_data(locate_input(args.runs[0], record, PREPARED))
    train = data.split("train").reset_index(drop=True)
    evaluated = data.split(args.split).reset_index(drop=True)
    train_labels, labels = train["label"].to_numpy(), evaluated["label"].to_numpy()
    train_looks = replay_looks(train_labels, "train", data.image_root / train["path"].iloc[0])
    looks = replay_looks(labels, args.split, data.image_root / evaluated["path"].iloc[0])
    num_classes = len(data.classes)
    seen = np.zeros((num_classes, resolve_domain(DEFAULT_DOMAIN).modes), dtype=bool)
    seen[train_labels, train_looks] = True
    image_seen = seen[labels, looks]
    groups = data.classes["group"].to_numpy()[labels]
    print(f"{args.split}: images whose look their class's training images do not show, by group: " + ", ".join(
        f"{g} {int((~image_seen[groups == g]).sum())} of {int((groups == g).sum())}" for g in ("many", "medium", "few")))
    print("| run | group | seen looks | unseen looks |\n|---|---|---:|---:|")
    for run in args.runs:
        correct = predict(run, data, args.split) == labels
        for g in ("medium", "few"):
            cells = []
            for mask in (image_seen, ~image_seen):
                pick = (groups == g) & mask
                cells.append(f"{100 * correct[pick].mean():.1f} ({int(pick.sum())})" if pick.any() else "-")
            print(f"| {run} | {g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
