"""Every registered method and every loss through `sage train` on the synthetic fixture (CPU, sage-tiny)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from sage_cli import artifacts
from sage_cli.cli import app
from sage_cli.losses import LOSSES
from sage_cli.methods import TRAIN_METHODS
from sage_cli.train import load_trained_classifier

runner = CliRunner()


def _train(prepared: Path, text: Path, out: Path, method: str, *extra: str) -> dict:
    args = ["train", "--prepared", str(prepared), "--text-cache", str(text), "--method", method, "--out", str(out),
            "--device", "cpu", "--num-workers", "0", "--batch-size", "8", "--max-steps", "2", "--eval-every", "0",
            "--lr", "0.05", *extra]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return artifacts.read_record(out, artifacts.TRAIN_RECORD)


@pytest.mark.parametrize("method", TRAIN_METHODS)
def test_every_method_trains_saves_and_reloads(synthetic_prepared: Path, synthetic_text_cache: Path, tmp_path: Path,
                                               method: str) -> None:
    record = _train(synthetic_prepared, synthetic_text_cache, tmp_path / method, method)
    assert record["method"] == method and record["steps"] == 2
    tensors = load_file(str(tmp_path / method / "adapter.safetensors"))
    assert sum(t.numel() for t in tensors.values()) == record["trainable_params"]
    classifier, _, _, _ = load_trained_classifier(tmp_path / method)
    assert set(tensors) == set(classifier.trainable_names)
    assert classifier.num_trainable == record["trainable_params"]


@pytest.mark.parametrize("loss", list(LOSSES))
def test_every_loss_trains(synthetic_prepared: Path, synthetic_text_cache: Path, tmp_path: Path, loss: str) -> None:
    record = _train(synthetic_prepared, synthetic_text_cache, tmp_path / loss, "linear", "--loss", loss)
    assert record["config"]["loss"]["loss"] == loss
    assert record["config"]["loss"]["compensation"] == "none"
    assert record["final_eval"]["samples"] == 8


def test_class_aware_sampler_and_feature_head_init_train(synthetic_prepared: Path, synthetic_text_cache: Path,
                                                          tmp_path: Path) -> None:
    record = _train(synthetic_prepared, synthetic_text_cache, tmp_path / "r", "lora", "--sampler", "class-aware",
                    "--head-init", "class-mean", "--head", "l2")
    assert record["config"]["data"]["sampler"] == "class-aware"
    assert record["classifier"]["head"] == "l2" and record["classifier"]["head_init"] == "class-mean"


def test_compensation_on_a_loss_outside_the_la_family_is_one_line(synthetic_prepared: Path,
                                                                   synthetic_text_cache: Path, tmp_path: Path) -> None:
    args = ["train", "--prepared", str(synthetic_prepared), "--text-cache", str(synthetic_text_cache),
            "--method", "sage", "--loss", "focal", "--compensation", "semantic", "--out", str(tmp_path / "r")]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "--compensation semantic composes with the logit-adjusted losses (la, bs) only" in result.output
    assert not (tmp_path / "r").exists()


def test_feature_head_init_uses_the_frozen_features_of_the_training_split(synthetic_prepared: Path,
                                                                          synthetic_text_cache: Path) -> None:
    import torch
    import torch.nn.functional as F

    from sage_cli.data import ManifestDataset
    from sage_cli.train import build_train_config
    from sage_cli.train.core import compute_frozen_train_features, compute_initial_head
    from sage_cli.backbone import build_backbone
    from sage_cli.train.inputs import resolve_inputs

    config = build_train_config({"prepared": synthetic_prepared, "text_cache": synthetic_text_cache, "out": "o",
                                 "method": "lora", "head_init": "class-mean", "num_workers": 0, "batch_size": 8})
    inputs = resolve_inputs(config)
    clip = build_backbone(inputs.model, inputs.pretrained, "cpu")
    frozen = compute_frozen_train_features(config, inputs, clip, torch.device("cpu"))
    vectors = compute_initial_head(config, frozen, 4)
    train = ManifestDataset(inputs.data.split("train"), inputs.data.image_root, clip.preprocess_eval)
    images = torch.stack([train[i][0] for i in range(len(train))])  # [45, 3, 32, 32]
    visual = clip.model.visual
    with torch.no_grad():  # lora's head reads the class token after ln_post, before proj (LIFT's)
        features = F.normalize(visual.ln_post(visual.transformer(visual._embeds(images)))[:, 0], dim=-1)
    labels = torch.tensor(train.labels)
    expected = F.normalize(torch.stack([features[labels == c].mean(0) for c in range(4)]), dim=-1)
    torch.testing.assert_close(vectors, expected, rtol=0, atol=1e-5)
    with torch.no_grad():  # the joint-space features of the same pass: h @ proj
        joint = F.normalize(clip.model.encode_image(images), dim=-1)
    torch.testing.assert_close(frozen.features, joint, rtol=0, atol=1e-5)
    text = build_train_config({"prepared": synthetic_prepared, "text_cache": synthetic_text_cache, "out": "o",
                               "method": "lora"})
    assert compute_frozen_train_features(text, inputs, clip, torch.device("cpu")) is None
    assert compute_initial_head(text, None, 4) is None
    scratch = build_train_config({"prepared": synthetic_prepared, "text_cache": synthetic_text_cache, "out": "o",
                                  "method": "linear", "head_init": "random"})  # needs no pass over the images
    assert compute_frozen_train_features(scratch, inputs, clip, torch.device("cpu")) is None
    assert compute_initial_head(scratch, None, 4) is None


def test_zero_shot_compensation_is_fitted_on_the_frozen_training_features_and_recorded(
        synthetic_prepared: Path, synthetic_text_cache: Path, tmp_path: Path) -> None:
    import torch

    from sage_cli.losses import compute_zero_shot_prior
    from sage_cli.train import build_train_config
    from sage_cli.train.core import compute_frozen_train_features
    from sage_cli.backbone import build_backbone
    from sage_cli.train.inputs import resolve_inputs

    record = _train(synthetic_prepared, synthetic_text_cache, tmp_path / "zs", "sage-zs", "--lam", "1")
    assert record["config"]["loss"]["compensation"] == "zero-shot"
    estimate = record["compensation_estimate"]
    assert estimate["fitted"] is True and sum(estimate["zero_shot_prior"]) == pytest.approx(1.0, abs=1e-5)
    config = build_train_config({"prepared": synthetic_prepared, "text_cache": synthetic_text_cache, "out": "o",
                                 "method": "sage-zs", "num_workers": 0, "batch_size": 8})
    inputs = resolve_inputs(config)
    clip = build_backbone(inputs.model, inputs.pretrained, "cpu")
    frozen = compute_frozen_train_features(config, inputs, clip, torch.device("cpu"))
    features, labels = frozen.features, frozen.labels  # CLIP's joint space, where the class texts are
    expected = compute_zero_shot_prior(features, labels, inputs.cache.class_embeddings, 25.0)
    assert estimate["zero_shot_prior"] == pytest.approx(expected.tolist(), abs=1e-5)
    log_q = expected.log()
    assert estimate["delta"] == pytest.approx((-(log_q - log_q.mean())).clamp(-5, 5).tolist(), abs=1e-5)
    assert _train(synthetic_prepared, synthetic_text_cache, tmp_path / "sage", "sage")["compensation_estimate"] is None


def test_the_spread_margin_trains_and_checkpoints_its_covariance(synthetic_prepared: Path, synthetic_text_cache: Path,
                                                                  tmp_path: Path) -> None:
    record = _train(synthetic_prepared, synthetic_text_cache, tmp_path / "r", "lift", "--spread", "1")
    assert record["config"]["loss"]["spread"] == 1.0 and record["steps"] == 2
    classifier, _, _, _ = load_trained_classifier(tmp_path / "r")
    (state_file,) = sorted((tmp_path / "r" / "checkpoints").glob("step-*/state.pt"))[-1:]
    # the loss's buffers ride with the checkpoint (a resume continues the EMA): Sigma is [D, D] of the head's input
    covariance = torch.load(state_file, weights_only=True)["loss"]["spread.covariance"]
    assert covariance.shape == (classifier.head.weight.shape[1],) * 2 and bool(covariance.abs().sum() > 0)


def test_the_spread_margin_needs_a_cosine_head(synthetic_prepared: Path, synthetic_text_cache: Path,
                                               tmp_path: Path) -> None:
    args = ["train", "--prepared", str(synthetic_prepared), "--text-cache", str(synthetic_text_cache),
            "--method", "lift", "--head", "linear", "--spread", "1", "--out", str(tmp_path / "r"), "--device", "cpu",
            "--num-workers", "0", "--batch-size", "8", "--max-steps", "1", "--eval-every", "0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "--spread reads a cosine head's rows; got --head linear" in result.output
