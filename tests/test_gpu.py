"""CUDA-only checks (marked ``gpu``, skipped without a CUDA device): bf16 autocast training, the
fused attention kernels of the SG-Adapter's guidance, and the fast input path feeding a GPU run.

nvjpeg is not used: the fast input path decodes once, on the CPU, into the image cache.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sage_cli.losses import LossConfig, build_loss
from sage_cli.model import build_classifier
from sage_cli.model.adapters import GuidanceBank, SGAdapter
from sage_cli.backbone import build_backbone
from sage_cli.methods import model_config

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def test_bf16_autocast_step_is_finite_and_close_to_fp32() -> None:
    clip = build_backbone("sage-tiny", "none", CUDA)
    embeddings = F.normalize(torch.randn(6, clip.record["embedding_dim"], generator=torch.Generator().manual_seed(0)), dim=-1)
    classifier = build_classifier(clip.model, embeddings.to(CUDA), model_config("sage")).train()
    loss_fn = build_loss(LossConfig(loss="la", compensation="semantic"), torch.arange(1, 7).float(), embeddings).to(CUDA)
    images = torch.randn(8, 3, *clip.record["image_size"], generator=torch.Generator().manual_seed(1)).to(CUDA)
    labels = torch.arange(8, device=CUDA) % 6
    with torch.no_grad():
        full = classifier(images)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits, features = classifier.forward_with_features(images)
        loss = loss_fn(logits, labels, features)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(loss)
    assert torch.allclose(logits.float(), full, atol=0.1 * float(full.abs().max()) + 0.05)
    loss.backward()
    grads = [p.grad for p in classifier.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("bottleneck", [32, 256])  # LIFT's widths at 1,000 and 8,142 classes
def test_guidance_attention_runs_on_a_fused_kernel(bottleneck: int) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    generator = torch.Generator().manual_seed(0)
    tokens = F.normalize(torch.randn(1000, 512, generator=generator), dim=-1)
    adapter = SGAdapter(768, bottleneck, GuidanceBank(tokens)).to(CUDA)
    q = torch.randn(4, 197, bottleneck, generator=generator).to(CUDA)
    with torch.autocast("cuda", dtype=torch.bfloat16), torch.no_grad():
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):  # raises if neither can run
            fused = adapter.attend(q.bfloat16())
        with sdpa_kernel([SDPBackend.MATH]):
            reference = adapter.attend(q.bfloat16())
    assert fused.shape == q.shape and fused.dtype == torch.bfloat16
    assert torch.allclose(fused.float(), reference.float(), atol=2e-2, rtol=2e-2)


def test_training_from_the_image_cache_on_cuda(synthetic_prepared: Path, synthetic_text_cache: Path,
                                               tmp_path: Path) -> None:
    from sage_cli.image_cache import CacheImagesConfig, run as cache_images
    from sage_cli.train import build_train_config, run

    cache_images(CacheImagesConfig(prepared=synthetic_prepared, out=tmp_path / "cache", model="sage-tiny",
                                   pretrained="none"))
    config = build_train_config({
        "prepared": synthetic_prepared, "text_cache": synthetic_text_cache, "out": tmp_path / "run",
        "method": "sage", "batch_size": 8, "device": "cuda", "num_workers": 2, "max_steps": 4, "seed": 0,
        "image_cache": tmp_path / "cache"})
    record = run(config).record
    assert record["precision"] == "bf16-autocast" and record["peak_memory"]["kind"] == "cuda_max_allocated"
    assert record["steps"] == 4 and record["images_seen"] == 32
