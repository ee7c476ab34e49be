"""LIFT-exact defaults of the benchmark presets: eval transform, interpolation, schedule, prompts (docs/method.md#lift-exact)."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from sage_cli.backbone import load_clip
from sage_cli.encode_text.templates import load_templates
from sage_cli.methods import load_preset, resolve
from sage_cli.model import compute_default_bottleneck
from sage_cli.train.optim import compute_lr_factor
from sage_cli.train.transforms import apply_preprocessing, build_eval_transform, build_train_transform

CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
BENCHMARKS = ("imagenet-lt", "places-lt", "inat2018", "cifar100-lt")


def _record(**extra) -> dict:
    return {"image_size": [224, 224], "mean": CLIP_MEAN, "std": CLIP_STD, "interpolation": "bicubic",
            "resize_mode": "shortest", **extra}


def _image(width: int = 400, height: int = 300) -> Image.Image:
    pixels = torch.arange(width * height * 3, dtype=torch.int64).remainder(251).to(torch.uint8)
    return Image.fromarray(pixels.reshape(height, width, 3).numpy())


def test_lift_eval_resize_is_224_to_256_then_a_centre_crop_of_224() -> None:
    transform = build_eval_transform(_record(eval_resize="lift", interpolation="bilinear"))
    resize, crop = transform.transforms[:2]
    assert resize.size == 256 and resize.interpolation == T.InterpolationMode.BILINEAR  # 224 * 8 // 7
    assert crop.size == (224, 224)
    assert resize(_image()).size == (341, 256)  # shorter side 300 -> 256, 400 -> int(256 * 400 / 300) = 341
    assert transform(_image()).shape == (3, 224, 224)
    assert build_eval_transform(_record(eval_resize="lift", image_size=[336, 336])).transforms[0].size == 384


def test_clip_eval_resize_is_open_clip_s_own_preprocess() -> None:
    import open_clip

    clip = load_clip("sage-tiny", "none")
    _, _, preprocess = open_clip.create_model_and_transforms("sage-tiny", pretrained=None)
    image = _image(50, 40)
    torch.testing.assert_close(build_eval_transform(clip.record)(image), preprocess(image), rtol=0, atol=1e-6)
    assert apply_preprocessing(clip, "clip", "model") is clip  # the record of runs before the options


def test_a_run_s_choices_go_into_its_backbone_record_and_both_transforms() -> None:
    clip = apply_preprocessing(load_clip("sage-tiny", "none"), "lift", "bilinear")
    assert clip.record["eval_resize"] == "lift" and clip.record["interpolation"] == "bilinear"
    assert clip.preprocess_eval.transforms[0].size == 32 * 8 // 7  # 36
    train = build_train_transform(clip.record).transforms[0]
    assert isinstance(train, T.RandomResizedCrop) and train.interpolation == T.InterpolationMode.BILINEAR
    assert (train.scale, train.ratio) == ((0.08, 1.0), (3 / 4, 4 / 3))  # torchvision's defaults, as LIFT's


def test_per_epoch_cosine_holds_the_lr_through_each_epoch_as_lift_s_cosine_annealing() -> None:
    steps_per_epoch, epochs = 5, 10
    factors = [compute_lr_factor(s, 0, 50, steps_per_epoch, epochs) for s in range(50)]
    assert factors[:5] == [1.0] * 5
    assert factors[5] == pytest.approx(0.5 * (1 + math.cos(math.pi / 10)))
    assert factors[49] == pytest.approx(0.5 * (1 + math.cos(math.pi * 9 / 10)))
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    lift = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)  # LIFT's, stepped once an epoch
    for epoch in range(epochs):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * factors[epoch * steps_per_epoch], rel=1e-9)
        optimizer.step()
        lift.step()


def test_the_single_template_renders_lift_s_prompt() -> None:
    assert load_templates("single").render("great_white_shark") == ["a photo of a great white shark."]
    assert len(load_templates("ensemble").templates) == 18


@pytest.mark.parametrize("preset", BENCHMARKS)
def test_benchmark_presets_resolve_lift_to_lift_s_configs(preset) -> None:
    config = resolve("lift", load_preset(preset), prepared="p", text_cache="t", out="o")
    assert config.model.head.feature == "pre-proj" and config.model.head.kind == "cosine"
    assert (config.model.head.init, config.model.head.scale) == ("text", 25.0)
    assert config.model.peft.module == "adaptformer" and config.model.peft.bottleneck is None  # LIFT's rule
    assert (config.loss.loss, config.loss.tau, config.loss.compensation) == ("la", 1.0, "none")
    optim = config.optim
    assert (optim.lr, optim.momentum, optim.weight_decay) == (0.01, 0.9, 5e-4)
    assert (optim.warmup_epochs, optim.warmup_steps, optim.lr_schedule) == (0, None, "cosine-epoch")
    assert optim.epochs == (20 if preset == "inat2018" else 10)
    assert config.data.batch_size == 128 and config.data.augment
    assert (config.data.eval_resize, config.data.interpolation) == ("lift", "bilinear")
    from sage_cli.train.config import identity_of

    identity = identity_of(config)  # schema 1's layout, the LIFT-exact choices under options
    assert identity["options"] == {"eval_resize": "lift", "head_feature": "pre-proj", "interpolation": "bilinear",
                                   "lr_schedule": "cosine-epoch"}
    assert "lr_schedule" not in identity["optim"] and "eval_resize" not in identity["data"]


def test_lift_s_bottleneck_rule() -> None:
    # adapter_dim = 2 ** max(0, int(log2(num_classes / (n_layers * 2)))) in LIFT's ViT_Tuner
    for classes in (100, 365, 1000, 8142):
        assert compute_default_bottleneck(classes, 12) == 2 ** max(0, int(math.log2(classes / 24)))
