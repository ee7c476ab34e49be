"""The backbone factory: sage-tiny, tags, checkpoint files and their one-line errors."""

from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from sage_cli.artifacts import sha256_file
from sage_cli import backbone
from sage_cli.backbone import backbone_identity, check_model_name, load_clip, resolve_device
from sage_cli.errors import SageError


def _tiny(seed: int = 0):
    torch.manual_seed(seed)
    return load_clip("sage-tiny", "none")


def _save_pt(model: torch.nn.Module, path: Path) -> Path:
    torch.save(model.state_dict(), path)
    return path


def test_sage_tiny_is_registered_and_frozen() -> None:
    assert "sage-tiny" in open_clip.list_models()
    clip = _tiny()
    assert not clip.model.training
    assert not any(p.requires_grad for p in clip.model.parameters())
    assert clip.record == {
        "model": "sage-tiny",
        "pretrained": "none",
        "pretrained_kind": "none",
        "pretrained_sha256": None,
        "embedding_dim": 64,
        "image_size": [32, 32],
        "context_length": 32,
        "mean": pytest.approx([0.48145466, 0.4578275, 0.40821073]),
        "std": pytest.approx([0.26862954, 0.26130258, 0.27577711]),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    tokens = clip.tokenizer(["a photo of a cat."])
    assert tokens.shape == (1, 32)
    with torch.no_grad():
        assert clip.model.encode_text(tokens).shape == (1, 64)
        assert clip.model.encode_image(torch.zeros(2, 3, 32, 32)).shape == (2, 64)


def test_same_seed_same_weights_and_transforms_size() -> None:
    a, b = _tiny(3), _tiny(3)
    for (key, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        torch.testing.assert_close(x, y, msg=key)
    from PIL import Image

    image = Image.new("RGB", (50, 40), color=(255, 0, 0))
    assert a.preprocess_eval(image).shape == (3, 32, 32)
    assert a.preprocess_train(image).shape == (3, 32, 32)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_checkpoint_file_round_trips(tmp_path: Path, suffix: str) -> None:
    source = _tiny(1)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pt":
        _save_pt(source.model, path)
    else:
        save_file({k: v.contiguous() for k, v in source.model.state_dict().items()}, str(path))
    torch.manual_seed(2)  # another init, so equality proves the file was loaded
    loaded = load_clip("sage-tiny", str(path))
    for key, value in source.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value, msg=key)
    assert loaded.record["pretrained"] == str(path.resolve())
    assert loaded.record["pretrained_kind"] == "file"
    assert loaded.record["pretrained_sha256"] == sha256_file(path)
    assert backbone_identity(loaded.record) == {"model": "sage-tiny", "weights": f"sha256:{sha256_file(path)}"}
    assert not any(p.requires_grad for p in loaded.model.parameters())


def test_model_name_accepts_slash_form() -> None:
    assert check_model_name("ViT-B/32") == "ViT-B-32"


def test_unknown_model_name_lists_close_matches() -> None:
    with pytest.raises(SageError) as info:
        load_clip("ViT-B-33", "none")
    message = str(info.value)
    assert "\n" not in message
    assert "'ViT-B-33'" in message and "ViT-B-32" in message


def test_missing_checkpoint_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(SageError, match=r"nope\.pt: checkpoint file not found"):
        load_clip("sage-tiny", str(missing))


def test_checkpoint_that_does_not_fit_names_file_and_key(tmp_path: Path) -> None:
    torch.manual_seed(0)
    other = open_clip.create_model("sage-toy")  # wider vision tower than sage-tiny
    path = _save_pt(other, tmp_path / "toy.pt")
    before = path.read_bytes()
    with pytest.raises(SageError) as info:
        load_clip("sage-tiny", str(path))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path.resolve()}: checkpoint does not fit the model: key 'visual.")
    assert "shape" in message
    assert path.read_bytes() == before


def test_checkpoint_with_missing_key(tmp_path: Path) -> None:
    state = _tiny().model.state_dict()
    del state["text_projection"]
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    with pytest.raises(SageError, match=r"partial\.pt: checkpoint does not fit the model: key 'text_projection' is missing"):
        load_clip("sage-tiny", str(path))


def test_unreadable_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(SageError, match=r"junk\.pt: not a readable checkpoint"):
        load_clip("sage-tiny", str(path))


def test_unknown_tag_lists_tags() -> None:
    with pytest.raises(SageError, match=r"neither a checkpoint file nor a tag of ViT-B-32 \(tags: openai, "):
        load_clip("ViT-B-32", "open-ai")


def test_tag_offline_without_cache_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_download(*args, **kwargs):
        raise AssertionError("must not try to download when the host is unreachable")

    monkeypatch.setattr(backbone, "find_cached_tag_file", lambda cfg: None)
    monkeypatch.setattr(backbone, "_reachable", lambda host: False)
    monkeypatch.setattr(open_clip.factory, "download_pretrained", no_download)
    with pytest.raises(SageError) as info:
        load_clip("ViT-B-32", "OpenAI")
    assert str(info.value) == (
        "--pretrained openai: could not get the ViT-B-32 weights (not in open_clip's cache and huggingface.co "
        "cannot be reached); run once with network access so open_clip caches them, or download the "
        "checkpoint file and pass --pretrained /path/to/file"
    )


def test_tag_download_failure_says_how_to_get_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(backbone, "find_cached_tag_file", lambda cfg: None)
    monkeypatch.setattr(backbone, "_reachable", lambda host: True)
    monkeypatch.setattr(open_clip.factory, "download_pretrained", failing)
    with pytest.raises(SageError) as info:
        load_clip("ViT-B-32", "openai")
    message = str(info.value)
    assert "\n" not in message
    assert "could not get the ViT-B-32 weights (Failed to download weights for tag 'openai'" in message
    assert message.endswith("or download the checkpoint file and pass --pretrained /path/to/file")


def test_cached_tag_loads_offline_with_the_tags_preprocessing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from open_clip import pretrained as registry

    monkeypatch.setenv("HOME", str(tmp_path))
    cache = tmp_path / ".cache" / "clip"
    cache.mkdir(parents=True)
    source = _tiny(5)
    _save_pt(source.model, cache / "tiny-test.pt")
    cfg = {"url": "https://example.invalid/tiny-test.pt", "hf_hub": "", "mean": (0.5, 0.5, 0.5),
           "std": (0.25, 0.25, 0.25), "interpolation": "bilinear", "resize_mode": "squash"}
    monkeypatch.setitem(registry._PRETRAINED, "sage-tiny", {"test_tag": cfg})
    monkeypatch.setattr(backbone, "_reachable", lambda host: pytest.fail("must not touch the network"))
    loaded = load_clip("sage-tiny", "test-tag")
    for key, value in source.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value, msg=key)
    record = loaded.record
    assert (record["pretrained"], record["pretrained_kind"], record["pretrained_sha256"]) == ("test_tag", "tag", None)
    assert (record["mean"], record["std"]) == ([0.5] * 3, [0.25] * 3)
    assert (record["interpolation"], record["resize_mode"]) == ("bilinear", "squash")


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(SageError, match="not a device"):
        resolve_device("gpu0")
