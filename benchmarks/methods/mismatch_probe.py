"""Issue 25, candidate 1 post hoc: the per-image mismatch term as a tilt of a trained run's tail rows.

    python benchmarks/methods/mismatch_probe.py RUN_DIR [RUN_DIR ...] --text TEXT_CACHE [--anchor TEXT_CACHE]

docs/method.md's Gaussian view gives log rho_y(x) = <v(x) - (mu_y + m_y)/2, mu_y - m_y> / sigma^2 with
mu_y - m_y = r_y (t'_y - m_y), r_y = kappa / (n_y + kappa). Kept per image (not averaged into the KL,
which makes it a class constant: a threshold move) and centred over the class's training features
(so it moves no threshold), it is a tilt of class y's row along r_y (t'_y - m_y). Post hoc, on the
head's own feature space (pre-proj h(x), where LIFT's rows live):

    w'_y = normalize(w_y + g * r_y * (a'_y - m_y))

m_y: mean of the normalised training features of class y; a'_y: the class text mapped into head
space as LIFT's head init maps it (normalize(normalize(t_y) proj^T)), shifted across the modality
gap (- mean_c a_c + mean_x h(x)); head classes (r_y -> 0) keep their rows. g is swept on val; each
g's val logits are read on the head-tail frontier against the run itself (g = 0), so a g that only
moves thresholds scores 0. The g chosen on val (best few at matched many) is applied to test.

Post-hoc diagnostic, not a method: it reads the val split for choices and the test split once.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sage_cli.data import ManifestDataset, build_loader, iterate_batches, load_prepared_data
from sage_cli.encode_text.cache import load_text_cache
from sage_cli.report.frontier import compute_frontier_comparison
from sage_cli.train import load_trained_classifier
from sage_cli.train.restore import PREPARED, locate_input

GAINS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
RIDGE = (0.1, 1.0)
KAPPA = 16.0  # the compensation's default pseudo-count (sage_cli.schema)


def encode_split(encode, data, split: str, preprocess) -> tuple[torch.Tensor, np.ndarray]:
    """``encode`` of the split's images (eval preprocessing, the project's loader), float [N, *] and the labels."""
    rows = data.split(split).reset_index(drop=True)
    loader = build_loader(ManifestDataset(rows, data.image_root, preprocess), 256, 0, torch.device("cpu"))
    with torch.no_grad():
        out = torch.cat([encode(batch[0]) for batch in iterate_batches(loader)]).float()
    return out, rows["label"].to_numpy().copy()


def anchors_in_head_space(classifier, text: torch.Tensor, train_mean: torch.Tensor) -> torch.Tensor:
    """a'_y: LIFT's head-init map of the class texts, shifted across the modality gap to the images' mean."""
    projection = classifier._projection[0].detach().float() if classifier.pre_projection else None
    mapped = F.normalize(F.normalize(text, dim=-1) @ projection.t(), dim=-1) if projection is not None else \
        F.normalize(text, dim=-1)
    return mapped - mapped.mean(0, keepdim=True) + train_mean


def fit_map(anchors: torch.Tensor, means: torch.Tensor, fit_on: torch.Tensor, alpha: float) -> torch.Tensor:
    """Every class's anchor mapped to where its training images lie, by ridge regression fitted on the
    classes of ``fit_on`` (the many group: their training means are their true means), centred."""
    x, y = anchors[fit_on], means[fit_on]
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc = x - x_mean
    weight = torch.linalg.solve(xc.t() @ xc + alpha * torch.eye(x.shape[1]), xc.t() @ (y - y_mean))
    return (anchors - x_mean) @ weight + y_mean


def tilt(head: torch.Tensor, anchors: torch.Tensor, means: torch.Tensor, counts: torch.Tensor, g: float) -> torch.Tensor:
    shrink = KAPPA / (counts + KAPPA)  # r_y
    return F.normalize(head + g * shrink[:, None] * (anchors - means), dim=-1)


def probe(run: Path, text_dirs: dict[str, Path]) -> dict:
    classifier, clip, record, _ = load_trained_classifier(run, device="cpu")
    classifier.eval()
    data = load_prepared_data(locate_input(run, record, PREPARED))
    # h(x) normalised [N, D]: what the cosine head reads
    splits = {s: encode_split(lambda x: F.normalize(classifier.encode_head_input(x), dim=-1), data, s,
                              clip.preprocess_eval) for s in ("train", "val", "test")}
    groups = data.classes["group"].tolist()
    num_classes = len(groups)
    counts = torch.as_tensor(np.bincount(splits["train"][1], minlength=num_classes), dtype=torch.float32)
    prior = (counts / counts.sum()).numpy()
    train_f, train_y = splits["train"]
    means = torch.zeros(num_classes, train_f.shape[1]).index_add_(0, torch.as_tensor(train_y), train_f) / counts[:, None]
    head = F.normalize(classifier.head.weight.detach().float(), dim=-1)
    scale = float(classifier.head.scale)

    def logits(weights: torch.Tensor, split: str) -> dict:
        features, labels = splits[split]
        return {"logits": (scale * features @ weights.t()).numpy(), "labels": labels}

    reference = {s: logits(head, s) for s in ("val", "test")}
    anchors = {name: anchors_in_head_space(classifier, load_text_cache(d).class_embeddings.float(), train_f.mean(0))
               for name, d in text_dirs.items()}
    many = torch.as_tensor([g == "many" for g in groups])
    for name in list(anchors):
        for alpha in RIDGE:
            anchors[f"{name} mapped by many (ridge {alpha:g})"] = fit_map(anchors[name], means, many, alpha)
    val_f, val_y = splits["val"]  # an oracle anchor: where the val images of each class are (a bound, not a method)
    anchors["val class means (oracle)"] = torch.zeros_like(means).index_add_(0, torch.as_tensor(val_y), val_f) / \
        torch.as_tensor(np.bincount(val_y, minlength=num_classes), dtype=torch.float32)[:, None]
    out = {"run": str(run), "anchors": {}, "margins": margins(head, scale, splits, groups, counts),
           "blend": blend_rows(record, data, text_dirs, reference, counts, prior, groups, scale)}
    for name, anchor in anchors.items():
        rows = []
        for g in GAINS:
            weights = tilt(head, anchor, means, counts, g)
            ours = {s: logits(weights, s) for s in ("val", "test")}
            cmp = compute_frontier_comparison(ours, reference, prior, groups)
            at_zero = {k: v[cmp["curve"]["t"].index(0.0)] for k, v in cmp["curve"].items() if k != "t"}
            rows.append({"g": g, "val_t0": at_zero, "val": cmp["val"], "test": cmp["test"]})
        out["anchors"][name] = rows
    return out


def blend_rows(record, data, text_dirs: dict[str, Path], reference: dict, counts: torch.Tensor, prior: np.ndarray,
               groups: list[str], scale: float) -> dict[str, list[dict]]:
    """The mismatch term read per image with the frozen zero-shot classifier as the test class-conditional:
    log rho_y(x) ~ zs_y(x) - z_y(x), shrunk by r_y, so z'_y = z_y + g r_y (zs_y(x) - z_y(x)) (a tail class's
    logit moves toward frozen CLIP's, a head class's stays). zs_y = s cos(v0(x), t_y), the frozen tower's
    v0 and the same scale s as the head. Swept over g on val; the frontier against the run (g = 0)."""
    from sage_cli.backbone import build_backbone

    model = record.get("model", {})
    clip = build_backbone(model["model"], model["pretrained"], "cpu")
    clip.model.eval()
    shrink = KAPPA / (counts + KAPPA)
    frozen = {split: encode_split(lambda x: clip.model.encode_image(x, normalize=True), data, split,
                                  clip.preprocess_eval)[0] for split in ("val", "test")}
    out = {}
    for name, text_dir in text_dirs.items():
        text = F.normalize(load_text_cache(text_dir).class_embeddings.float(), dim=-1)
        rows = []
        for g in GAINS[:5]:
            weight = (g * shrink).clamp(max=1.0).numpy()[None, :]  # [1, C]
            ours = {s: {"logits": (1 - weight) * reference[s]["logits"] + weight * (scale * frozen[s] @ text.t()).numpy(),
                        "labels": reference[s]["labels"]} for s in ("val", "test")}
            cmp = compute_frontier_comparison(ours, reference, prior, groups)
            at_zero = {k: v[cmp["curve"]["t"].index(0.0)] for k, v in cmp["curve"].items() if k != "t"}
            rows.append({"g": g, "val_t0": at_zero, "val": cmp["val"], "test": cmp["test"]})
        out[f"zero-shot blend, {name}"] = rows
    return out


def margins(head: torch.Tensor, scale: float, splits: dict, groups: list[str], counts: torch.Tensor) -> dict:
    """Candidate 2's precondition: does a class's cosine margin (true row's cosine minus the best other
    row's, per image, averaged over the class) drop from its training images to its val images, and
    more as n_y falls? Per class, and the slope of (train - val) against log n_y."""
    per_class = {}
    for split in ("train", "val"):
        features, labels = splits[split]
        cos = features @ head.t()
        true = cos.gather(1, torch.as_tensor(labels)[:, None]).squeeze(1)
        other = cos.scatter(1, torch.as_tensor(labels)[:, None], float("-inf")).max(1).values
        margin = (true - other).numpy()
        per_class[split] = np.array([margin[labels == c].mean() for c in range(len(groups))])
    drop = per_class["train"] - per_class["val"]
    log_n = np.log(counts.numpy())
    slope = float(np.polyfit(log_n, drop, 1)[0])
    by_group = {g: {s: float(per_class[s][[x == g for x in groups]].mean()) for s in ("train", "val")}
                for g in ("many", "medium", "few")}
    return {"train": per_class["train"].tolist(), "val": per_class["val"].tolist(), "slope_drop_vs_log_n": slope,
            "by_group": by_group, "corr_drop_log_n": float(np.corrcoef(log_n, drop)[0, 1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--text", type=Path, required=True, help="the run's text cache (class names)")
    parser.add_argument("--anchor", type=Path, action="append", default=[], help="more text caches as anchors")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    texts = {"names": args.text, **{p.name: p for p in args.anchor}}
    results = [probe(run, texts) for run in args.runs]
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    for result in results:
        print(f"\n{result['run']}")
        m = result["margins"]
        print("cosine margin train -> val by group: " + ", ".join(
            f"{g} {v['train']:.3f} -> {v['val']:.3f}" for g, v in m["by_group"].items()) +
            f"; drop vs log n_y: slope {m['slope_drop_vs_log_n']:+.4f}, corr {m['corr_drop_log_n']:+.2f}")
        for name, rows in {**result["anchors"], **result["blend"]}.items():
            print(f"anchor {name}: g | val t=0 overall/many/few | val few@many, overall@many (pts) | test few, overall, many")
            for r in rows:
                v, c, t = r["val_t0"], r["val"], r["test"] or {}
                fmt = lambda x: "  n/a" if x is None else f"{100 * x:+5.1f}"  # noqa: E731
                print(f"  {r['g']:4.2f} | {100 * v['overall']:.1f}/{100 * v['many']:.1f}/{100 * v['few']:.1f} | "
                      f"{fmt(c['few_at_matched_many'])} {fmt(c['overall_at_matched_many'])} | "
                      f"{fmt(t.get('few'))} {fmt(t.get('overall'))} {fmt(t.get('many'))}")


if __name__ == "__main__":
    main()
