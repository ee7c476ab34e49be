"""Heads and their initialisation from image features, against hand-computed values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sage_cli.errors import SageError
from sage_cli.model import build_classifier
from sage_cli.model.head import CosineHead, L2NormedHead, LinearHead
from sage_cli.model.head_init import compute_head_vectors
from sage_cli.methods import model_config

# Two classes in 2-D: class 0 at (1, 0) and (0, 1); class 1 at (-1, 0), listed first.
FEATURES = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
LABELS = torch.tensor([1, 0, 0, 1])


def test_class_mean_is_the_normalised_mean() -> None:
    vectors = compute_head_vectors("class-mean", FEATURES, LABELS, 2)
    r = 2 ** -0.5
    torch.testing.assert_close(vectors, torch.tensor([[r, r], [-1.0, 0.0]]))


def test_k_shot_takes_each_class_first_images() -> None:
    vectors = compute_head_vectors("k-shot", FEATURES, LABELS, 2, shots=1)
    torch.testing.assert_close(vectors, torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))  # (0, 1) is class 0's second


def test_linear_probe_is_the_ridge_solution() -> None:
    # X^T X = [[3, 0], [0, 1]], + I -> diag(4, 2); X^T Y = [[1, -2], [1, 0]] -> W^T = [[1/4, -1/2], [1/2, 0]]
    vectors = compute_head_vectors("linear-probe", FEATURES, LABELS, 2)
    expected = F.normalize(torch.tensor([[0.25, 0.5], [-0.5, 0.0]]), dim=-1)
    torch.testing.assert_close(vectors, expected)


def test_a_class_without_features_is_refused() -> None:
    with pytest.raises(SageError, match=r"--head-init class-mean: classes \[2\] have no training features"):
        compute_head_vectors("class-mean", FEATURES, LABELS, 3)


def test_head_logits_hand_values() -> None:
    w = torch.tensor([[3.0, 4.0], [0.0, 2.0]])  # rows of norm 5 and 2
    x = torch.tensor([[1.0, 0.0]]) * 2  # a raw feature of norm 2
    torch.testing.assert_close(CosineHead(w, scale=10.0)(x), torch.tensor([[6.0, 0.0]]))  # 10 * cos
    torch.testing.assert_close(L2NormedHead(w)(x), torch.tensor([[1.2, 0.0]]))  # x . w / |w|
    torch.testing.assert_close(LinearHead(w)(x), torch.tensor([[6.0, 0.0]]))  # x . w + 0


@pytest.mark.parametrize("head", ["linear", "l2"])
def test_raw_feature_heads_read_the_unnormalised_feature(tiny_clip, class_embeddings, images, head) -> None:
    classifier = build_classifier(tiny_clip, class_embeddings, model_config("linear", head=head, head_feature="projected"))
    with torch.no_grad():
        raw = classifier.encode_raw(images)
        expected = raw @ (class_embeddings.t() if head == "linear" else F.normalize(class_embeddings, dim=-1).t())
        torch.testing.assert_close(classifier(images), expected, rtol=0, atol=1e-5)
    assert classifier.num_trainable == 640 + (10 if head == "linear" else 0)


def test_head_vectors_replace_the_text_init(tiny_clip, class_embeddings) -> None:
    vectors = F.normalize(torch.ones(10, 64), dim=-1)
    classifier = build_classifier(tiny_clip, class_embeddings, model_config("linear", head_init="class-mean"),
                                  head_vectors=vectors)
    assert torch.equal(classifier.head.weight.detach(), vectors)


def test_random_init_draws_seeded_unit_rows_of_the_head_width(tiny_clip, class_embeddings) -> None:
    torch.manual_seed(3)
    expected = F.normalize(torch.randn(10, 64), dim=-1)  # what the seeded generator gives next
    torch.manual_seed(3)
    classifier = build_classifier(tiny_clip, class_embeddings, model_config("linear", head_init="random",
                                                                            head_feature="projected"))
    assert torch.equal(classifier.head.weight.detach(), expected)
    assert torch.allclose(classifier.head.weight.norm(dim=-1), torch.ones(10))
    pre = build_classifier(tiny_clip, class_embeddings, model_config("linear", head_init="random"))
    assert pre.head.weight.shape == (10, tiny_clip.visual.proj.shape[0])  # the pre-projection width
