"""Where does a trained SG-Adapter's guidance attention go? Class-selectivity per block.

    python benchmarks/methods/attention_probe.py RUN_DIR [--per-class 5] [--split val] [--json OUT]

For images of the run's prepared dataset (``--per-class`` of each class of ``--split``) it runs the
trained classifier once with every adapter's ``record_attention`` on, and reads the attention each
adapter computed its output from (``SGAdapter.last_attention`` [B, h, N, M]: under the top-k routing
of sage-topk too), not a recomputation. Per block: how often the image's own class gets the most
attention (attention averaged over the image's tokens and heads), the mean attention mass on the
true class, how many distinct tokens win across images, and the mean attention entropy against the
uniform one; for routed guidance also how often the true class is inside the image's route.
Guidance that selects class semantics picks the true class far above chance (1 / M); a near-constant
pick means the branch acts as a bias. Class-selectivity needs one guidance token per class (M = C).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from sage_cli.data import ManifestDataset, load_prepared_data
from sage_cli.train import load_trained_classifier
from sage_cli.train.restore import PREPARED, locate_input


def summarise_attention(attention: torch.Tensor, labels: torch.Tensor, route: torch.Tensor | None = None) -> dict:
    """Class-selectivity of one block's attention [B, h, N, M] (M = C) for images with ``labels`` [B].

    ``route`` [B, M] bool: the tokens each image could attend to (routed guidance), or None.
    """
    per_image = attention.float().mean(dim=(1, 2))  # [B, M]: averaged over heads and tokens
    winner = per_image.argmax(-1)  # [B]
    num_tokens = attention.shape[-1]
    entropy = -(attention.float().clamp_min(1e-12).log() * attention.float()).sum(-1)  # [B, h, N]
    summary = {
        "true_class_top": float((winner == labels).float().mean()),
        "true_class_mass": float(per_image.gather(1, labels[:, None]).mean()),
        "chance": 1.0 / num_tokens,
        "distinct_winners": len(set(winner.tolist())),
        "entropy": float(entropy.mean()),
        "uniform_entropy": math.log(num_tokens),
    }
    if route is not None:
        summary["true_class_in_route"] = float(route.gather(1, labels[:, None]).float().mean())
        summary["route_size"] = int(route[0].sum())
    return summary


def probe(run: Path, per_class: int, split: str) -> dict:
    """Load ``run``, record every adapter's attention on ``per_class`` images of each class of ``split``."""
    classifier, clip, record, _ = load_trained_classifier(run, device="cpu")
    adapters = [a for a in classifier.adapters() if a.guidance is not None]
    if not adapters:
        raise SystemExit(f"{run}: method {record['method']} has no guidance attention to probe")
    data = load_prepared_data(locate_input(run, record, PREPARED))  # recorded relative to the run
    rows = data.split(split).groupby("label").head(per_class).reset_index(drop=True)
    dataset = ManifestDataset(rows, data.image_root, clip.preprocess_eval)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])  # [B, 3, H, W]
    labels = torch.as_tensor(rows["label"].to_numpy().copy())
    bank = adapters[0].guidance
    if bank.num_tokens != len(data.classes):
        raise SystemExit(f"{run}: {bank.num_tokens} guidance tokens for {len(data.classes)} classes; "
                         "class-selectivity needs one token per class")
    for adapter in adapters:
        adapter.record_attention = True
    route = None
    if bank.top_k:  # the route the classifier will use: the frozen tower's top-k
        with torch.no_grad(), bank.bypassed():
            route = bank.compute_route(classifier.run_tower(images))
    with torch.no_grad():
        top1 = float((classifier(images).argmax(1) == labels).float().mean())
    blocks = [summarise_attention(a.last_attention, labels, route) for a in adapters]
    return {"run": str(run), "method": record["method"], "split": split, "images": len(labels), "top1": top1,
            "blocks": blocks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--per-class", type=int, default=5)
    parser.add_argument("--split", default="val", choices=["val", "test"])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    result = probe(args.run, args.per_class, args.split)
    print(f"{args.run} ({result['method']}): top-1 {100 * result['top1']:.1f}% on {result['images']} "
          f"{args.split} images")
    for i, block in enumerate(result["blocks"]):
        routed = (f", true class in the top-{block['route_size']} route for {100 * block['true_class_in_route']:.1f}%"
                  if "true_class_in_route" in block else "")
        print(f"block {i}: true class most attended for {100 * block['true_class_top']:.1f}% "
              f"(chance {100 * block['chance']:.2f}%), mass on it {100 * block['true_class_mass']:.2f}%, "
              f"{block['distinct_winners']} distinct winners, entropy {block['entropy']:.2f} nats "
              f"(uniform {block['uniform_entropy']:.2f}){routed}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
