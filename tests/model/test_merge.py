"""Merging a PEFT module into the tower: a plain open_clip tower with the classifier's features."""

from __future__ import annotations

import copy

import open_clip
import pytest
import torch

from sage_cli.errors import SageError
from sage_cli.methods import model_config
from sage_cli.model import build_classifier
from sage_cli.model.merge import MERGEABLE, build_merged_tower, fold_scale_shift

# Merging is another computation path (W + BA computed once; nn.MultiheadAttention's own pass
# instead of F.multi_head_attention_forward): equal within float32 rounding, not bit for bit.
ATOL = 1e-5
TRAINED = {"lora": "lora", "lora-mlp": "lora-mlp", "ssf": "ssf", "bitfit": "bitfit", "ln-tuning": "ln-tuning",
           "full-ft": "full-ft", "linear": None}


def _trained_classifier(tiny_clip, class_embeddings, method: str, seed: int = 3):
    """A classifier whose every trainable tensor moved from its init (LoRA's B is zero there)."""
    classifier = build_classifier(tiny_clip, class_embeddings, model_config(method))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in classifier.trainable_parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return classifier.eval()


@pytest.mark.parametrize("method", list(TRAINED))
def test_merged_tower_gives_the_classifiers_features(tiny_clip, class_embeddings, images, method) -> None:
    frozen = copy.deepcopy(tiny_clip.visual)
    classifier = _trained_classifier(tiny_clip, class_embeddings, method)
    merged = build_merged_tower(classifier.visual)
    plain = open_clip.create_model("sage-tiny", pretrained=None).visual.eval()
    plain.load_state_dict(merged.state_dict())  # strict: open_clip's own names, nothing left over
    assert getattr(classifier.visual, "sage_peft", None) == TRAINED[method]  # the classifier is not changed
    with torch.no_grad():
        expected = classifier.encode_raw(images)  # [3, 64]
        torch.testing.assert_close(plain(images), expected, atol=ATOL, rtol=0)
        torch.testing.assert_close(merged(images), expected, atol=ATOL, rtol=0)
        if method != "linear":  # the tuned tensors matter: the frozen tower is far from the features
            assert (frozen(images) - expected).abs().max() > 100 * ATOL


def test_mergeable_list_is_what_the_tests_cover() -> None:
    assert set(MERGEABLE) == {m for m in TRAINED.values() if m is not None}


@pytest.mark.parametrize(("method", "module"), [("lift", "adaptformer"), ("sage", "sg-adapter"),
                                                ("adapter", "adapter"), ("vpt-deep", "vpt-deep")])
def test_modules_with_their_own_layers_are_refused(tiny_clip, class_embeddings, method, module) -> None:
    classifier = build_classifier(tiny_clip, class_embeddings, model_config(method))
    with pytest.raises(SageError) as info:
        build_merged_tower(classifier.visual)
    message = str(info.value)
    assert f"the {module} module cannot be merged" in message and "--format torchscript or onnx" in message
    assert "\n" not in message


def test_scale_shift_folds_into_a_linear_and_a_layernorm() -> None:
    linear = torch.nn.Linear(2, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        linear.bias.copy_(torch.tensor([0.5, -1.0]))
        fold_scale_shift(linear, torch.tensor([2.0, -1.0]), torch.tensor([0.25, 3.0]))
    # rows scaled by gamma; bias * gamma + beta: [0.5 * 2 + 0.25, -1 * -1 + 3]
    assert linear.weight.tolist() == [[2.0, 4.0], [-3.0, -4.0]] and linear.bias.tolist() == [1.25, 4.0]
    norm = torch.nn.LayerNorm(2, bias=False)
    with torch.no_grad():
        fold_scale_shift(norm, torch.tensor([3.0, 0.5]), torch.tensor([1.0, 2.0]))
    assert norm.weight.tolist() == [3.0, 0.5] and norm.bias.tolist() == [1.0, 2.0]
