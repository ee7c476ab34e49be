"""SageClassifier: head, zero-shot logits, adapter attention math, trainable state round trip."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from sage_cli.errors import SageError
from sage_cli.model import CosineHead, GuidanceBank, SGAdapter, build_classifier
from sage_cli.model.head import HEADS
from sage_cli.methods import model_config


def test_cosine_head_hand_values() -> None:
    head = CosineHead(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), scale=10.0)
    logits = head(torch.tensor([[3.0, 4.0]]))  # cos = 0.6 and 0.8
    torch.testing.assert_close(logits, torch.tensor([[6.0, 8.0]]))


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_head_logits_are_float32_under_bf16_autocast(kind: str) -> None:
    generator = torch.Generator().manual_seed(3)
    head = HEADS[kind](torch.randn(300, 16, generator=generator), scale=25.0)
    with torch.no_grad():
        head.bias.normal_(generator=generator) if kind == "linear" else None
    features = torch.randn(8, 16, generator=generator).bfloat16()  # what a tower under bf16 autocast returns
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (features @ head.weight.t()).dtype == torch.bfloat16  # autocast is on: a plain product rounds
        logits = head(features)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, head(features.float()), rtol=0, atol=1e-6)


def test_classifier_logits_are_float32_under_bf16_autocast(tiny_clip, class_embeddings, images) -> None:
    classifier = build_classifier(tiny_clip, class_embeddings, model_config("sage"))
    seen = []  # the head's input, whichever feature it reads
    classifier.head.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _ = classifier.forward_with_features(images)
        expected = classifier.head(seen[0].float())
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)


def test_zeroshot_logits_are_scaled_text_cosines(tiny_clip, class_embeddings, images) -> None:
    features = F.normalize(copy.deepcopy(tiny_clip).encode_image(images), dim=-1)
    classifier = build_classifier(tiny_clip, class_embeddings, model_config("zeroshot"))
    with torch.no_grad():
        logits = classifier(images)
    torch.testing.assert_close(logits, 25.0 * features @ class_embeddings.t(), rtol=0, atol=1e-5)
    assert classifier.num_trainable == 0
    assert classifier.adapters() == []


def test_forward_with_features_is_one_pass_of_both(tiny_clip, class_embeddings, images) -> None:
    classifier = build_classifier(tiny_clip, class_embeddings, model_config("sage"))
    with torch.no_grad():
        logits, features = classifier.forward_with_features(images)
        assert torch.equal(features, classifier.encode(images))
        assert torch.equal(logits, classifier(images))
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(3))


def test_sg_adapter_matches_explicit_attention() -> None:
    """alpha * Up(act(Q + softmax(Q K^T / sqrt(r/h)) V)) written out with two heads."""
    torch.manual_seed(0)
    tokens = F.normalize(torch.randn(5, 8), dim=-1)  # M = 5, E = 8
    adapter = SGAdapter(width=12, bottleneck=4, guidance=GuidanceBank(tokens), heads=2, activation="gelu")
    torch.nn.init.normal_(adapter.up.weight)
    x = torch.randn(2, 3, 12)
    q = adapter.down(F.layer_norm(x, (12,), adapter.norm.weight, adapter.norm.bias))  # [2, 3, 4]
    k, v = tokens @ adapter.key.weight.t(), tokens @ adapter.value.weight.t()  # [5, 4]
    mixed = []
    for h in range(2):
        sl = slice(2 * h, 2 * h + 2)
        weights = torch.softmax(q[..., sl] @ k[:, sl].t() / math.sqrt(2), dim=-1)  # [2, 3, 5]
        mixed.append(weights @ v[:, sl])
    expected = adapter.alpha * adapter.up(F.gelu(q + torch.cat(mixed, dim=-1)))
    torch.testing.assert_close(adapter(x), expected, rtol=1e-5, atol=1e-6)


def test_lift_adapter_has_no_guidance_branch() -> None:
    adapter = SGAdapter(width=6, bottleneck=2)
    torch.nn.init.normal_(adapter.up.weight)
    x = torch.randn(4, 6)
    expected = adapter.up(torch.relu(adapter.down(adapter.norm(x))))
    torch.testing.assert_close(adapter(x), expected)
    assert not hasattr(adapter, "key")


def test_trainable_state_dict_round_trips_without_backbone(tiny_clip, class_embeddings, images) -> None:
    source = build_classifier(copy.deepcopy(tiny_clip), class_embeddings, model_config("sage"))
    with torch.no_grad():
        for param in source.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.1)
    state = source.trainable_state_dict()
    assert sum(t.numel() for t in state.values()) == source.num_trainable == 2054
    assert all(".adapter." in key or key.startswith("head.") for key in state)
    target = build_classifier(tiny_clip, class_embeddings, model_config("sage"))
    target.load_trainable_state_dict(state)
    with torch.no_grad():
        assert torch.equal(target(images), source(images))


def test_mismatched_checkpoint_is_refused_and_model_untouched(tiny_clip, class_embeddings) -> None:
    lift_state = build_classifier(copy.deepcopy(tiny_clip), class_embeddings, model_config("lift"))
    sage = build_classifier(tiny_clip, class_embeddings, model_config("sage"))
    before = {k: v.clone() for k, v in sage.trainable_state_dict().items()}
    state = {k: v + 1 for k, v in lift_state.trainable_state_dict().items()}
    with pytest.raises(SageError, match="does not fit this model \\(PEFT module sg-adapter\\): missing .*key.weight") as info:
        sage.load_trainable_state_dict(state)
    assert "\n" not in str(info.value)
    state = {k: v.clone() for k, v in before.items()}
    state["head.weight"] = torch.zeros(11, 64)
    with pytest.raises(SageError, match=r"head.weight has shape \(11, 64\), this model expects \(10, 64\)"):
        sage.load_trainable_state_dict(state)
    after = sage.trainable_state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_heads_must_divide_bottleneck(tiny_clip, class_embeddings) -> None:
    with pytest.raises(SageError, match="--attn-heads 3 must divide the bottleneck size 2"):
        build_classifier(tiny_clip, class_embeddings, model_config("sage", attn_heads=3))


def test_embeddings_from_another_model_are_refused(tiny_clip) -> None:
    with pytest.raises(SageError, match="dimension 32 but the model's image features have 64"):
        build_classifier(tiny_clip, torch.randn(10, 32), model_config("linear"))


def test_train_mode_keeps_backbone_in_eval(tiny_clip, class_embeddings) -> None:
    classifier = build_classifier(tiny_clip, class_embeddings, model_config("sage")).train()
    assert classifier.training and classifier.head.training
    assert all(adapter.training for adapter in classifier.adapters())
    assert not tiny_clip.visual.transformer.resblocks[0].attn.training


def test_guidance_keys_values_computed_once_per_forward(tiny_clip, class_embeddings, images) -> None:
    classifier = build_classifier(tiny_clip, class_embeddings, model_config("sage"))
    calls = []
    for adapter in classifier.adapters():
        for proj in (adapter.key, adapter.value):
            proj.register_forward_hook(lambda module, inputs, output: calls.append(tuple(output.shape)))
    classifier(images)  # a batch of 3 images
    assert calls == [(10, 2)] * 4  # one K and one V of shape [M, r] per block, not per image


def test_summary_reports_resolved_settings(tiny_clip, class_embeddings) -> None:
    classifier = build_classifier(tiny_clip, class_embeddings, model_config("sage", guidance_tokens=4))
    assert classifier.summary() == {
        "peft": "sg-adapter", "head": "cosine", "head_feature": "pre-proj", "head_init": "text",  # the method names the run, not the model
        "bottleneck": 2, "adapter_blocks": 2, "guidance_tokens": 4, "guidance_topk": None, "guidance_gate": None,
        "num_classes": 10, "trainable_params": 2054,
    }
