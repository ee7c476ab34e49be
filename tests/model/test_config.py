"""Model config validation (through the method presets) and LIFT's bottleneck rule."""

from __future__ import annotations

import pytest

from sage_cli.errors import SageError
from sage_cli.model import compute_default_bottleneck
from sage_cli.methods import model_config


@pytest.mark.parametrize(
    ("num_classes", "num_layers", "expected"),
    [
        (1000, 12, 32),  # 1000 / 24 = 41.7 -> 2^5 (ImageNet-LT, LIFT's figure)
        (8142, 12, 256),  # 339.3 -> 2^8 (iNaturalist 2018)
        (365, 12, 8),  # Places-LT: 15.2 -> 2^3
        (100, 12, 4),  # CIFAR-100: 4.17 -> 2^2
        (10, 12, 1),  # 0.42 -> floor(log2) < 0 -> 2^0
        (24, 12, 1),  # exactly 1 -> 2^0
        (48, 12, 2),  # exactly 2 -> 2^1
        (47, 12, 1),  # just under 2
        (10, 2, 2),  # sage-tiny with 10 classes: 2.5 -> 2^1
    ],
)
def test_default_bottleneck_follows_lift_rule(num_classes: int, num_layers: int, expected: int) -> None:
    assert compute_default_bottleneck(num_classes, num_layers) == expected


def test_guidance_resolves_per_method() -> None:
    assert (model_config("sage").guidance is not None) is True
    assert (model_config("sage", guidance=False).guidance is not None) is False
    assert (model_config("lift").guidance is not None) is False
    assert (model_config("linear").peft is not None) is False
    assert (model_config("zeroshot").peft is not None) is False


def test_blocks_list_is_normalised_to_tuple() -> None:
    assert model_config(blocks=[0, 1]).peft.blocks == (0, 1)


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"method": "prompt-learning"}, "--method"),
        ({"activation": "tanh"}, "--activation"),
        ({"bottleneck": 0}, "--bottleneck"),
        ({"attn_heads": 0}, "--attn-heads"),
        ({"guidance_tokens": 0}, "--guidance-tokens"),
        ({"logit_scale": 0.0}, "--logit-scale"),
        ({"blocks": (0, 0)}, "--blocks"),
        ({"blocks": (-1,)}, "--blocks"),
        ({"blocks": ()}, "--blocks"),
        ({"method": "lift", "guidance": True}, "--guidance"),
    ],
)
def test_bad_config_names_the_flag(kwargs: dict, flag: str) -> None:
    with pytest.raises(SageError, match=flag) as info:
        model_config(**kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("method", ["lift", "lora", "adapter"])
def test_bottleneck_above_the_tower_width_is_one_line_before_any_weight(tiny_clip, class_embeddings,
                                                                         method: str) -> None:
    """--bottleneck 100000000 asked for 25.6 GB of adapter weights (a traceback from the allocator)."""
    from sage_cli.model import build_classifier

    with pytest.raises(SageError) as info:
        build_classifier(tiny_clip, class_embeddings, model_config(method, bottleneck=100_000_000))
    assert str(info.value) == ("--bottleneck 100000000 exceeds the image tower's width (64); choose 1..64 "
                               "(default: LIFT's rule)")
    assert getattr(tiny_clip.visual, "sage_peft", None) is None  # nothing was injected
    build_classifier(tiny_clip, class_embeddings, model_config(method, bottleneck=64))  # the width itself is fine


def test_blocks_beyond_any_tower_are_refused_by_the_config() -> None:
    with pytest.raises(SageError, match=r"^--blocks: block 1024 is beyond any image tower \(sage takes indices "
                                        r"below 1024\)$"):
        model_config("lift", blocks=(0, 1024))
    assert model_config("lift", blocks=(1023,)).peft.blocks == (1023,)
