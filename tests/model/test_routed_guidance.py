"""Routed guidance (sage-topk) and recorded attention: hand-computed on tiny banks and on sage-tiny."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from sage_cli.errors import SageError
from sage_cli.model import build_classifier
from sage_cli.model.adapters import GuidanceBank, SGAdapter
from sage_cli.methods import model_config


def _perturb(classifier, seed: int = 3) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for adapter in classifier.adapters():
            for param in adapter.parameters():
                param.add_(0.3 * torch.randn(param.shape, generator=generator))


def test_route_is_the_top_k_of_the_frozen_zero_shot_scores() -> None:
    bank = GuidanceBank(torch.eye(3), top_k=2)
    frozen = torch.tensor([[0.9, 0.1, 0.5], [0.0, 2.0, 1.0]])  # cosines to e0, e1, e2
    expected = torch.tensor([[True, False, True], [False, True, True]])
    assert torch.equal(bank.compute_route(frozen), expected)
    with bank.routed(frozen):
        assert torch.equal(bank.mask, expected)
    assert bank.mask is None  # cleared on leaving


def test_top_k_outside_the_tokens_is_refused() -> None:
    with pytest.raises(ValueError, match="1 <= k <= 3"):
        GuidanceBank(torch.eye(3), top_k=4)


def _adapter(bank: GuidanceBank, heads: int = 1) -> SGAdapter:
    torch.manual_seed(0)
    adapter = SGAdapter(width=4, bottleneck=2, guidance=bank, heads=heads)
    return adapter


def test_a_one_token_route_attends_to_that_token_only() -> None:
    """k = 1: softmax over one key is 1, so every token of image b gets exactly V[route_b]."""
    bank = GuidanceBank(torch.eye(3), top_k=1)
    adapter = _adapter(bank)
    q = torch.randn(2, 5, 2, generator=torch.Generator().manual_seed(4))  # [B, N, r]
    values = adapter.value(bank.tokens)  # [M, r]
    with bank.routed(torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])):  # image 0 -> token 2, image 1 -> token 0
        for record in (False, True):  # the fused kernel and the explicit path agree
            adapter.record_attention = record
            out = adapter.attend(q)
            torch.testing.assert_close(out[0], values[2].expand(5, 2))
            torch.testing.assert_close(out[1], values[0].expand(5, 2))
    attention = adapter.last_attention  # [B, h, N, M]
    assert attention.shape == (2, 1, 5, 3)
    assert torch.equal(attention[0, 0], torch.tensor([[0.0, 0.0, 1.0]] * 5))
    assert torch.equal(attention[1, 0], torch.tensor([[1.0, 0.0, 0.0]] * 5))


def test_recorded_attention_is_the_softmax_the_output_is_made_of() -> None:
    bank = GuidanceBank(F.normalize(torch.randn(4, 3, generator=torch.Generator().manual_seed(5)), dim=-1))
    adapter = _adapter(bank)
    q = torch.randn(2, 3, 2, generator=torch.Generator().manual_seed(6))
    fused = adapter.attend(q)  # no mask, not recorded: the flattened fused path
    adapter.record_attention = True
    recorded = adapter.attend(q)
    torch.testing.assert_close(recorded, fused)
    keys, values = adapter.key(bank.tokens), adapter.value(bank.tokens)  # [M, r]
    expected = (q @ keys.t() / math.sqrt(2)).softmax(-1)  # [B, N, M]
    torch.testing.assert_close(adapter.last_attention[:, 0], expected)
    torch.testing.assert_close(recorded, expected @ values)


def test_routed_attention_renormalises_over_the_route() -> None:
    bank = GuidanceBank(torch.eye(3), top_k=2)
    adapter = _adapter(bank)
    adapter.record_attention = True
    q = torch.randn(1, 4, 2, generator=torch.Generator().manual_seed(7))
    with bank.routed(torch.tensor([[1.0, 0.5, 0.0]])):  # tokens 0 and 1
        out = adapter.attend(q)
    keys, values = adapter.key(bank.tokens)[:2], adapter.value(bank.tokens)[:2]
    weights = (q[0] @ keys.t() / math.sqrt(2)).softmax(-1)  # [N, 2]
    torch.testing.assert_close(adapter.last_attention[0, 0, :, :2], weights)
    assert torch.equal(adapter.last_attention[0, 0, :, 2], torch.zeros(4))
    torch.testing.assert_close(out[0], weights @ values)


def test_tokens_first_layout_gives_the_same_attention() -> None:
    frozen = torch.tensor([[1.0, 0.0, 0.2], [0.0, 0.3, 1.0]])
    q = torch.randn(2, 5, 2, generator=torch.Generator().manual_seed(8))  # [B, N, r]
    first = _adapter(GuidanceBank(torch.eye(3), top_k=2, batch_first=True))
    second = _adapter(GuidanceBank(torch.eye(3), top_k=2, batch_first=False))
    with first.guidance.routed(frozen), second.guidance.routed(frozen):
        batch_major = first.attend(q)
        token_major = second.attend(q.transpose(0, 1))  # [N, B, r]
    torch.testing.assert_close(token_major.transpose(0, 1), batch_major)


def test_sage_topk_at_init_is_the_frozen_tower(tiny_clip, class_embeddings, images) -> None:
    reference = copy.deepcopy(tiny_clip)
    classifier = build_classifier(tiny_clip, class_embeddings, model_config("sage-topk"))
    assert classifier.adapters()[0].guidance.top_k == 5
    with torch.no_grad():
        assert torch.equal(classifier.encode(images), F.normalize(reference.encode_image(images), dim=-1))
        _perturb(classifier)
        bank = classifier.adapters()[0].guidance
        with bank.bypassed():  # the first of the two passes: adapters output 0
            assert torch.equal(classifier.run_tower(images), reference.encode_image(images))
        assert (classifier.encode(images) - F.normalize(reference.encode_image(images), dim=-1)).abs().max() > 1e-3


def test_routing_to_every_token_equals_unrouted_guidance(tiny_clip, class_embeddings, images) -> None:
    routed = build_classifier(copy.deepcopy(tiny_clip), class_embeddings, model_config("sage", guidance_topk=10))
    plain = build_classifier(tiny_clip, class_embeddings, model_config("sage"))
    _perturb(routed)
    plain.load_trainable_state_dict(routed.trainable_state_dict())  # the same weights
    with torch.no_grad():
        torch.testing.assert_close(routed(images), plain(images), rtol=0, atol=1e-5)
        assert (plain(images) - plain.head(F.normalize(plain.encode_head_input(images), dim=-1))).abs().max() == 0


def test_a_token_outside_every_route_does_not_change_the_output(tiny_clip, class_embeddings, images) -> None:
    """Class-selective by construction: with k = 1 only each image's zero-shot top class is read."""
    classifier = build_classifier(tiny_clip, class_embeddings, model_config("sage", guidance_topk=1))
    _perturb(classifier)
    bank = classifier.adapters()[0].guidance
    with torch.no_grad(), bank.bypassed():
        frozen = classifier.run_tower(images)
    routes = bank.compute_route(frozen)  # [B, M]
    unused = int(torch.nonzero(~routes.any(0)).flatten()[0])
    with torch.no_grad():
        before = classifier(images)
        for adapter in classifier.adapters():
            adapter.value.weight[:, :] = 0  # the value of every token changes ...
        changed = classifier(images)
    assert (changed - before).abs().max() > 1e-4  # ... so the output does
    # now only the unused token changes (its key and value with it): nothing moves
    with torch.no_grad():
        for adapter in classifier.adapters():
            adapter.value.weight.normal_(generator=torch.Generator().manual_seed(9))
        before = classifier(images)
        bank.tokens[unused] = 0.5 * bank.tokens[unused] + 0.1
        assert torch.equal(bank.compute_route(frozen), routes)  # still outside every route
        after = classifier(images)
    assert torch.equal(after, before)


def test_routed_guidance_trains_its_keys_and_values(tiny_clip, class_embeddings, images) -> None:
    classifier = build_classifier(tiny_clip, class_embeddings, model_config("sage-topk"))
    _perturb(classifier)
    classifier.train()
    classifier(images).logsumexp(-1).sum().backward()
    adapter = classifier.adapters()[0]
    assert adapter.key.weight.grad.abs().max() > 0 and adapter.value.weight.grad.abs().max() > 0
    assert all(p.grad is None for n, p in classifier.named_parameters() if not p.requires_grad)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"method": "lift", "guidance_topk": 3}, "--guidance-topk applies to the methods with text guidance"),
        ({"method": "sage", "guidance": False, "guidance_topk": 3}, "--guidance-topk routes the text guidance"),
        ({"method": "sage", "guidance_topk": -1}, "--guidance-topk must be >= 0"),
    ],
)
def test_bad_routing_options_name_the_flag(options: dict, message: str) -> None:
    with pytest.raises(SageError, match=message):
        model_config(**options)


def test_routing_resolution() -> None:
    assert model_config("sage-topk").guidance.topk == 5
    assert model_config("sage-topk", guidance_topk=0).guidance.topk == 0  # off, and stays off on reload
    assert (model_config("sage-topk", guidance_topk=0).guidance.topk or None) is None
    assert model_config("sage-topk", guidance=False).guidance is None
    assert (model_config("sage").guidance.topk or None) is None


def test_top_k_above_the_guidance_tokens_is_one_line(tiny_clip, class_embeddings) -> None:
    with pytest.raises(SageError, match=r"--guidance-topk 11 exceeds the guidance tokens \(10\)"):
        build_classifier(tiny_clip, class_embeddings, model_config("sage", guidance_topk=11))
    # the method's own default (5) on fewer classes routes to every token instead
    few = build_classifier(copy.deepcopy(tiny_clip), class_embeddings[:4], model_config("sage-topk"))
    assert few.adapters()[0].guidance.top_k == 4
