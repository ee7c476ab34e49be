"""PEFT on open_clip's ModifiedResNet tower (sage-tiny-rn), as LIFT tunes CLIP ResNets: bitfit,
ln-tuning (the BatchNorms), ssf (the pooled feature), full-ft; every other module and any other
tower refused in one line naming what is supported."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sage_cli.backbone import load_clip
from sage_cli.errors import SageError
from sage_cli.methods import METHODS, model_config
from sage_cli.model import build_classifier
from sage_cli.model.peft import PeftContext, inject_peft
from sage_cli.model.peft.resnet import RESNET_PEFT

RESNET_METHODS = ["bitfit", "ln-tuning", "ssf", "full-ft"]
REFUSED = sorted({name for name, m in METHODS.items() if m.model.peft is not None
                  and m.model.peft.module not in RESNET_PEFT})

# sage-tiny-rn: stem BNs 4, 4, 8; bottleneck BNs (planes p: p, p, 4p, downsample 4p) for p = 8, 16, 32, 64:
# 1216 BatchNorm channels; the attention pool's q, k, v (256) and output (64) biases; E = 64; head 10 x 64.
BN_CHANNELS = 4 + 4 + 8 + sum(p + p + 4 * p + 4 * p for p in (8, 16, 32, 64))
HAND_COUNTS = {
    "bitfit": BN_CHANNELS + 3 * 256 + 64 + 640,
    "ln-tuning": 2 * BN_CHANNELS + 640,
    "ssf": 2 * 64 + 640,
}


def load_tiny_resnet() -> nn.Module:
    torch.manual_seed(0)
    return load_clip("sage-tiny-rn", "none").model


def _build(method: str, class_embeddings: torch.Tensor, clip: nn.Module | None = None, **options):
    return build_classifier(clip or load_tiny_resnet(), class_embeddings, model_config(method, **options))


def test_the_hand_counts() -> None:
    assert BN_CHANNELS == 1216


@pytest.mark.parametrize("method", RESNET_METHODS)
def test_resnet_tuning_starts_at_the_frozen_tower_and_trains_only_its_parameters(method, class_embeddings,
                                                                                 images) -> None:
    clip = load_tiny_resnet()
    reference = copy.deepcopy(clip)
    classifier = _build(method, class_embeddings, clip)
    with torch.no_grad():
        assert torch.equal(classifier.encode(images), F.normalize(reference.encode_image(images), dim=-1))
    if method in HAND_COUNTS:
        assert classifier.num_trainable == HAND_COUNTS[method]
    stats = {k: v.clone() for k, v in classifier.visual.state_dict().items() if "running" in k}
    classifier.train()
    classifier(images).logsumexp(-1).sum().backward()
    trainable = set(classifier.trainable_names)
    for name, param in classifier.named_parameters():
        assert (param.grad is not None) == (name in trainable), name
    assert any(param.grad.abs().sum() > 0 for name, param in classifier.named_parameters() if name in trainable
               and name.startswith("visual."))
    for key, value in classifier.visual.state_dict().items():  # BatchNorm statistics stay the frozen ones
        if key in stats:
            assert torch.equal(value, stats[key]), key


def test_trained_resnet_weights_rebuild_the_model(class_embeddings, images) -> None:
    classifier = _build("ssf", class_embeddings)
    with torch.no_grad():
        for name, param in classifier.named_parameters():
            if name in classifier.trainable_names:
                param.add_(0.1 * torch.randn(param.shape, generator=torch.Generator().manual_seed(3)))
    again = _build("ssf", class_embeddings)
    again.load_trainable_state_dict(classifier.trainable_state_dict())
    with torch.no_grad():
        assert torch.equal(again.eval()(images), classifier.eval()(images))
        assert not torch.equal(classifier(images), _build("ssf", class_embeddings).eval()(images))


@pytest.mark.parametrize("method", REFUSED)
def test_other_modules_are_refused_naming_what_a_resnet_takes(method, class_embeddings) -> None:
    module = METHODS[method].model.peft.module
    with pytest.raises(SageError, match=rf"^PEFT module {module} needs a VisionTransformer image tower; this model's "
                                        r"is a ModifiedResNet, which takes bitfit, ln-tuning, ssf, full-ft \(as LIFT "
                                        r"tunes ResNets\) or --method linear$"):
        _build(method, class_embeddings)


def test_blocks_do_not_apply_to_a_resnet(class_embeddings) -> None:
    with pytest.raises(SageError, match=r"^--blocks: bitfit tunes a ModifiedResNet tower whole; leave --blocks out$"):
        _build("bitfit", class_embeddings, blocks=(0, 1))


def test_a_tower_of_another_kind_is_refused_for_every_module(class_embeddings) -> None:
    class TimmModel(nn.Module):  # open_clip's wrapper of a timm trunk (ConvNeXt, EVA, SigLIP ...)
        def __init__(self) -> None:
            super().__init__()
            self.trunk = nn.Linear(3, 64)

    for module in ("bitfit", "lora"):
        config = model_config("bitfit").peft.__class__(module=module)
        with pytest.raises(SageError, match=rf"^PEFT module {module} needs an open_clip VisionTransformer image tower "
                                            r"\(or a ModifiedResNet for bitfit, ln-tuning, ssf, full-ft\); this "
                                            r"model's is a TimmModel: use --method linear \(head only\)$"):
            inject_peft(module, TimmModel(), PeftContext(config, class_embeddings))


def test_resnet_ssf_merges_into_the_attention_pool(class_embeddings, images) -> None:
    from sage_cli.model.merge import build_merged_tower

    classifier = _build("ssf", class_embeddings)
    with torch.no_grad():
        for name, param in classifier.named_parameters():
            if name in classifier.trainable_names and name.startswith("visual."):
                param.add_(0.1 * torch.randn(param.shape, generator=torch.Generator().manual_seed(4)))
        merged = build_merged_tower(classifier.visual)
        assert type(merged.attnpool).__name__ == "AttentionPool2d"  # open_clip's own module tree again
        assert torch.allclose(merged(images), classifier.visual(images), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(merged(images), load_tiny_resnet().visual(images), atol=1e-3)


def test_a_resnet_run_trains_and_reloads(synthetic_prepared, tmp_path) -> None:
    from sage_cli.encode_text import EncodeTextConfig
    from sage_cli.encode_text import run as encode
    from sage_cli.train import build_train_config, load_trained_classifier
    from sage_cli.train import run as train

    text = encode(EncodeTextConfig(prepared=synthetic_prepared, out=tmp_path / "text", model="sage-tiny-rn",
                                   pretrained="none", templates="single", device="cpu")).out
    result = train(build_train_config({"prepared": synthetic_prepared, "text_cache": text, "out": tmp_path / "run",
                                       "method": "ln-tuning", "batch_size": 8, "device": "cpu", "num_workers": 0,
                                       "max_steps": 2, "lr": 0.1}))
    assert result.record["trainable_params"] == 2 * BN_CHANNELS + 4 * 64  # 4 classes
    frozen = load_tiny_resnet().visual.state_dict()
    trained = result.classifier.visual.state_dict()
    assert not torch.equal(trained["bn1.weight"], frozen["bn1.weight"])  # the stem's BatchNorm trained too
    assert torch.equal(trained["conv1.weight"], frozen["conv1.weight"])
    reloaded = load_trained_classifier(result.out).classifier
    for name, tensor in result.classifier.trainable_state_dict().items():
        assert torch.equal(reloaded.trainable_state_dict()[name], tensor), name
