"""Gated guidance (sage-gate): the frozen zero-shot log-posterior added to the guidance attention."""

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


def test_gate_is_the_log_softmax_of_the_scaled_frozen_cosines() -> None:
    bank = GuidanceBank(torch.eye(3), gate=2.0)
    frozen = torch.tensor([[3.0, 0.0, 4.0]])  # cosines to e0, e1, e2: 0.6, 0, 0.8
    logits = torch.tensor([1.2, 0.0, 1.6])
    expected = logits - math.log(sum(math.exp(v) for v in logits.tolist()))
    torch.testing.assert_close(bank.compute_gate(frozen), expected[None])
    with bank.routed(frozen):
        torch.testing.assert_close(bank.bias, expected[None])
        assert bank.mask is None  # gated, not routed
    assert bank.bias is None  # cleared on leaving
    assert bank.needs_frozen_pass and not GuidanceBank(torch.eye(3)).needs_frozen_pass


def test_with_zero_keys_the_attention_is_the_zero_shot_posterior() -> None:
    """Q K^T = 0, so softmax(0 + log p0) = p0 for every token: the guidance reads E_{p0}[V]."""
    bank = GuidanceBank(torch.eye(3), gate=5.0)
    torch.manual_seed(0)
    adapter = SGAdapter(width=4, bottleneck=2, guidance=bank)
    with torch.no_grad():
        adapter.key.weight.zero_()
    q = torch.randn(2, 4, 2, generator=torch.Generator().manual_seed(1))  # [B, N, r]
    frozen = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.6, 0.8]])
    posterior = (5.0 * frozen).softmax(-1)  # [B, M]
    values = adapter.value(bank.tokens)  # [M, r]
    with bank.routed(frozen):
        fused = adapter.attend(q)
        adapter.record_attention = True
        recorded = adapter.attend(q)
    torch.testing.assert_close(adapter.last_attention[:, 0], posterior[:, None, :].expand(2, 4, 3))
    torch.testing.assert_close(recorded, (posterior @ values)[:, None, :].expand(2, 4, 2))
    torch.testing.assert_close(fused, recorded)


def test_gate_and_route_compose_renormalising_over_the_route() -> None:
    bank = GuidanceBank(torch.eye(3), top_k=2, gate=1.0)
    torch.manual_seed(0)
    adapter = SGAdapter(width=4, bottleneck=2, guidance=bank)
    adapter.record_attention = True
    q = torch.randn(1, 3, 2, generator=torch.Generator().manual_seed(2))
    frozen = torch.tensor([[0.8, 0.6, 0.0]])  # unit: cosines 0.8, 0.6, 0; route: tokens 0 and 1
    with bank.routed(frozen):
        adapter.attend(q)
    keys = adapter.key(bank.tokens)[:2]
    logits = q[0] @ keys.t() / math.sqrt(2) + torch.tensor([0.8, 0.6])  # the gate's constant cancels
    torch.testing.assert_close(adapter.last_attention[0, 0, :, :2], logits.softmax(-1))
    assert torch.equal(adapter.last_attention[0, 0, :, 2], torch.zeros(3))


def test_sage_gate_at_init_is_the_frozen_tower_and_the_gate_changes_a_tuned_one(tiny_clip, class_embeddings, images) -> None:
    reference = copy.deepcopy(tiny_clip)
    gated = build_classifier(tiny_clip, class_embeddings, model_config("sage-gate"))
    assert gated.adapters()[0].guidance.gate == 25.0 and gated.adapters()[0].guidance.top_k is None
    assert gated.summary()["guidance_gate"] == 25.0
    with torch.no_grad():
        assert torch.equal(gated.encode(images), F.normalize(reference.encode_image(images), dim=-1))
    plain = build_classifier(reference, class_embeddings, model_config("sage"))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for adapter in gated.adapters():
            for param in adapter.parameters():
                param.add_(0.3 * torch.randn(param.shape, generator=generator))
    plain.load_trainable_state_dict(gated.trainable_state_dict())  # the same weights, no gate
    with torch.no_grad():
        assert (gated(images) - plain(images)).abs().max() > 1e-4


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"method": "lift", "guidance_gate": 5.0}, "--guidance-gate applies to the methods with text guidance"),
        ({"method": "sage", "guidance": False, "guidance_gate": 5.0}, "--guidance-gate gates the text guidance"),
        ({"method": "sage", "guidance_gate": -1.0}, "--guidance-gate must be >= 0"),
    ],
)
def test_bad_gate_options_name_the_flag(options: dict, message: str) -> None:
    with pytest.raises(SageError, match=message):
        model_config(**options)


def test_gate_resolution() -> None:
    assert model_config("sage-gate").guidance.gate == 25.0
    assert (model_config("sage-gate", guidance_gate=0).guidance.gate or None) is None  # 0: off
    assert model_config("sage", guidance_gate=10.0).guidance.gate == 10.0
    assert (model_config("sage").guidance.gate or None) is None
    assert model_config("sage-gate", guidance=False).guidance is None
