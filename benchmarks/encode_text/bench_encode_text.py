"""Texts per second of the encode-text stage's encoder loop (``sage_cli.encode_text.encode_texts``).

Random-init weights (no download) and synthetic class names; speed does not depend on the weights.
Times only the batched encode (tokenise + forward + normalise), after one warm-up batch.

    .venv/bin/python benchmarks/encode_text/bench_encode_text.py --model sage-tiny --classes 1000 --templates 1
    .venv/bin/python benchmarks/encode_text/bench_encode_text.py --model ViT-B-32 --classes 1000 --templates 1
    # on a GPU, the issue's reference size (iNaturalist 2018: 8,142 classes x 10 texts):
    .venv/bin/python benchmarks/encode_text/bench_encode_text.py --model ViT-B-16 --classes 8142 --templates 10 --device cuda
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from sage_cli.backbone import load_clip, resolve_device
from sage_cli.encode_text import encode_texts
from sage_cli.encode_text.templates import ENSEMBLE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sage-tiny")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--templates", type=int, default=1, help=f"texts per class (at most {len(ENSEMBLE)})")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = resolve_device(args.device)
    clip = load_clip(args.model, "none", device)
    texts = [t.format(f"class number {c}") for c in range(args.classes) for t in ENSEMBLE[: args.templates]]
    encode_texts(clip.model, clip.tokenizer, texts[: args.batch_size], args.batch_size, device)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    embeddings = encode_texts(clip.model, clip.tokenizer, texts, args.batch_size, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(json.dumps({
        "model": args.model, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": args.threads, "texts": len(texts), "batch_size": args.batch_size,
        "embedding_dim": int(embeddings.shape[1]), "seconds": round(seconds, 2),
        "texts_per_second": round(len(texts) / seconds, 1), "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
