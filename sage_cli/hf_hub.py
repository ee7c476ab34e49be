"""open_clip models named ``hf-hub:ORG/NAME``: their config and weights in the Hugging Face cache.

A Hub repository of open_clip holds ``open_clip_config.json`` (``model_cfg`` and
``preprocess_cfg``) and its weights (``open_clip_model.safetensors``, else
``open_clip_pytorch_model.bin``). They are read from the cache (``HF_HUB_CACHE``, else
huggingface_hub's default) when there, so an air-gapped machine with a copied cache works and
nothing is fetched; otherwise they are downloaded, only because the user named the model, and a
machine that cannot reach the Hub (or has ``HF_HUB_OFFLINE=1``) gets a one-line error saying so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sage_cli.errors import SageError

PREFIX = "hf-hub:"
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # open_clip's preference order
HF_EXTRA = "pip install 'sage-lt[hf]' (huggingface_hub)"


def is_hub_name(model: str) -> bool:
    return model.strip().startswith(PREFIX)


def check_hub_name(model: str) -> str:
    """``hf-hub:ORG/NAME`` normalised (spaces and trailing ``/`` dropped), or a one-line SageError."""
    repo = model.strip()[len(PREFIX):].strip().strip("/")
    parts = repo.split("/")
    if len(parts) != 2 or not all(p.strip() for p in parts) or any(c.isspace() for c in repo):
        raise SageError(f"--model {model!r}: a Hugging Face model is named hf-hub:ORG/NAME "
                        "(e.g. hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K)")
    return PREFIX + repo


def repo_of(name: str) -> str:
    return name[len(PREFIX):]


def require_hub() -> Any:
    """The huggingface_hub module, or a one-line SageError naming the extra to install."""
    try:
        import huggingface_hub
    except ImportError:
        raise SageError(f"hf-hub: models need huggingface_hub; {HF_EXTRA}") from None
    return huggingface_hub


def cache_dir() -> str:
    """The Hub cache: ``HF_HUB_CACHE`` as set now (huggingface_hub reads it once, at import), else its default."""
    hub = require_hub()
    return os.environ.get("HF_HUB_CACHE") or hub.constants.HF_HUB_CACHE


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")


def locate_file(name: str, filenames: tuple[str, ...], reachable: bool) -> Path:
    """The first of ``filenames`` in the cache of ``name``'s repository; downloaded into it when none is
    there and the Hub is ``reachable``; else a one-line SageError."""
    hub = require_hub()
    repo, where = repo_of(name), cache_dir()
    for filename in filenames:
        hit = hub.try_to_load_from_cache(repo, filename, cache_dir=where)
        if isinstance(hit, str):
            return Path(hit)
    if offline() or not reachable:
        why = "HF_HUB_OFFLINE is set" if offline() else "the Hub cannot be reached"
        raise SageError(f"--model {name}: {filenames[0]} is not in the Hugging Face cache {where} and {why}; "
                        "run once with network access, or point HF_HUB_CACHE at a cache that holds it")
    for filename in filenames:
        try:
            return Path(hub.hf_hub_download(repo, filename, cache_dir=where))
        except hub.errors.EntryNotFoundError:
            continue
        except Exception as exc:  # the Hub's HTTP and repository errors
            raise SageError(f"--model {name}: could not get {filename} ({' '.join(str(exc).split())[:160]})") from None
    raise SageError(f"--model {name}: the repository has none of {', '.join(filenames)}; is it an open_clip model?")


def read_config(name: str, reachable: bool) -> tuple[Path, dict[str, Any]]:
    """The repository's ``open_clip_config.json`` (its path and content; ``model_cfg`` required), or a
    one-line SageError."""
    path = locate_file(name, (CONFIG_FILE,), reachable)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SageError(f"{path}: not a readable open_clip config ({exc})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_cfg"), dict):
        raise SageError(f"{path}: has no model_cfg; is {name} an open_clip model?")
    return path, config
