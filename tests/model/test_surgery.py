"""Adapter injection: exact equivalence at init, gradients only where intended, token layouts."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import Transformer
from torch import nn

from sage_cli.errors import SageError
from sage_cli.model import GuidanceBank, SGAdapter, build_classifier, inject_adapters
from sage_cli.model.features import encode_pre_projection, map_text_to_pre_projection
from sage_cli.model.surgery import ParallelAdapterMLP
from sage_cli.methods import model_config


@pytest.mark.parametrize("method", ["sage", "lift"])
def test_zero_init_adapters_leave_features_unchanged(tiny_clip, class_embeddings, images, method) -> None:
    reference = copy.deepcopy(tiny_clip)
    classifier = build_classifier(tiny_clip, class_embeddings, model_config(method))
    expected = F.normalize(reference.encode_image(images), dim=-1)
    with torch.no_grad():
        assert torch.equal(classifier.encode(images), expected)
    # With grad enabled torch's MultiheadAttention leaves its fused inference path once the
    # residual stream requires grad, so the two runs may differ by float rounding only.
    torch.testing.assert_close(classifier.encode(images), expected, rtol=0, atol=1e-6)
    # The head reads h(x) before the projection (LIFT's), its rows LIFT's mapping of the texts.
    pooled = F.normalize(encode_pre_projection(reference.visual, images), dim=-1)
    rows = map_text_to_pre_projection(class_embeddings, reference.visual.proj)
    logits = classifier(images)
    torch.testing.assert_close(logits, 25.0 * pooled @ rows.t(), rtol=0, atol=1e-5)


def test_nonzero_up_projection_changes_features(tiny_clip, class_embeddings, images) -> None:
    reference = F.normalize(copy.deepcopy(tiny_clip).encode_image(images), dim=-1)
    classifier = build_classifier(tiny_clip, class_embeddings, model_config("sage"))
    with torch.no_grad():
        for adapter in classifier.adapters():
            adapter.up.weight.normal_(std=0.5)
        assert (classifier.encode(images) - reference).abs().max() > 1e-3


def sage_tiny_trainable_count(method: str, num_classes: int = 10) -> int:
    """Hand count for sage-tiny: width D = 64, embed E = 64, L = 2 blocks, r = 2 for 10 classes."""
    d, e, layers = 64, 64, 2
    r = 2  # 2 ** floor(log2(10 / (2 * 2)))
    adapter = 2 * d + (d * r + r) + (r * d + d) + 1  # LN + Down (w, b) + Up (w, b) + alpha = 451
    if method == "sage":
        adapter += 2 * e * r  # Wk, Wv (no bias) = 256
    head = num_classes * e  # 640
    return layers * adapter + head


@pytest.mark.parametrize(("method", "expected"), [("sage", 2054), ("lift", 1542), ("linear", 640), ("zeroshot", 0)])
def test_num_trainable_matches_hand_count(tiny_clip, class_embeddings, method, expected) -> None:
    classifier = build_classifier(tiny_clip, class_embeddings, model_config(method))
    if method in ("sage", "lift", "linear"):
        assert expected == (sage_tiny_trainable_count(method) if method != "linear" else 640)
    assert classifier.num_trainable == expected


@pytest.mark.parametrize("method", ["sage", "lift", "linear"])
def test_gradients_reach_only_adapters_and_head(tiny_clip, class_embeddings, images, method) -> None:
    classifier = build_classifier(tiny_clip, class_embeddings, model_config(method)).train()
    with torch.no_grad():  # make every adapter parameter take part in the output
        for adapter in classifier.adapters():
            adapter.up.weight.normal_(std=0.1)
    loss = F.cross_entropy(classifier(images), torch.tensor([0, 3, 7]))
    loss.backward()
    allowed = set(classifier.checkpoint_names())
    with_grad = {n for n, p in classifier.named_parameters() if p.grad is not None}
    assert with_grad == allowed
    assert all(p.grad.abs().sum() > 0 for n, p in classifier.named_parameters() if n in with_grad)
    for name, param in tiny_clip.named_parameters():
        if ".adapter." not in name:
            assert not param.requires_grad, name
            assert param.grad is None, name


def test_blocks_subset_gets_adapters_only_there(tiny_clip, class_embeddings) -> None:
    classifier = build_classifier(tiny_clip, class_embeddings, model_config("lift", blocks=(1,)))
    blocks = tiny_clip.visual.transformer.resblocks
    assert not isinstance(blocks[0].mlp, ParallelAdapterMLP)
    assert isinstance(blocks[1].mlp, ParallelAdapterMLP)
    assert classifier.num_trainable == 451 + 640


def test_block_out_of_range_is_refused(tiny_clip, class_embeddings) -> None:
    with pytest.raises(SageError, match=r"--blocks \[5\] out of range: the image tower has 2 blocks"):
        build_classifier(tiny_clip, class_embeddings, model_config("lift", blocks=(0, 5)))
    assert not any(isinstance(b.mlp, ParallelAdapterMLP) for b in tiny_clip.visual.transformer.resblocks)


def test_second_injection_is_refused(tiny_clip, class_embeddings) -> None:
    build_classifier(tiny_clip, class_embeddings, model_config("lift"))
    with pytest.raises(SageError, match="already carries adapters"):
        build_classifier(tiny_clip, class_embeddings, model_config("lift"))


def test_non_vit_image_tower_is_refused(class_embeddings) -> None:
    model = nn.Module()
    model.visual = nn.Linear(4, 64)
    model.visual.output_dim = 64
    with pytest.raises(SageError, match="open_clip VisionTransformer.*--method linear"):
        build_classifier(model, class_embeddings, model_config("sage"))


def test_wrapped_mlp_keeps_open_clip_attribute_lookups(tiny_clip, class_embeddings) -> None:
    build_classifier(tiny_clip, class_embeddings, model_config("sage"))
    block = tiny_clip.visual.transformer.resblocks[0]
    assert block.get_weight_dtype() == torch.float32  # reads block.mlp.c_fc.weight
    assert isinstance(block.ln_2, nn.Identity)


def _tower(batch_first: bool) -> nn.Module:
    torch.manual_seed(0)
    tower = nn.Module()
    tower.transformer = Transformer(width=32, layers=2, heads=4, batch_first=batch_first)
    return tower.eval().requires_grad_(False)


def test_adapters_act_per_token_in_either_layout() -> None:
    """A seq-first stack (blocks see [N, B, D]) gives what a batch-first one ([B, N, D]) gives."""
    guidance_tokens = F.normalize(torch.randn(6, 16, generator=torch.Generator().manual_seed(4)), dim=-1)
    x = torch.randn(3, 5, 32, generator=torch.Generator().manual_seed(2))  # [B, N, D]
    outputs = {}
    for batch_first in (True, False):
        tower = _tower(batch_first)  # Transformer.forward takes [B, N, D] and transposes itself
        reference = copy.deepcopy(tower)
        torch.manual_seed(1)
        bank = GuidanceBank(guidance_tokens)
        adapters = inject_adapters(tower, lambda width: SGAdapter(width, 4, bank, heads=2))
        with torch.no_grad():
            assert torch.equal(tower.transformer(x), reference.transformer(x))
            for adapter in adapters.values():
                adapter.up.weight.normal_(std=0.5, generator=torch.Generator().manual_seed(3))
            outputs[batch_first] = tower.transformer(x)
            assert (outputs[batch_first] - reference.transformer(x)).abs().max() > 1e-2
    torch.testing.assert_close(outputs[True], outputs[False], rtol=0, atol=1e-5)


def test_adapted_model_survives_deepcopy(tiny_clip, class_embeddings, images) -> None:
    classifier = build_classifier(tiny_clip, class_embeddings, model_config("sage"))
    with torch.no_grad():
        classifier.adapters()[0].up.weight.normal_()
        twin = copy.deepcopy(classifier)
        assert torch.equal(twin(images), classifier(images))
    assert twin.adapters()[0].guidance is twin.adapters()[1].guidance


@pytest.mark.parametrize(("init", "beyond_bound"), [("kaiming-uniform", False), ("kaiming-normal", True)])
def test_adapter_init_draws_the_named_distribution(init: str, beyond_bound: bool) -> None:
    """Both draws have variance 1 / (3 fan_in) (a = sqrt(5)); only the normal one (LIFT's) leaves the
    uniform's bound 1 / sqrt(fan_in). Up and biases are zero either way."""
    torch.manual_seed(0)
    adapter = SGAdapter(512, 256, init=init)
    weight = adapter.down.weight.detach()
    assert abs(weight.var().item() * 3 * 512 - 1.0) < 0.02  # 131,072 draws: sampling error ~0.4%
    assert bool((weight.abs() > 512 ** -0.5).any()) is beyond_bound
    assert not adapter.up.weight.any() and not adapter.down.bias.any() and not adapter.up.bias.any()
