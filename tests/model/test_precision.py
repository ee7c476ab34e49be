"""sage_cli.precision: the autocast dtype of each ``--precision`` on each device; frozen tower
weights cast to bf16 once (which parameters change dtype, and that a pass under bf16 autocast gives
what autocast gives with float32 weights).

CPU autocast in bf16 stands in for CUDA's: the rule (bf16 weights under autocast) is the same.
"""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from torch import nn

from sage_cli.methods import model_config
from sage_cli.model import build_classifier
from sage_cli.precision import (
    NORMS,
    autocast,
    autocast_dtype,
    cast_frozen_weights,
    casts_frozen_weights,
    compute_dtype,
    describe_precision,
    uses_grad_scaler,
)
from sage_cli.schema import LossConfig
from sage_cli.task import build_task


def _perturbed(classifier: nn.Module) -> nn.Module:
    """Adapters away from their zero init, so that they change the features."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param in classifier.trainable_parameters():
            param.add_(0.2 * torch.randn(param.shape, generator=generator))
    return classifier


def test_compute_dtype_is_bf16_on_cuda_only() -> None:
    assert compute_dtype("cuda") == torch.bfloat16 and compute_dtype("cuda:1") == torch.bfloat16
    assert compute_dtype("cpu") == torch.float32


@pytest.mark.parametrize("method", ["sage", "lora", "ln-tuning"])
def test_only_frozen_non_norm_weights_become_bf16(method: str, tiny_clip, class_embeddings) -> None:
    classifier = build_classifier(tiny_clip, class_embeddings, model_config(method))
    visual = classifier.visual
    norm_params = {id(p) for m in visual.modules() if isinstance(m, NORMS) for p in m.parameters(recurse=False)}
    frozen = [p for p in visual.parameters() if not p.requires_grad and id(p) not in norm_params]
    cast = cast_frozen_weights(visual, torch.bfloat16)
    assert cast == len(frozen) > 0
    for name, param in visual.named_parameters():
        expected = torch.float32 if param.requires_grad or id(param) in norm_params else torch.bfloat16
        assert param.dtype == expected, name
    assert visual.conv1.weight.dtype == torch.bfloat16 and visual.ln_post.weight.dtype == torch.float32
    assert classifier.head.weight.dtype == torch.float32  # only the tower is cast
    assert cast_frozen_weights(visual, torch.bfloat16) == 0  # once


def test_cast_tower_matches_autocast_forward_and_gradients(tiny_clip, class_embeddings) -> None:
    """sage on sage-tiny, 4 images, bf16 autocast: with the frozen weights cast once the logits and
    the trainable gradients are those of float32 weights, within bf16 noise: the casts round the
    same way, but an op may now meet a bf16 operand where it met a float32 one (its float32
    accumulation order differs). Measured here: logits within 0.6% of their largest, the gradient
    vector within 0.5% (relative norm); autocast itself is 0.6% from float32."""
    reference = _perturbed(build_classifier(tiny_clip, class_embeddings, model_config("sage"))).train()
    cast = copy.deepcopy(reference)
    cast_frozen_weights(cast.visual, torch.bfloat16)
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    results = []
    for model in (reference, cast):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(images)
        logits.float().square().mean().backward()
        assert all(p.grad.dtype == torch.float32 for p in model.trainable_parameters())
        results.append((logits.detach().float(), torch.cat([p.grad.flatten() for p in model.trainable_parameters()])))
    (logits_a, grads_a), (logits_b, grads_b) = results
    torch.testing.assert_close(logits_b, logits_a, rtol=0, atol=2e-2 * float(logits_a.abs().max()))
    assert float((grads_b - grads_a).norm() / grads_a.norm()) < 2e-2


def test_a_resnet_tower_keeps_its_batch_norms_in_float32() -> None:
    """sage-tiny-rn under bitfit: convolutions and the attention pool's projections become bf16;
    every BatchNorm parameter (frozen or tuned) and every tuned bias stays float32."""
    from sage_cli.backbone import load_clip

    torch.manual_seed(0)
    clip = load_clip("sage-tiny-rn", "none").model
    classifier = build_classifier(clip, torch.nn.functional.normalize(torch.randn(4, clip.visual.output_dim), dim=-1),
                                  model_config("bitfit"))
    visual = classifier.visual
    cast_frozen_weights(visual, torch.bfloat16)
    batch_norms = [m for m in visual.modules() if isinstance(m, nn.BatchNorm2d)]
    assert batch_norms and all(p.dtype == torch.float32 for m in batch_norms for p in m.parameters())
    assert visual.conv1.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in visual.parameters() if p.requires_grad)


@pytest.mark.parametrize(("precision", "device", "dtype", "described"), [
    ("auto", "cuda", torch.bfloat16, "bf16-autocast"), ("auto", "cuda:1", torch.bfloat16, "bf16-autocast"),
    ("auto", "cpu", None, "fp32"),
    ("bf16", "cuda", torch.bfloat16, "bf16-autocast"), ("bf16", "cpu", torch.bfloat16, "bf16-autocast"),
    ("fp16", "cuda", torch.float16, "fp16-autocast"), ("fp16", "cpu", torch.float16, "fp16-autocast"),
    ("fp32", "cuda", None, "fp32"), ("fp32", "cpu", None, "fp32"),
])
def test_each_precision_names_its_autocast_dtype(precision: str, device: str, dtype, described: str) -> None:
    assert autocast_dtype(device, precision) == dtype
    assert compute_dtype(device, precision) == (dtype or torch.float32)
    assert describe_precision(device, precision) == described
    assert casts_frozen_weights(device, precision) == (dtype == torch.bfloat16)  # never under fp16: norms etc. stay
    assert uses_grad_scaler(device, precision) == (dtype == torch.float16)


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="fp8"):
        autocast_dtype("cpu", "fp8")


def test_fp32_on_cuda_runs_without_autocast(monkeypatch) -> None:
    """A (faked) CUDA host: auto and fp16 open a CUDA autocast in their dtype, fp32 a null context."""
    opened = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch, "autocast", lambda device_type, dtype: opened.append((device_type, dtype)) or "cm")
    assert isinstance(autocast(torch.device("cuda"), "fp32"), contextlib.nullcontext) and opened == []
    assert autocast(torch.device("cuda:1")) == "cm" and autocast("cuda", "fp16") == "cm"
    assert opened == [("cuda", torch.bfloat16), ("cuda", torch.float16)]


@pytest.mark.parametrize(("precision", "features_dtype"), [("fp16", torch.float16), ("bf16", torch.bfloat16),
                                                           ("fp32", torch.float32), ("auto", torch.float32)])
def test_task_forward_runs_under_its_precision_on_cpu(precision: str, features_dtype, tiny_clip,
                                                      class_embeddings) -> None:
    """CPU autocast: the tower's features come out in the autocast dtype, the head's logits and the loss in float32."""
    task = build_task(tiny_clip, class_embeddings, torch.arange(10, 0, -1).float(), model_config("lift"), LossConfig(),
                      torch.device("cpu"), precision=precision)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = task((images, torch.tensor([0, 9])))
    assert out["features"].dtype == features_dtype
    assert out["logits"].dtype == torch.float32 and out["loss"].dtype == torch.float32
    assert torch.isfinite(out["loss"])
