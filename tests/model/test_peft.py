"""Every PEFT module on sage-tiny: the tower at init, where gradients go, what a checkpoint holds."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from sage_cli.errors import SageError
from sage_cli.methods import METHODS
from sage_cli.model import AdapterModule, build_classifier
from sage_cli.train import checkpoint as ckpt
from sage_cli.methods import model_config

PEFT_METHODS = [name for name, method in METHODS.items() if method.model.peft is not None]
# Zero-initialised or nothing inserted: the tower at init is the frozen one, bit for bit.
EXACT_AT_INIT = ["sage", "sage-topk", "sage-zs", "lift", "adapter", "ssf", "bitfit", "ln-tuning", "full-ft", "lora", "lora-mlp"]
# Prompts are attended to by every token: at init they change the features (tested against a hand-built pass).
PROMPTED = ["vpt-shallow", "vpt-deep"]

# sage-tiny: width D = 64, MLP 256, embed E = 64, L = 2 blocks; 10 classes -> r = 2; head 10 x 64 = 640.
HAND_COUNTS = {
    "lora": 2 * 2 * (2 * 64 + 64 * 2) + 640,  # q and v: A [2, 64] + B [64, 2] per block
    "lora-mlp": 2 * (2 * (2 * 64 + 64 * 2) + (2 * 64 + 256 * 2) + (2 * 256 + 64 * 2)) + 640,
    "vpt-shallow": 10 * 64 + 640,
    "vpt-deep": 2 * 10 * 64 + 640,
    "adapter": 2 * (2 * 64 + (64 * 2 + 2) + (2 * 64 + 64)) + 640,  # LN + Down + Up per block
    "ssf": 2 * 2 * (64 + 64 + 64 + 256 + 64) + 640,  # scale + shift after ln_1, attn, ln_2, c_fc, c_proj
    "bitfit": 2 * (64 + 3 * 64 + 64 + 64 + 256 + 64) + 640,  # ln_1, in_proj, out_proj, ln_2, c_fc, c_proj biases
    "ln-tuning": 2 * 4 * 64 + 640,
    "full-ft": 2 * (2 * 64 + (3 * 64 * 64 + 3 * 64) + (64 * 64 + 64) + 2 * 64 + (64 * 256 + 256) + (256 * 64 + 64)) + 640,
}


def _build(tiny_clip, class_embeddings, method: str, **options):
    return build_classifier(tiny_clip, class_embeddings, model_config(method, **options))


def _perturb(classifier, seed: int = 3) -> None:
    """Give every inserted module's parameters random values, so each takes part in the output."""
    generator = torch.Generator().manual_seed(seed)
    params = {id(p): p for m in classifier.visual.modules() if isinstance(m, AdapterModule) for p in m.parameters()}
    with torch.no_grad():
        for param in params.values():
            param.add_(0.1 * torch.randn(param.shape, generator=generator))


@pytest.mark.parametrize("method", EXACT_AT_INIT)
def test_tower_at_init_is_the_frozen_one(tiny_clip, class_embeddings, images, method) -> None:
    reference = copy.deepcopy(tiny_clip)
    classifier = _build(tiny_clip, class_embeddings, method)
    with torch.no_grad():
        expected = F.normalize(reference.encode_image(images), dim=-1)
        if method.startswith("lora"):
            # LoRA's attention runs through F.multi_head_attention_forward, another computation path than
            # nn.MultiheadAttention's (fused or not), which rounds differently on some CPUs. What is exact is
            # the update: B = 0, so the packed in-projection weight is the frozen one bit for bit, and the
            # tower is the frozen one within float32 rounding of unit-norm features.
            for module in classifier.visual.modules():
                if isinstance(module, AdapterModule):
                    assert torch.equal(module.delta_weight(), torch.zeros_like(module.delta_weight()))
            torch.testing.assert_close(classifier.encode(images), expected, rtol=0, atol=1e-6)
        else:
            assert torch.equal(classifier.encode(images), expected)  # the same kernels; zero-init modules add exact zeros
    _perturb(classifier)
    with torch.no_grad():
        changed = (classifier.encode(images) - expected).abs().max()
    assert method in ("bitfit", "ln-tuning", "full-ft") or changed > 1e-4  # the comparison can fail


@pytest.mark.parametrize("method", PROMPTED)
def test_prompts_join_the_sequence_as_a_hand_built_pass_does(tiny_clip, class_embeddings, images, method) -> None:
    reference = copy.deepcopy(tiny_clip).visual
    classifier = _build(tiny_clip, class_embeddings, method)
    prompts = [m.tokens for m in classifier.visual.modules() if type(m).__name__ == "Prompts"]
    assert len(prompts) == (1 if method == "vpt-shallow" else 2)
    with torch.no_grad():
        x = reference._embeds(images)  # [B, N, D]: class token + 16 patches
        n = x.shape[1]
        for i, block in enumerate(reference.transformer.resblocks):
            if i < len(prompts):
                x = torch.cat([x[:, :n], prompts[i].expand(len(images), -1, -1)], dim=1)  # [B, N + P, D]
            x = block(x)
        pooled, _ = reference._pool(x[:, :n])
        expected = F.normalize(pooled @ reference.proj, dim=-1)
        torch.testing.assert_close(classifier.encode(images), expected, rtol=0, atol=1e-6)
        frozen = F.normalize(copy.deepcopy(reference)(images), dim=-1)
        assert (classifier.encode(images) - frozen).abs().max() > 1e-4  # prompts do change the features


@pytest.mark.parametrize("method", list(HAND_COUNTS))
def test_num_trainable_matches_hand_count(tiny_clip, class_embeddings, method) -> None:
    assert _build(tiny_clip, class_embeddings, method).num_trainable == HAND_COUNTS[method]


@pytest.mark.parametrize("method", PEFT_METHODS)
def test_gradients_reach_only_the_module_and_head(tiny_clip, class_embeddings, images, method) -> None:
    classifier = _build(tiny_clip, class_embeddings, method).train()
    _perturb(classifier)
    F.cross_entropy(classifier(images), torch.tensor([0, 3, 7])).backward()
    with_grad = {n for n, p in classifier.named_parameters() if p.grad is not None}
    assert with_grad == set(classifier.trainable_names)
    requires = {n for n, p in classifier.named_parameters() if p.requires_grad}
    assert requires == set(classifier.trainable_names)
    inserted = {id(p) for m in classifier.visual.modules() if isinstance(m, AdapterModule) for p in m.parameters()}
    for name, param in classifier.named_parameters():
        if id(param) in inserted:
            assert param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("method", PEFT_METHODS)
def test_checkpoint_holds_exactly_the_trainable_tensors_and_reloads(tiny_clip, class_embeddings, images, method,
                                                                     tmp_path) -> None:
    fresh = copy.deepcopy(tiny_clip)
    source = _build(tiny_clip, class_embeddings, method)
    _perturb(source)
    params = dict(source.named_parameters())
    with torch.no_grad():
        for name in source.trainable_names:
            params[name].add_(0.01)  # partial tuning (bitfit, ...) trains the tower's own tensors
    path = tmp_path / "adapter.safetensors"
    ckpt.save_weights(path, source.trainable_state_dict(), {"method": method})
    saved = ckpt.load_weights(path)
    assert set(saved) == set(source.trainable_names)
    assert sum(t.numel() for t in saved.values()) == source.num_trainable
    target = _build(fresh, class_embeddings, method)
    with torch.no_grad():
        before = target(images)
        target.load_trainable_state_dict(saved)
        assert torch.equal(target(images), source(images))
        assert (before - source(images)).abs().max() > 1e-4


@pytest.mark.parametrize("method", PEFT_METHODS)
def test_blocks_limit_the_module_to_those_blocks(tiny_clip, class_embeddings, method) -> None:
    classifier = _build(tiny_clip, class_embeddings, method, blocks=(1,))
    names = [n for n in classifier.trainable_names if not n.startswith("head.")]
    assert names and all(n.startswith("visual.transformer.resblocks.1.") for n in names), names


def test_out_of_range_blocks_are_one_short_line(tiny_clip, class_embeddings) -> None:
    with pytest.raises(SageError) as info:
        _build(tiny_clip, class_embeddings, "lora", blocks=tuple(range(100)))
    message = str(info.value)
    assert message == "--blocks [2, 3, ..., 99] (98 indices) out of range: the image tower has 2 blocks (0..1)"


@pytest.mark.parametrize("method", ["lora", "adapter", "vpt-deep", "bitfit"])
def test_second_injection_is_refused(tiny_clip, class_embeddings, method) -> None:
    _build(tiny_clip, class_embeddings, method)
    with pytest.raises(SageError, match="already"):
        _build(tiny_clip, class_embeddings, method)
