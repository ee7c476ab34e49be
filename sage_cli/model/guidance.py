"""Guidance tokens T [M, E] for the SG-Adapter: the class vectors, or M < C k-means centroids."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from sage_cli.config import option_label
from sage_cli.errors import SageError

logger = logging.getLogger(__name__)

KMEANS_SEED = 0
KMEANS_ITERATIONS = 20


def build_guidance_tokens(class_embeddings: torch.Tensor, num_tokens: int | None = None) -> torch.Tensor:
    """T = the normalised class vectors (num_tokens None or C), else M spherical k-means centroids.

    The result is deterministic (fixed seed, CPU float32) and L2-normalised, on the input's device.
    """
    num_classes = class_embeddings.shape[0]
    tokens = F.normalize(class_embeddings.detach().float(), dim=-1)
    if num_tokens is None or num_tokens == num_classes:
        return tokens
    if num_tokens > num_classes:
        raise SageError(f"{option_label('guidance_tokens')} {num_tokens} exceeds the number of classes ({num_classes})")
    centroids = compute_kmeans_centroids(tokens.cpu(), num_tokens)
    logger.info("guidance: %d k-means centroids of %d class vectors", num_tokens, num_classes)
    return centroids.to(class_embeddings.device)


def compute_kmeans_centroids(
    vectors: torch.Tensor,
    k: int,
    iterations: int = KMEANS_ITERATIONS,
    seed: int = KMEANS_SEED,
) -> torch.Tensor:
    """Spherical k-means of unit vectors [C, E] -> k unit centroids [k, E], deterministic.

    Starts from k distinct vectors drawn with a seeded generator; assigns by cosine similarity;
    a cluster that empties keeps its previous centroid.
    """
    generator = torch.Generator().manual_seed(seed)
    start = torch.randperm(vectors.shape[0], generator=generator)[:k]
    centroids = vectors[start].clone()  # [k, E]
    for _ in range(iterations):
        assign = (vectors @ centroids.t()).argmax(dim=1)  # [C]
        sums = torch.zeros_like(centroids).index_add_(0, assign, vectors)  # [k, E]
        counts = torch.bincount(assign, minlength=k)  # [k]
        updated = torch.where(counts[:, None] > 0, F.normalize(sums, dim=-1), centroids)
        if torch.equal(updated, centroids):
            break
        centroids = updated
    return centroids
