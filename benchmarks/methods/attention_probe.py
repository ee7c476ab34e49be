"""Where does a trained SG-Adapter's guidance attention go?

    python benchmarks/methods/attention_probe.py RUN_DIR [--per-class 5]

For test images of the run's prepared dataset (``--per-class`` of each class), and for every
adapter block: the guidance token each image attends to most (attention averaged over the image's
tokens), how often that is the image's own class, how many distinct tokens win across images, and
the mean attention entropy against the uniform one. Guidance that selects class semantics would
pick the true class far above chance; a near-constant pick means the branch acts as a bias.
Assumes one guidance token per class (the default) and one attention head.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from sage_cli.data import ManifestDataset, load_prepared_data
from sage_cli.model import adapters
from sage_cli.train import load_trained_classifier


def capture_attention(store: list[tuple[torch.Size, torch.Tensor]]) -> None:
    """Patch SGAdapter.attend to record softmax(Q K^T / sqrt(r)) [tokens, M] of every call."""
    original = adapters.SGAdapter.attend

    def attend(self: adapters.SGAdapter, q: torch.Tensor) -> torch.Tensor:
        keys = self.key(self.guidance.tokens.to(self.key.weight.dtype))  # [M, r]
        scores = q.reshape(-1, q.shape[-1]) @ keys.t() / math.sqrt(self.bottleneck)
        store.append((q.shape, scores.softmax(-1).detach()))
        return original(self, q)

    adapters.SGAdapter.attend = attend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--per-class", type=int, default=5)
    args = parser.parse_args()
    store: list[tuple[torch.Size, torch.Tensor]] = []
    capture_attention(store)
    classifier, clip, record, _ = load_trained_classifier(args.run, device="cpu")
    data = load_prepared_data(record["prepared"])
    test = data.split("test").groupby("label").head(args.per_class).reset_index(drop=True)
    dataset = ManifestDataset(test, data.image_root, clip.preprocess_eval)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])  # [B, 3, H, W]
    labels = torch.as_tensor(test["label"].to_numpy())
    with torch.no_grad():
        top1 = float((classifier(images).argmax(1) == labels).float().mean())
    print(f"{args.run}: top-1 {100 * top1:.1f}% on {len(labels)} test images")
    for block, (shape, attention) in enumerate(store):
        batch_axis = list(shape[:-1]).index(len(labels))  # open_clip runs [B, N, D] or [N, B, D]
        per_token = attention.view(*shape[:-1], -1)  # [B, N, M] or [N, B, M]
        per_image = per_token.mean(dim=1 - batch_axis)  # [B, M]
        winner = per_image.argmax(-1)
        entropy = float(-(per_token.clamp_min(1e-12).log() * per_token).sum(-1).mean())
        print(f"block {block}: true class most attended for {100 * float((winner == labels).float().mean()):.1f}% "
              f"(chance {100 / per_token.shape[-1]:.2f}%), {len(set(winner.tolist()))} distinct winners, "
              f"entropy {entropy:.2f} nats (uniform {math.log(per_token.shape[-1]):.2f})")


if __name__ == "__main__":
    main()
