"""Guidance tokens: one per class by default, deterministic k-means centroids when M < C."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sage_cli.errors import SageError
from sage_cli.model import build_classifier, build_guidance_tokens, compute_kmeans_centroids
from sage_cli.methods import model_config


def test_default_tokens_are_the_normalised_class_vectors() -> None:
    vectors = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    torch.testing.assert_close(build_guidance_tokens(vectors), torch.tensor([[0.6, 0.8], [0.0, 1.0]]))


def test_kmeans_finds_planted_clusters() -> None:
    """Three tight groups of unit vectors around the axes -> each group's normalised mean."""
    generator = torch.Generator().manual_seed(0)
    axes = torch.eye(3)
    vectors = F.normalize(axes.repeat_interleave(4, 0) + 0.01 * torch.randn(12, 3, generator=generator), dim=-1)
    centroids = compute_kmeans_centroids(vectors, 3)
    assert centroids.shape == (3, 3)
    order = centroids.argmax(dim=1).argsort()
    group_means = F.normalize(vectors.view(3, 4, 3).mean(dim=1), dim=-1)
    torch.testing.assert_close(centroids[order], group_means, rtol=0, atol=1e-6)
    torch.testing.assert_close(centroids[order], axes, rtol=0, atol=2e-2)


def test_kmeans_tokens_are_deterministic_and_normalised() -> None:
    vectors = F.normalize(torch.randn(50, 16, generator=torch.Generator().manual_seed(5)), dim=-1)
    first = build_guidance_tokens(vectors, 7)
    torch.manual_seed(123)  # the global RNG must not matter
    second = build_guidance_tokens(vectors, 7)
    assert first.shape == (7, 16)
    assert torch.equal(first, second)
    torch.testing.assert_close(first.norm(dim=-1), torch.ones(7))


def test_more_tokens_than_classes_is_refused() -> None:
    with pytest.raises(SageError, match="--guidance-tokens 11 exceeds the number of classes \\(10\\)"):
        build_guidance_tokens(torch.randn(10, 4), 11)


def test_sage_with_fewer_tokens_than_classes_runs(tiny_clip, class_embeddings, images) -> None:
    classifier = build_classifier(tiny_clip, class_embeddings, model_config("sage", guidance_tokens=4))
    adapter = classifier.adapters()[0]
    assert adapter.guidance.tokens.shape == (4, 64)
    assert adapter.guidance is classifier.adapters()[1].guidance  # one bank shared by all blocks
    assert classifier.adapters()[0].key.weight.shape == (2, 64)
    assert classifier(images).shape == (3, 10)
