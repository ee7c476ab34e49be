"""Is a trained run's tail limited by its features or by its head? Val accuracy under other heads.

    python benchmarks/methods/head_probe.py RUN_DIR TEXT_CACHE

Computes the run's image features v(x) of the train and val splits once, then scores val with:
the trained head; val class means (an oracle prototype: how separable the features are); train
class means (nearest class mean); the few group's rows mixed with their class texts; and the few
rows moved by the learned drift (w_c - t_c) of the classes most similar in text (a semantic
transfer of what the head learned). Post-hoc diagnostics on val only: none of them is a method.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from sage_cli.data import ManifestDataset, load_prepared_data
from sage_cli.encode_text.cache import load_text_cache
from sage_cli.train import load_trained_classifier
from sage_cli.train.restore import PREPARED, locate_input

GROUPS = ("many", "medium", "few")


def encode_split(classifier, clip, data, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    rows = data.split(split).reset_index(drop=True)
    dataset = ManifestDataset(rows, data.image_root, clip.preprocess_eval)
    features = []
    with torch.no_grad():
        for start in range(0, len(dataset), 256):
            batch = torch.stack([dataset[i][0] for i in range(start, min(start + 256, len(dataset)))])
            features.append(classifier.encode(batch))
    return torch.cat(features), torch.as_tensor(rows["label"].to_numpy().copy())


def score(weights: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, groups) -> dict[str, float]:
    correct = ((features @ F.normalize(weights, dim=-1).t()).argmax(1) == labels).float()
    label_groups = groups[labels.numpy()]
    return {"overall": float(correct.mean()),
            **{g: float(correct[torch.as_tensor(label_groups == g)].mean()) for g in GROUPS}}


def probe(run: Path, text_cache: Path) -> list[tuple[str, dict[str, float]]]:
    classifier, clip, record, _ = load_trained_classifier(run, device="cpu")
    data = load_prepared_data(locate_input(run, record, PREPARED))
    train_f, train_y = encode_split(classifier, clip, data, "train")
    val_f, val_y = encode_split(classifier, clip, data, "val")
    groups = data.classes["group"].to_numpy()
    num_classes = len(data.classes)
    head = F.normalize(classifier.head.weight.detach().float(), dim=-1)
    text = F.normalize(load_text_cache(text_cache).class_embeddings.float(), dim=-1)
    few = torch.as_tensor(groups == "few")
    rows = [("trained head", head),
            ("val class means (oracle prototypes)", torch.zeros_like(head).index_add_(0, val_y, val_f)),
            ("train class means", torch.zeros_like(head).index_add_(0, train_y, train_f))]
    for mix in (0.75, 0.5):
        mixed = head.clone()
        mixed[few] = F.normalize(mix * head[few] + (1 - mix) * text[few], dim=-1)
        rows.append((f"few rows: {mix} trained + {1 - mix:g} text", mixed))
    drift = head - text  # what training changed in each row
    similarity = text @ text.t() - 2 * torch.eye(num_classes)  # no class transfers to itself
    donors = ~few
    for temperature in (0.05, 0.1):
        weights = (similarity / temperature).masked_fill(~donors[None, :], float("-inf")).softmax(-1)
        moved = head.clone()
        moved[few] = F.normalize(head[few] + 0.5 * (weights @ drift)[few], dim=-1)
        rows.append((f"few rows + 0.5 x drift of text-similar classes (T {temperature})", moved))
    return [(name, score(w, val_f, val_y, groups)) for name, w in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("text_cache", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| head (val) | overall | many | medium | few |\n|---|---:|---:|---:|---:|")
    for name, figures in probe(args.run, args.text_cache):
        print(f"| {name} | " + " | ".join(f"{100 * figures[k]:.1f}" for k in ("overall", *GROUPS)) + " |")


if __name__ == "__main__":
    main()
