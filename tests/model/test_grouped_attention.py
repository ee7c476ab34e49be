"""The guidance attention in groups: the group-size rule by hand, and grouped == flattened
(forward and backward) within 1e-6, at the SG-Adapter's shapes and through an adapter."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sage_cli.model.adapters import (
    GuidanceBank,
    SGAdapter,
    attend_in_groups,
    compute_attention_groups,
    count_parallel_slots,
)


@pytest.mark.parametrize(("queries", "keys", "heads", "slots", "expected"), [
    (128 * 197, 1000, 1, 264, 32),  # the docstring's H200 case: ceil(264 / 8) = 33 -> largest divisor 32
    (128 * 197, 1024, 1, 264, 32),  # iNat's 1,024 k-means tokens: 8 tiles again
    (128 * 197, 1024, 4, 264, 8),  # 4 heads: 32 blocks per group -> ceil(264 / 32) = 9 -> 8
    (128 * 197, 128, 1, 264, 197),  # one tile per group: ceil(264 / 1) = 264 -> 197 (25216 = 2^7 x 197)
    (6, 1000, 1, 264, 6),  # never more groups than queries
    (7 * 11, 1000, 1, 40, 1),  # ceil(40 / 8) = 5: no divisor of 77 in 2..5 -> one group
    (100, 50, 2, 2, 1),  # CPU-like: 2 slots, 2 heads -> one group already fills them
])
def test_group_count_rule(queries: int, keys: int, heads: int, slots: int, expected: int) -> None:
    assert compute_attention_groups(queries, keys, heads, slots) == expected


def test_cpu_slots_are_the_threads() -> None:
    assert count_parallel_slots("cpu", 0) == torch.get_num_threads()


def _reference(q: torch.Tensor, k_h: torch.Tensor, v_h: torch.Tensor) -> torch.Tensor:
    """The flattened form by hand: all T queries in one batch, per head."""
    heads, head_dim = k_h.shape[1], k_h.shape[3]
    q_h = q.view(1, -1, heads, head_dim).transpose(1, 2)  # [1, h, T, d]
    weights = (q_h @ k_h.transpose(-1, -2) / head_dim ** 0.5).softmax(-1)  # [1, h, T, M]
    return (weights @ v_h).transpose(1, 2).reshape(q.shape)


@pytest.mark.parametrize("heads", [1, 2])
def test_grouped_equals_flattened_forward_and_backward(heads: int) -> None:
    """T = 8 images x 50 tokens, M = 300 keys, r = 32 (float32): every grouping gives the flattened
    (G = 1) output and gradients of Q, K and V within 1e-6."""
    generator = torch.Generator().manual_seed(0)
    rank, tokens = 32, 300
    q0 = torch.randn(8 * 50, rank, generator=generator)
    k0 = torch.randn(1, heads, tokens, rank // heads, generator=generator)
    v0 = torch.randn(1, heads, tokens, rank // heads, generator=generator)
    upstream = torch.randn(8 * 50, rank, generator=generator)

    def run(groups: int) -> list[torch.Tensor]:
        q, k, v = (t.clone().requires_grad_() for t in (q0, k0, v0))
        out = attend_in_groups(q, k, v, groups) if groups else _reference(q, k, v)
        (out * upstream).sum().backward()
        return [out.detach(), q.grad, k.grad, v.grad]

    flattened = run(1)
    for expected, got in zip(run(0), flattened):  # the flattened kernel is the attention by hand
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    for groups in (2, 8, 25, 400):  # per pair of images, per image, 16 tokens, one query a group
        for name, expected, got in zip(("out", "dq", "dk", "dv"), flattened, run(groups)):
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-6, msg=f"{name}, {groups} groups")


@pytest.mark.parametrize("batch_first", [True, False])
def test_adapter_attention_is_the_flattened_form(batch_first: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """An adapter cuts its queries into as many groups as the rule gives (here 4 of the 12 images
    on 8 slots), in either token layout; output and gradients match one group within 1e-6."""
    generator = torch.Generator().manual_seed(1)
    bank = GuidanceBank(F.normalize(torch.randn(40, 16, generator=generator), dim=-1), batch_first=batch_first)
    torch.manual_seed(0)
    adapter = SGAdapter(width=24, bottleneck=8, guidance=bank, heads=2)
    q0 = torch.randn(12, 5, 8, generator=generator) if batch_first else torch.randn(5, 12, 8, generator=generator)
    seen: list[int] = []

    def run(slots: int) -> list[torch.Tensor]:
        monkeypatch.setattr("sage_cli.model.adapters.count_parallel_slots", lambda *_: slots)
        adapter.zero_grad()
        q = q0.clone().requires_grad_()
        out = adapter.attend(q)
        out.pow(2).sum().backward()
        return [out.detach(), q.grad, adapter.key.weight.grad.clone(), adapter.value.weight.grad.clone()]

    import sage_cli.model.adapters as adapters
    original = adapters.attend_in_groups
    monkeypatch.setattr(adapters, "attend_in_groups", lambda *a: seen.append(a[3]) or original(*a))
    one, grouped = run(1), run(8)
    assert seen == [1, 4]  # 2 heads x 1 tile (CPU: the whole key set) per group -> ceil(8 / 2) = 4 groups
    for name, expected, got in zip(("out", "dq", "dWk", "dWv"), one, grouped):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6, msg=name)


def test_a_traced_adapter_serves_any_batch_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """A trace keeps the group count as a constant: traced, the attention is one group, so the
    exported graph (TorchScript, ONNX) runs other batch sizes than the one it was traced at."""
    import sage_cli.model.adapters as adapters

    monkeypatch.setattr(adapters, "count_parallel_slots", lambda *_: 64)  # many groups when eager
    torch.manual_seed(0)
    adapter = SGAdapter(16, 8, GuidanceBank(F.normalize(torch.randn(5, 12), dim=-1))).eval()
    with torch.no_grad():
        adapter.up.weight.normal_()
        traced = torch.jit.trace(adapter, torch.randn(2, 6, 16))
        other = torch.randn(3, 7, 16)
        torch.testing.assert_close(traced(other), adapter(other), rtol=0, atol=1e-6)
