"""--head-feature: LIFT's pre-projection head (the CLS token after ln_post, before proj) and its text init."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F

from sage_cli.methods import METHODS, model_config
from sage_cli.model import build_classifier
from sage_cli.model.features import encode_pre_projection, map_text_to_pre_projection

WIDTH, EMBED, CLASSES = 48, 32, 6  # a tower whose width differs from its joint space, as ViT-B/16's 768 vs 512


@pytest.fixture(scope="module")
def narrow_config(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An open_clip ViT config with W = 48 != E = 32, registered from a temporary directory."""
    directory = tmp_path_factory.mktemp("configs")
    config = {"embed_dim": EMBED, "vision_cfg": {"image_size": 32, "layers": 2, "width": WIDTH, "head_width": 16,
                                                 "patch_size": 8},
              "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (directory / "sage-narrow-test.json").write_text(json.dumps(config))
    open_clip.add_model_config(directory)
    return "sage-narrow-test"


@pytest.fixture
def narrow_clip(narrow_config: str) -> torch.nn.Module:
    """A fresh random model of :func:`narrow_config` (building a classifier changes it in place)."""
    torch.manual_seed(0)
    return open_clip.create_model(narrow_config, pretrained=None).eval().requires_grad_(False)


@pytest.fixture
def texts() -> torch.Tensor:
    return F.normalize(torch.randn(CLASSES, EMBED, generator=torch.Generator().manual_seed(1)), dim=-1)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def test_the_pre_projection_feature_is_ln_post_of_the_class_token_and_proj_maps_it_to_clip_s_feature(
        narrow_clip, images) -> None:
    visual = narrow_clip.visual
    with torch.no_grad():
        pooled = encode_pre_projection(visual, images)
        by_hand = visual.ln_post(visual.transformer(visual._embeds(images)))[:, 0]  # LIFT's Peft_ViT.forward
        torch.testing.assert_close(pooled, by_hand, rtol=0, atol=0)  # the same path
        torch.testing.assert_close(pooled @ visual.proj, narrow_clip.encode_image(images), rtol=1e-5, atol=1e-6)
    assert pooled.shape == (4, WIDTH)


def test_text_init_is_lift_s_mapping_computed_by_hand() -> None:
    proj = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])  # [W=3, E=2]
    text = torch.tensor([[3.0, 4.0], [0.0, 1.0]])  # unnormalised: the mapping normalises first
    # t0 -> (0.6, 0.8) -> proj @ t = (0.6, 1.6, 1.4), |.| = sqrt(0.36 + 2.56 + 1.96) = sqrt(4.88)
    # t1 -> (0, 1) -> (0, 2, 1), |.| = sqrt(5)
    expected = torch.tensor([[0.6, 1.6, 1.4], [0.0, 2.0, 1.0]]) / torch.tensor([[4.88 ** 0.5], [5 ** 0.5]])
    torch.testing.assert_close(map_text_to_pre_projection(text, proj), expected, rtol=1e-6, atol=1e-7)


def test_lift_s_head_reads_the_pre_projection_feature_and_starts_from_the_mapped_texts(
        narrow_clip, texts, images) -> None:
    classifier = build_classifier(narrow_clip, texts, model_config("lift"))
    visual = narrow_clip.visual
    assert classifier.head.weight.shape == (CLASSES, WIDTH)
    expected_rows = F.normalize(texts @ visual.proj.t(), dim=-1)
    torch.testing.assert_close(classifier.head.weight.detach(), expected_rows, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        logits, features = classifier.forward_with_features(images)
        pooled = encode_pre_projection(visual, images)
        joint = narrow_clip.encode_image(images)
    # s * cos(h, proj t_c) = s * (f . t_c) / (|h| |proj t_c|): zero-shot's scores up to 1 / |proj t_c|
    by_hand = 25.0 * (joint @ texts.t()) / pooled.norm(dim=-1, keepdim=True) / (texts @ visual.proj.t()).norm(dim=-1)
    torch.testing.assert_close(logits, by_hand, rtol=1e-5, atol=1e-5)
    # the loss sees v(x) in CLIP's joint space, whatever the head reads
    assert features.shape == (4, EMBED)
    torch.testing.assert_close(features, F.normalize(joint, dim=-1), rtol=1e-5, atol=1e-6)


def test_with_orthonormal_projection_columns_the_head_at_init_ranks_as_zero_shot_clip(narrow_clip, texts,
                                                                                       images) -> None:
    visual = narrow_clip.visual
    saved = visual.proj.detach().clone()
    q, _ = torch.linalg.qr(torch.randn(WIDTH, EMBED, generator=torch.Generator().manual_seed(3)))
    try:
        with torch.no_grad():
            visual.proj.copy_(q)  # proj^T proj = I: |proj t| = |t| = 1 for every class
            classifier = build_classifier(narrow_clip, texts, model_config("lift"))
            logits = classifier(images)
            joint = narrow_clip.encode_image(images)
            zero_shot = 25.0 * F.normalize(joint, dim=-1) @ texts.t()
            pooled = encode_pre_projection(visual, images)
    finally:
        with torch.no_grad():
            visual.proj.copy_(saved)
    assert torch.equal(logits.argsort(dim=-1), zero_shot.argsort(dim=-1))
    ratio = (joint.norm(dim=-1) / pooled.norm(dim=-1))[:, None]  # one factor per image, equal across classes
    torch.testing.assert_close(logits, zero_shot * ratio, rtol=1e-5, atol=1e-5)


def test_projected_head_reads_clip_s_feature(narrow_clip, texts, images) -> None:
    classifier = build_classifier(narrow_clip, texts, model_config("lift", head_feature="projected"))
    assert classifier.head.weight.shape == (CLASSES, EMBED)
    with torch.no_grad():
        expected = 25.0 * F.normalize(narrow_clip.encode_image(images), dim=-1) @ texts.t()
        torch.testing.assert_close(classifier(images), expected, rtol=1e-5, atol=1e-5)


def test_every_trained_method_reads_the_pre_projection_feature_and_zero_shot_clip_s_own() -> None:
    trained = {name: m.model.head.feature for name, m in METHODS.items() if m.trainable}
    assert set(trained.values()) == {"pre-proj"}
    assert METHODS["zeroshot"].model.head.feature == "projected"
    # sage differs from lift only by its two ideas: the guidance and the compensation
    lift, sage = METHODS["lift"], METHODS["sage"]
    assert lift.model.head == sage.model.head
    assert lift.loss.compensation == "none" and sage.loss.compensation == "semantic"


def test_a_tower_without_a_vit_projection_reads_its_output_as_lift_s_resnet_head_does(texts) -> None:
    from sage_cli.backbone import load_clip

    torch.manual_seed(0)
    resnet = load_clip("sage-tiny-rn", "none").model  # LIFT's Peft_RN classifies the attention pool's output
    embeddings = F.normalize(torch.randn(CLASSES, 64, generator=torch.Generator().manual_seed(1)), dim=-1)
    classifier = build_classifier(resnet, embeddings, model_config("bitfit"))
    assert classifier.head_feature == "projected" and classifier.summary()["head_feature"] == "projected"
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = 25.0 * F.normalize(resnet.encode_image(images), dim=-1) @ embeddings.t()
        torch.testing.assert_close(classifier(images), expected, rtol=1e-5, atol=1e-5)


def test_runs_recorded_before_the_option_read_back_with_the_projected_head(tmp_path: Path) -> None:
    from sage_cli.train.config import read_config

    config = model_config("lift")
    assert config.head.feature == "pre-proj"
    from sage_cli.methods import resolve

    full = resolve("lift", prepared="p", text_cache="t", out="o").to_dict()
    del full["model"]["head"]["feature"]
    for key in ("eval_resize", "interpolation"):
        del full["data"][key]
    del full["optim"]["lr_schedule"]
    old = read_config({"schema_version": 2, "config": full})
    assert old.model.head.feature == "projected"
    assert (old.data.eval_resize, old.data.interpolation, old.optim.lr_schedule) == ("clip", "model", "cosine-step")
    schema_1 = {"config": {"data": {"prepared": "p", "text_cache": "t"}, "run": {"out": "o"},
                           "model": {"model": None, "pretrained": None, "adapter": {"method": "lift"}}}}
    assert read_config(schema_1).model.head.feature == "projected"
