"""Cached frozen features (--feature-cache): equal logits, equal training, keys and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from sage_cli.data import ManifestDataset, build_loader, load_prepared_data
from sage_cli.encode_text import load_text_cache
from sage_cli.errors import SageError
from sage_cli.feature_cache import compute_key_inputs, feature_dir, load_or_compute_features
from sage_cli.model import build_classifier
from sage_cli.train import build_train_config, run
from sage_cli.backbone import build_backbone
from sage_cli.methods import model_config

CPU = torch.device("cpu")


def _config(prepared: Path, text: Path, out: Path, **options):
    base = {"prepared": prepared, "text_cache": text, "out": out, "method": "linear", "batch_size": 8,
            "device": "cpu", "num_workers": 0, "seed": 0, "epochs": 3, "augment": False, "log_every": 1}
    return build_train_config({**base, **options})


def test_cached_features_give_the_uncached_logits(synthetic_prepared: Path, synthetic_text_cache: Path,
                                                  tmp_path: Path) -> None:
    data = load_prepared_data(synthetic_prepared)
    clip = build_backbone("sage-tiny", "none", CPU)
    embeddings = load_text_cache(synthetic_text_cache).class_embeddings
    classifier = build_classifier(clip.model, embeddings, model_config("linear")).eval()
    rows = data.split("val")
    dataset = ManifestDataset(rows, data.image_root, clip.preprocess_eval)
    batch = next(iter(build_loader(dataset, len(dataset), 0, CPU)))
    with torch.no_grad():
        expected = classifier(batch.images)  # [8, 4] through the frozen tower
    inputs = compute_key_inputs(clip.record, data, CPU, "pre-proj")  # linear's head reads LIFT's feature
    assert inputs["head_feature"] == "pre-proj" and "head_feature" not in compute_key_inputs(clip.record, data, CPU)
    features, from_disk = load_or_compute_features(tmp_path, inputs, "val", classifier.encode_head_input, dataset,
                                                   rows["sample_id"].to_numpy(), CPU, 4, 0)
    assert not from_disk and features.features.shape == (8, clip.record["embedding_dim"])
    assert features.sample_ids.tolist() == rows["sample_id"].tolist()
    again, from_disk = load_or_compute_features(tmp_path, inputs, "val", classifier.encode_head_input, dataset,
                                                rows["sample_id"].to_numpy(), CPU, 4, 0)
    assert from_disk and torch.equal(again.features, features.features)
    with torch.no_grad():
        logits = classifier.head(F.normalize(again.features, dim=-1))
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)
    assert not torch.equal(logits, classifier.head(F.normalize(again.features.flip(0), dim=-1)))


def test_linear_trains_from_cached_features_as_from_images(synthetic_prepared: Path, synthetic_text_cache: Path,
                                                           tmp_path: Path) -> None:
    plain = run(_config(synthetic_prepared, synthetic_text_cache, tmp_path / "plain"))
    cached = run(_config(synthetic_prepared, synthetic_text_cache, tmp_path / "cached",
                         feature_cache=tmp_path / "features"))
    a, b = load_file(plain.out / "adapter.safetensors"), load_file(cached.out / "adapter.safetensors")
    assert a.keys() == b.keys() == {"head.weight"}
    torch.testing.assert_close(b["head.weight"], a["head.weight"], rtol=0, atol=1e-6)
    # Weights within 1e-6 (another computation path): the 8 val predictions may differ only on a near-tie.
    assert abs(cached.record["final_eval"]["top1"] - plain.record["final_eval"]["top1"]) <= 1 / 8 + 1e-9
    assert cached.record["steps"] == plain.record["steps"] == 18
    assert cached.record["preprocessing"]["input"].startswith("cached frozen features")
    (key_dir,) = (tmp_path / "features").iterdir()
    record = json.loads((key_dir / "features.json").read_text())
    assert record["splits"]["train"]["samples"] == 45 and record["splits"]["val"]["samples"] == 8
    assert record["inputs"]["backbone"]["model"] == "sage-tiny" and record["inputs"]["precision"] == "fp32"
    stamp = (key_dir / "train.safetensors").stat().st_mtime_ns
    again = run(_config(synthetic_prepared, synthetic_text_cache, tmp_path / "again", seed=1,
                        feature_cache=tmp_path / "features"))
    assert (key_dir / "train.safetensors").stat().st_mtime_ns == stamp  # read, not recomputed
    assert again.record["steps"] == 18


def test_feature_cache_keys_apart_other_datasets_and_refuses_a_tampered_record(
    synthetic_prepared: Path, tmp_path: Path
) -> None:
    data = load_prepared_data(synthetic_prepared)
    record = build_backbone("sage-tiny", "none", CPU).record
    inputs = compute_key_inputs(record, data, CPU)
    other = {**inputs, "prepared": "another"}
    assert feature_dir(tmp_path, inputs) != feature_dir(tmp_path, other)
    assert feature_dir(tmp_path, inputs) != feature_dir(tmp_path, {**inputs, "precision": "bf16-autocast"})
    shifted = {**inputs, "preprocessing": {**inputs["preprocessing"], "interpolation": "bilinear"}}
    assert feature_dir(tmp_path, inputs) != feature_dir(tmp_path, shifted)
    lift_resize = compute_key_inputs({**record, "eval_resize": "lift"}, data, CPU)
    assert lift_resize["preprocessing"]["eval_resize"] == "lift" and "eval_resize" not in inputs["preprocessing"]
    assert feature_dir(tmp_path, inputs) != feature_dir(tmp_path, lift_resize)
    assert feature_dir(tmp_path, inputs) != feature_dir(tmp_path, compute_key_inputs(record, data, CPU, "pre-proj"))


def test_cached_features_of_other_samples_are_refused(synthetic_prepared: Path, synthetic_text_cache: Path,
                                                      tmp_path: Path) -> None:
    data = load_prepared_data(synthetic_prepared)
    clip = build_backbone("sage-tiny", "none", CPU)
    rows = data.split("test")
    dataset = ManifestDataset(rows, data.image_root, clip.preprocess_eval)
    inputs = compute_key_inputs(clip.record, data, CPU)
    ids = rows["sample_id"].to_numpy()
    load_or_compute_features(tmp_path, inputs, "test", clip.model.visual, dataset, ids, CPU, 4, 0)
    with pytest.raises(SageError, match="holds other samples than the split"):
        load_or_compute_features(tmp_path, inputs, "test", clip.model.visual, dataset, ids[::-1].copy(), CPU, 4, 0)
    where = feature_dir(tmp_path, inputs)
    text = (where / "features.json").read_text().replace('"fp32"', '"bf16-autocast"')
    (where / "features.json").write_text(text)
    with pytest.raises(SageError, match="features of other inputs"):
        load_or_compute_features(tmp_path, inputs, "test", clip.model.visual, dataset, ids, CPU, 4, 0)


@pytest.mark.parametrize(("options", "message"), [
    ({"method": "lift"}, "only --method linear trains on cached frozen features; got lift"),
    ({"augment": True}, "--feature-cache needs --no-augment"),
])
def test_feature_cache_refuses_methods_and_augmentation_it_cannot_serve(
    synthetic_prepared: Path, synthetic_text_cache: Path, tmp_path: Path, options: dict, message: str
) -> None:
    with pytest.raises(SageError, match=message):
        run(_config(synthetic_prepared, synthetic_text_cache, tmp_path / "run", feature_cache=tmp_path / "f",
                    **options))
    assert not (tmp_path / "run").exists() and not (tmp_path / "f").exists()
