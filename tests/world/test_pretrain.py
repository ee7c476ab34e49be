"""Toy CLIP pretraining: config, loss, schedule, a short run, the record, and the shipped weights."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from sage_cli.errors import SageError
from sage_cli.world import CLEAN, SHIFTED, TOY_WEIGHTS_V1, generate
from sage_cli.world import TOY_WEIGHTS_V1 as TOY_WEIGHTS  # the v1 recipe's weights
from sage_cli.world.pretrain import (
    PRETRAIN_RECORD,
    WEIGHTS_FILE,
    PretrainConfig,
    build_toy_model,
    compute_clip_loss,
    compute_lr,
    evaluate_world_zero_shot,
    images_to_tensor,
    run,
)


def test_toy_config_loads_with_open_clip() -> None:
    torch.manual_seed(0)
    clip, tokenizer = build_toy_model()
    n_params = sum(p.numel() for p in clip.parameters())
    assert 2_000_000 <= n_params <= 6_000_000, n_params
    assert clip.visual.image_size == (32, 32)
    assert clip.context_length == 32
    assert tokenizer(["a photo of a purple star."]).shape == (1, 32)
    with torch.no_grad():
        assert clip.encode_image(torch.zeros(2, 3, 32, 32)).shape == (2, 64)


def test_images_to_tensor_matches_open_clip_eval_transform() -> None:
    _, _, preprocess = open_clip.create_model_and_transforms("sage-toy")
    images = generate(np.array([3, 50]), 0, SHIFTED).images
    expected = torch.stack([preprocess(Image.fromarray(im)) for im in images])
    clip, _ = build_toy_model()
    torch.testing.assert_close(images_to_tensor(images, clip), expected, atol=1e-6, rtol=0)


def test_clip_loss_hand_value() -> None:
    eye = torch.eye(2)
    # logits [[1, 0], [0, 1]]: each row/column CE is log(1 + e^-1).
    loss = compute_clip_loss(eye, eye, torch.tensor(1.0))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    swapped = compute_clip_loss(eye, eye.flip(0), torch.tensor(1.0))
    assert swapped.item() == pytest.approx(math.log(1 + math.exp(1)), abs=1e-6)


def test_lr_schedule() -> None:
    config = PretrainConfig(out=Path("unused"), steps=1100, lr=1e-3, warmup_steps=100)
    assert compute_lr(0, config) == pytest.approx(1e-5)
    assert compute_lr(99, config) == pytest.approx(1e-3)
    assert compute_lr(100, config) == pytest.approx(1e-3)
    assert compute_lr(600, config) == pytest.approx(5e-4)
    assert compute_lr(1100, config) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("steps", 0, "--steps"), ("batch_size", 1, "--batch-size"), ("lr", 0.0, "--lr"), ("threads", 0, "--threads")],
)
def test_config_validation(field: str, value: object, message: str) -> None:
    with pytest.raises(SageError, match=message):
        PretrainConfig(out=Path("unused"), **{field: value})


def test_short_run_lowers_loss_and_writes_loadable_weights(tmp_path: Path) -> None:
    config = PretrainConfig(out=tmp_path / "run", steps=30, batch_size=16, lr=3e-3, warmup_steps=5, eval_per_class=1)
    result = run(config)
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    assert first > math.log(16) - 0.3  # starts near chance for 16 pairs
    assert last < first - 0.3, (first, last)
    record = json.loads((tmp_path / "run" / PRETRAIN_RECORD).read_text())
    assert record["inputs"]["steps"] == 30 and record["inputs"]["seed"] == 0
    assert set(record["zero_shot_top1"]) == {"clean", "shifted"}
    clip, _ = build_toy_model(weights=result.weights)  # open_clip loads the float16 safetensors
    assert clip.logit_scale.dtype == torch.float32


def test_run_is_deterministic_and_guarded(tmp_path: Path) -> None:
    kwargs = dict(steps=3, batch_size=8, warmup_steps=1, eval_per_class=0)
    a = run(PretrainConfig(out=tmp_path / "a", **kwargs))
    b = run(PretrainConfig(out=tmp_path / "b", **kwargs))
    # Same seed, same run. Not bytes: CPU float32 training is not promised to be bitwise
    # reproducible, and a last-bit difference can flip one float16 rounding (a CI run saw it).
    assert a.losses == pytest.approx(b.losses, rel=1e-5)
    wa, wb = load_file(str(a.weights)), load_file(str(b.weights))
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key].float(), wb[key].float(), atol=1e-3, rtol=1e-3, msg=key)
    # Same inputs again: skipped, nothing rewritten.
    assert run(PretrainConfig(out=tmp_path / "a", **kwargs)).skipped
    # Other inputs into the same directory: refused, weights untouched.
    before = a.weights.read_bytes()
    with pytest.raises(SageError, match="other inputs") as info:
        run(PretrainConfig(out=tmp_path / "a", **{**kwargs, "seed": 1}))
    assert "\n" not in str(info.value)
    assert a.weights.read_bytes() == before
    c = run(PretrainConfig(out=tmp_path / "c", **{**kwargs, "seed": 1}))
    wc = load_file(str(c.weights))
    assert max(float((wc[k].float() - wa[k].float()).abs().max()) for k in wa) > 0.05  # another seed differs


def test_shipped_weights_zero_shot_well_above_chance() -> None:
    assert TOY_WEIGHTS_V1.is_file(), f"missing shipped weights {TOY_WEIGHTS_V1}"
    assert TOY_WEIGHTS_V1.name == WEIGHTS_FILE
    clip, tokenizer = build_toy_model(weights=TOY_WEIGHTS_V1)
    clip.eval()
    clean = evaluate_world_zero_shot(clip, tokenizer, CLEAN, per_class=3, seed=123)
    shifted = evaluate_world_zero_shot(clip, tokenizer, SHIFTED, per_class=3, seed=123)
    assert clean > 40.0  # chance is 1.25% over 80 classes
    assert shifted < clean - 10.0  # the downstream domain is really shifted


def test_v1_recipe_keeps_the_shipped_fingerprint() -> None:
    # world / init / checkpoint_every are new options: the v1 recipe's inputs must stay what its record holds.
    from sage_cli.world.pretrain import _fingerprint_inputs

    shipped = json.loads(TOY_WEIGHTS.with_name("sage_toy.pretrain.json").read_text())
    config = PretrainConfig(out=Path("unused"), steps=4000, batch_size=128, lr=1e-3, seed=0, threads=2,
                            eval_per_class=20, checkpoint_every=100)
    assert _fingerprint_inputs(config) == shipped["inputs"]


def test_open_world_run_from_init_records_both(tmp_path: Path) -> None:
    from sage_cli.artifacts import sha256_file

    config = PretrainConfig(out=tmp_path / "v2", steps=2, batch_size=8, warmup_steps=1, eval_per_class=1,
                            world="open", init=TOY_WEIGHTS)
    result = run(config)
    record = json.loads(result.record.read_text())
    assert record["inputs"]["world"] == "open"
    assert record["inputs"]["init"] == {"sha256": sha256_file(TOY_WEIGHTS)}
    assert list(record["zero_shot_top1"]) == ["open", "moderate", "cast-only", "texture-only", "clean", "shifted"]
    # Two small steps from the v1 weights stay near them (the init was really loaded).
    start, end = load_file(str(TOY_WEIGHTS)), load_file(str(result.weights))
    key = "visual.conv1.weight"
    assert float((end[key].float() - start[key].float()).abs().max()) < 0.01


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    kwargs = dict(steps=4, batch_size=8, warmup_steps=1, eval_per_class=0, checkpoint_every=2)
    whole = run(PretrainConfig(out=tmp_path / "whole", **kwargs))

    def stop_at_step_3(step: int, loss: float) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(PretrainConfig(out=tmp_path / "cut", **kwargs), progress=stop_at_step_3)
    assert (tmp_path / "cut" / "checkpoint.pt").is_file() and not (tmp_path / "cut" / WEIGHTS_FILE).exists()
    steps_run = []
    resumed = run(PretrainConfig(out=tmp_path / "cut", **kwargs), progress=lambda s, loss: steps_run.append(s))
    assert steps_run == [3, 4]  # steps 1-2 came from the checkpoint
    assert resumed.losses == pytest.approx(whole.losses, rel=1e-5)
    wa, wb = load_file(str(whole.weights)), load_file(str(resumed.weights))
    for key in wa:
        torch.testing.assert_close(wa[key].float(), wb[key].float(), atol=1e-3, rtol=1e-3, msg=key)
    assert not (tmp_path / "cut" / "checkpoint.pt").exists()  # a finished run leaves no checkpoint


def test_checkpoint_of_another_run_is_refused(tmp_path: Path) -> None:
    kwargs = dict(steps=4, batch_size=8, warmup_steps=1, eval_per_class=0, checkpoint_every=2)

    def stop(step: int, loss: float) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(PretrainConfig(out=tmp_path / "a", **kwargs), progress=stop)
    before = (tmp_path / "a" / "checkpoint.pt").read_bytes()
    with pytest.raises(SageError, match="checkpoint of another pretraining run") as info:
        run(PretrainConfig(out=tmp_path / "a", **{**kwargs, "seed": 1}))
    assert "\n" not in str(info.value)
    assert (tmp_path / "a" / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize(("field", "value", "message"),
                         [("world", "moon", "--world"), ("init", Path("nowhere.safetensors"), "--init"),
                          ("checkpoint_every", -1, "--checkpoint-every")])
def test_v2_config_validation(field: str, value: object, message: str) -> None:
    with pytest.raises(SageError, match=message):
        PretrainConfig(out=Path("unused"), **{field: value})
