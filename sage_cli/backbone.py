"""The one backbone factory every stage uses: an open_clip model, its transforms and tokenizer.

``load_clip(model, pretrained)`` builds any open_clip architecture by name and fills it from
an open_clip pretrained tag (fetched through open_clip's own cache, only because the user named
it), a local checkpoint file (always works offline), or ``"none"`` (random init, for tests and
smoke runs). A model named ``hf-hub:ORG/NAME`` is a Hugging Face repository of open_clip
(:mod:`sage_cli.hf_hub`): its config and, with ``--pretrained hub``, its weights come from the
Hugging Face cache (a local ``HF_HUB_CACHE`` works offline). The returned model is frozen: eval
mode, no parameter requires grad. Stages adapt it afterwards (see ``sage_cli.model``).

Importing this module registers the package's own small configs (``sage_cli/model_configs``,
e.g. ``sage-tiny``) with open_clip, so ``open_clip.create_model("sage-tiny")`` works too.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import open_clip
import torch
from open_clip.pretrained import get_pretrained_cfg

from sage_cli import hf_hub
from sage_cli.artifacts import sha256_file
from sage_cli.errors import SageError

logger = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
NO_WEIGHTS = "none"
HUB_WEIGHTS = "hub"  # --pretrained of an hf-hub: model: the repository's own weights
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz")


def register_model_configs(directory: Path = MODEL_CONFIG_DIR) -> None:
    """Make every ``*.json`` config in ``directory`` known to open_clip (idempotent)."""
    from open_clip import factory

    if directory not in factory._MODEL_CONFIG_PATHS:
        open_clip.add_model_config(directory)


register_model_configs()


@dataclass
class LoadedClip:
    """A frozen open_clip model with its image transforms, tokenizer and a record of what it is."""

    model: torch.nn.Module
    preprocess_train: Callable[[Any], torch.Tensor]
    preprocess_eval: Callable[[Any], torch.Tensor]
    tokenizer: Callable[..., torch.Tensor]
    record: dict[str, Any]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` means CUDA when available, else CPU; an unavailable CUDA request is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise SageError(f"--device {device!r}: not a device; use auto, cpu or cuda") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise SageError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return resolved


# Random-init backbones ("none": tests and smoke runs) are built from this torch seed in every
# stage (train, report's zero-shot baseline), so they are the same network everywhere.
BACKBONE_INIT_SEED = 0


def build_backbone(model: str, pretrained: str, device: str | torch.device) -> LoadedClip:
    """:func:`load_clip` with random init drawn from :data:`BACKBONE_INIT_SEED`; global RNG untouched."""
    with seeded(BACKBONE_INIT_SEED):
        return load_clip(model, pretrained, device)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the body with torch's generators (CPU and every CUDA device) seeded to ``seed``, restored after."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def load_clip(model: str, pretrained: str, device: str | torch.device = "cpu") -> LoadedClip:
    """Build open_clip ``model`` with ``pretrained`` weights: a tag, a checkpoint file or "none".

    Raises :class:`SageError` (one line) for an unknown model name, an unknown tag, a missing or
    unfitting checkpoint file, or tag weights that cannot be had (offline with no cache).
    """
    name = check_model_name(model)
    target = resolve_device(device)
    kind, weights = classify_pretrained(name, pretrained)
    if hf_hub.is_hub_name(name):
        clip = _create_from_hub(name, kind, weights)
    elif kind == "tag":
        clip = _create_from_tag(name, weights)
    else:
        with _quiet_open_clip():
            clip = open_clip.create_model(name, pretrained=None)
        if kind == "file":
            load_checkpoint_file(clip, Path(weights))
    clip = clip.to(target).eval().requires_grad_(False)
    preprocess_train, preprocess_eval = build_transforms(clip)
    record = build_backbone_record(name, kind, weights, clip)
    logger.debug("loaded %s (%s) on %s", name, record["pretrained"], target)
    return LoadedClip(clip, preprocess_train, preprocess_eval, build_tokenizer(name), record)


def check_model_name(model: str) -> str:
    """The open_clip config name for ``model`` (``/`` may stand for ``-``; ``hf-hub:ORG/NAME`` kept),
    or a SageError."""
    if hf_hub.is_hub_name(model):
        return hf_hub.check_hub_name(model)
    name = model.strip().replace("/", "-")
    known = open_clip.list_models()
    if name in known:
        return name
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `open_clip.list_models()` lists them"
    raise SageError(f"--model {model!r}: not an open_clip model name{hint}")


def classify_pretrained(model: str, pretrained: str) -> tuple[str, str]:
    """``("none", "")``, ``("tag", tag)`` or ``("file", absolute path)``; SageError otherwise."""
    value = pretrained.strip()
    if value.lower() == NO_WEIGHTS:
        return "none", ""
    path = Path(value).expanduser()
    if path.is_file():
        return "file", str(path.resolve())
    if hf_hub.is_hub_name(model):
        if value.lower() == HUB_WEIGHTS:
            return "hub", HUB_WEIGHTS
        raise SageError(f"--pretrained {value!r}: {model} takes its repository's weights (--pretrained "
                        f"{HUB_WEIGHTS}), a checkpoint file, or none")
    tags = open_clip.list_pretrained_tags_by_model(model)
    tag = value.lower().replace("-", "_")  # open_clip's own tag normalisation
    if tag in tags:
        return "tag", tag
    if path.suffix in _CHECKPOINT_SUFFIXES or "/" in value or "\\" in value:
        raise SageError(f"--pretrained {value}: checkpoint file not found")
    known = ", ".join(tags) if tags else "none; pass a local checkpoint file or 'none'"
    raise SageError(
        f"--pretrained {value!r}: neither a checkpoint file nor a tag of {model} (tags: {known})"
    )


def _create_from_hub(name: str, kind: str, weights: str) -> torch.nn.Module:
    """An hf-hub: model built from its cached config (open_clip's local-dir: schema, nothing fetched
    by open_clip), then filled from the repository's weights or a file (``none``: random init)."""
    config_dir = locate_hub_config(name).parent
    with _quiet_open_clip():
        clip = open_clip.create_model(f"local-dir:{config_dir}", load_weights=False)
    if kind != "none":
        load_checkpoint_file(clip, Path(weights) if kind == "file" else locate_hub_weights(name))
    return clip


def locate_hub_config(name: str) -> Path:
    """The cached ``open_clip_config.json`` of an hf-hub: model (fetched if need be and possible), checked."""
    return hf_hub.read_config(name, reachable=_reachable(_hub_host()))[0]


def locate_hub_weights(name: str) -> Path:
    return hf_hub.locate_file(name, hf_hub.WEIGHTS_FILES, reachable=_reachable(_hub_host()))


def _hub_host() -> str:
    return urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"


def build_tokenizer(name: str) -> Callable[..., torch.Tensor]:
    """open_clip's tokenizer for ``name`` (an hf-hub: model's from its cached config)."""
    if hf_hub.is_hub_name(name):
        return open_clip.get_tokenizer(f"local-dir:{locate_hub_config(name).parent}")
    return open_clip.get_tokenizer(name)


def compute_weights_sha256(name: str, kind: str, weights: str) -> str | None:
    """The sha256 of the weights file a backbone is filled from (a file, an hf-hub: repository's), else None."""
    if kind == "file":
        return sha256_file(weights)
    if kind == "hub":
        return sha256_file(locate_hub_weights(name))
    return None


def embedding_dim(name: str) -> int:
    """The joint embedding width E of open_clip model ``name``."""
    if hf_hub.is_hub_name(name):
        return int(hf_hub.read_config(name, reachable=False)[1]["model_cfg"]["embed_dim"])
    return int(open_clip.get_model_config(name)["embed_dim"])


def _create_from_tag(name: str, tag: str) -> torch.nn.Module:
    cfg = get_pretrained_cfg(name, tag)
    # OpenAI weights were trained with QuickGELU; build the matching activation instead of warning.
    quick_gelu = bool(cfg.get("quick_gelu", False))
    cached = find_cached_tag_file(cfg)
    if cached is not None:
        # Straight from open_clip's cache: no network round trip (and no retries when offline).
        preprocess = {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}
        return open_clip.create_model(name, pretrained=cached, force_quick_gelu=quick_gelu,
                                      force_preprocess_cfg=preprocess)
    host = _download_host(cfg)
    if not _reachable(host):
        raise SageError(_weights_hint(name, tag, f"not in open_clip's cache and {host} cannot be reached"))
    try:
        return open_clip.create_model(name, pretrained=tag, force_quick_gelu=quick_gelu)
    except Exception as exc:  # open_clip raises RuntimeError, hub/urllib errors, OSError ...
        raise SageError(_weights_hint(name, tag, " ".join(str(exc).split())[:200])) from None


def _weights_hint(name: str, tag: str, reason: str) -> str:
    return (
        f"--pretrained {tag}: could not get the {name} weights ({reason}); run once with network "
        "access so open_clip caches them, or download the checkpoint file and pass "
        "--pretrained /path/to/file"
    )


def find_cached_tag_file(cfg: dict[str, Any]) -> str | None:
    """The local file of a tag's weights if open_clip already downloaded them, else None."""
    from open_clip import pretrained as registry

    hub = cfg.get("hf_hub", "")
    if hub and registry.has_hf_hub():
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(hub)
        filename = filename or registry.HF_WEIGHTS_NAME
        for candidate in (*registry._get_safe_alternatives(filename), filename):
            hit = try_to_load_from_cache(repo, candidate)
            if isinstance(hit, str):
                return hit
    url = cfg.get("url", "")
    if url:
        path = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if path.is_file():
            return str(path)
    return None


def _download_host(cfg: dict[str, Any]) -> str:
    if cfg.get("hf_hub"):
        return _hub_host()
    return urlparse(cfg.get("url", "")).hostname or "the download host"


def _reachable(host: str, timeout: float = 3.0) -> bool:
    """A quick TCP check, so that offline use fails at once instead of after minutes of retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def load_checkpoint_file(model: torch.nn.Module, path: Path) -> None:
    """Load a full CLIP checkpoint into ``model``; a one-line error names the first misfit key."""
    try:
        state = open_clip.factory.load_state_dict(str(path))
    except Exception as exc:  # torch.load / safetensors raise many types for bad files
        reason = " ".join(str(exc).split())[:160]
        raise SageError(f"{path}: not a readable checkpoint ({reason})") from None
    misfit = find_state_dict_misfit(model.state_dict(), state)
    if misfit:
        raise SageError(f"{path}: checkpoint does not fit the model: {misfit}")
    try:
        open_clip.load_checkpoint(model, str(path), strict=True)
    except Exception as exc:  # a conversion inside open_clip still failed
        reason = " ".join(str(exc).split())[:160]
        raise SageError(f"{path}: checkpoint does not fit the model ({reason})") from None


def find_state_dict_misfit(expected: dict[str, torch.Tensor], given: dict[str, Any]) -> str | None:
    """A description of the first key that is missing, unexpected or of another shape, else None."""
    given = {k.removeprefix("module."): v for k, v in given.items()}
    for key, tensor in expected.items():
        if key not in given:
            return f"key {key!r} is missing"
        shape = tuple(getattr(given[key], "shape", ()))
        # open_clip resizes positional embeddings and reshapes scalars itself; only compare the rest.
        if "positional_embedding" in key or key.startswith("logit_"):
            continue
        if shape != tuple(tensor.shape):
            return f"key {key!r} has shape {list(shape)}, the model expects {list(tensor.shape)}"
    for key in given:
        if key not in expected:
            return f"key {key!r} is not in the model"
    return None


def build_transforms(model: torch.nn.Module) -> tuple[Callable, Callable]:
    """open_clip's train and eval image transforms for ``model``'s preprocess config."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    cfg = PreprocessCfg(**model.visual.preprocess_cfg)
    return image_transform_v2(cfg, is_train=True), image_transform_v2(cfg, is_train=False)


def build_backbone_record(name: str, kind: str, weights: str, model: torch.nn.Module) -> dict[str, Any]:
    """What was loaded: name, tag or file (with its sha256), sizes and the eval transform."""
    cfg = model.visual.preprocess_cfg
    size = cfg["size"]
    return {
        "model": name,
        "pretrained": NO_WEIGHTS if kind == "none" else weights,
        "pretrained_kind": kind,
        "pretrained_sha256": compute_weights_sha256(name, kind, weights),
        "embedding_dim": embedding_dim(name),
        "image_size": list(size) if isinstance(size, (tuple, list)) else [size, size],
        "context_length": int(getattr(model, "context_length", 0) or 0),
        "mean": [float(x) for x in cfg["mean"]],
        "std": [float(x) for x in cfg["std"]],
        "interpolation": cfg.get("interpolation", "bicubic"),
        "resize_mode": cfg.get("resize_mode", "shortest"),
    }


def backbone_identity(record: dict[str, Any]) -> dict[str, Any]:
    """The part of a backbone record that decides the weights: name plus tag or file hash.

    Two records with the same identity give the same model, wherever the checkpoint file lies.
    """
    sha = record.get("pretrained_sha256")
    return {"model": record.get("model"), "weights": f"sha256:{sha}" if sha else record.get("pretrained")}


@contextlib.contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """Hide open_clip's root-logger warning that a model is randomly initialised (we asked for it)."""

    def _drop(record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "initialized randomly" not in message and "no CLIP weights found" not in message

    root = logging.getLogger()
    root.addFilter(_drop)
    try:
        yield
    finally:
        root.removeFilter(_drop)
