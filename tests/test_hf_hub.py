"""hf-hub:ORG/NAME models through open_clip, from a local Hugging Face cache built in tmp_path
(the hub layout models--ORG--NAME/snapshots/<hash>/...); HF_HUB_OFFLINE=1: nothing downloads."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from sage_cli import hf_hub
from sage_cli.backbone import (backbone_identity, build_backbone, check_model_name, classify_pretrained,
                               load_clip)
from sage_cli.errors import SageError

NAME = "hf-hub:sage-test/tiny-clip"
SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


def make_hub_cache(root: Path, weights: bool = True) -> tuple[Path, dict[str, torch.Tensor]]:
    """A Hub cache holding sage-tiny as sage-test/tiny-clip: its config and (seeded) random weights."""
    repo = root / "models--sage-test--tiny-clip"
    snapshot = repo / "snapshots" / SNAPSHOT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SNAPSHOT)
    preprocess = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "interpolation": "bilinear",
                  "resize_mode": "shortest"}
    config = {"model_cfg": open_clip.get_model_config("sage-tiny"), "preprocess_cfg": preprocess}
    (snapshot / hf_hub.CONFIG_FILE).write_text(json.dumps(config))
    torch.manual_seed(123)
    state = {k: v.contiguous() for k, v in open_clip.create_model("sage-tiny").state_dict().items()}
    if weights:
        save_file(state, str(snapshot / "open_clip_model.safetensors"))
    return root, state


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, torch.Tensor]]:
    root, state = make_hub_cache(tmp_path / "hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return root, state


def test_names_are_checked_and_kept() -> None:
    assert check_model_name(" hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K/ ") == \
        "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    for bad in ("hf-hub:laion", "hf-hub:", "hf-hub:a/b/c", "hf-hub:a /b"):
        with pytest.raises(SageError, match=r"a Hugging Face model is named hf-hub:ORG/NAME"):
            check_model_name(bad)
    assert classify_pretrained(NAME, "hub") == ("hub", "hub")
    assert classify_pretrained(NAME, "none") == ("none", "")
    with pytest.raises(SageError, match=r"^--pretrained 'openai': hf-hub:sage-test/tiny-clip takes its repository's "
                                        r"weights \(--pretrained hub\), a checkpoint file, or none$"):
        classify_pretrained(NAME, "openai")


def test_a_local_hub_cache_gives_the_model_its_weights_and_preprocessing(hub_cache) -> None:
    root, state = hub_cache
    clip = load_clip(NAME, "hub")
    loaded = clip.model.state_dict()
    assert loaded.keys() == state.keys()
    for key, tensor in state.items():
        assert torch.equal(loaded[key], tensor), key
    weights = root / "models--sage-test--tiny-clip" / "snapshots" / SNAPSHOT / "open_clip_model.safetensors"
    from sage_cli.artifacts import sha256_file

    assert clip.record["model"] == NAME and clip.record["pretrained"] == "hub"
    assert clip.record["pretrained_sha256"] == sha256_file(weights)  # the content is the identity
    assert backbone_identity(clip.record) == {"model": NAME, "weights": f"sha256:{sha256_file(weights)}"}
    assert clip.record["embedding_dim"] == open_clip.get_model_config("sage-tiny")["embed_dim"]
    assert clip.record["mean"] == [0.5, 0.5, 0.5] and clip.record["interpolation"] == "bilinear"  # the repo's
    reference = open_clip.get_tokenizer("sage-tiny")(["a red square"])
    assert torch.equal(clip.tokenizer(["a red square"]), reference)


def test_none_builds_the_hub_config_at_random_without_its_weights(hub_cache) -> None:
    _, state = hub_cache
    a, b = build_backbone(NAME, "none", "cpu"), build_backbone("sage-tiny", "none", "cpu")
    for key, tensor in b.model.state_dict().items():  # the same architecture, the same seeded init
        assert torch.equal(a.model.state_dict()[key], tensor), key
    assert not torch.equal(a.model.state_dict()["visual.proj"], state["visual.proj"])
    assert a.record["pretrained"] == "none" and a.record["pretrained_sha256"] is None


def test_offline_without_the_files_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SageError, match=rf"^--model {NAME}: open_clip_config.json is not in the Hugging Face cache "
                                        rf".*empty and HF_HUB_OFFLINE is set; run once with network access"):
        load_clip(NAME, "hub")
    root, _ = make_hub_cache(tmp_path / "config-only", weights=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    with pytest.raises(SageError, match=rf"^--model {NAME}: open_clip_model.safetensors is not in the Hugging Face "
                                        "cache"):
        load_clip(NAME, "hub")
    assert load_clip(NAME, "none").record["pretrained"] == "none"  # the config alone builds it


def test_without_huggingface_hub_the_error_names_the_extra(hub_cache, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_hub(name, *args, **kwargs):
        if name == "huggingface_hub" or name.startswith("huggingface_hub."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_hub)
    with pytest.raises(SageError, match=r"^hf-hub: models need huggingface_hub; pip install 'sage-lt\[hf\]' "
                                        r"\(huggingface_hub\)$"):
        load_clip(NAME, "hub")


def test_encode_train_and_reload_with_an_hf_hub_model(hub_cache, synthetic_prepared: Path, tmp_path: Path) -> None:
    from sage_cli.encode_text import EncodeTextConfig
    from sage_cli.encode_text import run as encode
    from sage_cli.train import build_train_config, load_trained_classifier
    from sage_cli.train import run as train

    text = encode(EncodeTextConfig(prepared=synthetic_prepared, out=tmp_path / "text", model=NAME,
                                   pretrained="hub", templates="single", device="cpu")).out
    result = train(build_train_config({"prepared": synthetic_prepared, "text_cache": text, "out": tmp_path / "run",
                                       "method": "lift", "batch_size": 8, "device": "cpu", "num_workers": 0,
                                       "max_steps": 2}))
    assert result.record["model"]["model"] == NAME and result.record["model"]["pretrained"] == "hub"
    reloaded = load_trained_classifier(result.out).classifier
    for name, tensor in result.classifier.trainable_state_dict().items():
        assert torch.equal(reloaded.trainable_state_dict()[name], tensor), name
