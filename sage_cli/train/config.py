"""The train stage's configuration at its edges: ``sage train``'s flat options in, a run's record out.

The config itself is :class:`~sage_cli.schema.TrainConfig` (one schema, :mod:`sage_cli.schema`);
a method name becomes one in :func:`sage_cli.methods.resolve`. Here: :func:`build_train_config`
(the flat options of the command line, errors naming flags), :func:`identity_of` (what
fingerprints a run) and :func:`read_config` (a run's config back from its train.json, of this
schema or of the one before).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sage_cli import artifacts
from sage_cli.config import cli_names
from sage_cli.errors import SageError
from sage_cli.methods import TRAIN_METHODS, get_method, resolve
from sage_cli.schema import (
    GUIDED_PEFT,
    NOT_IN_RESULT,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    build_config,
    flat_fields,
    jsonable,
    parse_blocks,
)

__all__ = ["DataConfig", "ModelConfig", "OptimConfig", "RunConfig", "TrainConfig",
           "build_train_config", "identity_of", "parse_blocks", "read_config"]


def build_train_config(options: Mapping[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from ``sage train``'s flat options (flag names with underscores).

    None means "not given" (the method's value stands); ``method``, ``prepared``, ``text_cache``
    and ``out`` are required. Errors name the flags.
    """
    given = {("blocks" if k == "adapter_blocks" else k): v for k, v in options.items() if v is not None}
    with cli_names():
        if "method" not in given:
            raise SageError("missing option --method")
        method = given.pop("method")
        get_method(method, choices=TRAIN_METHODS)
        return resolve(method, given)


def identity_of(config: TrainConfig) -> dict[str, Any]:
    """The options that can change the trained weights: what fingerprints a run (into train.json).

    The layout is train.json schema 1's (data / model.adapter / loss / optim / run), kept so that
    a run written before the one schema keeps its fingerprint: it still skips, resumes and reports.
    An option added since enters under ``options`` where it leaves its default.
    """
    model, peft, guidance, head = config.model, config.model.peft, config.model.guidance, config.model.head
    adapter = {
        "method": config.method,
        "bottleneck": peft.bottleneck if peft else None,
        "blocks": list(peft.blocks) if peft and peft.blocks is not None else None,
        "guidance": (guidance is not None) if peft and peft.module in GUIDED_PEFT else None,
        "guidance_tokens": guidance.tokens if guidance else None,
        "guidance_topk": (guidance.topk or None) if guidance else None,
        "guidance_gate": (guidance.gate or None) if guidance else None,
        "activation": peft.activation if peft else "relu",
        "attn_heads": guidance.heads if guidance else 1,
        "logit_scale": head.scale, "head": head.kind, "head_init": head.init, "head_init_shots": head.init_shots,
        "prompt_tokens": peft.prompt_tokens if peft else 10,
    }
    full = config.to_dict()
    data = {k: full["data"][k] for k in SCHEMA_1_DATA}
    identity = {"data": data, "model": {"model": model.model, "pretrained": model.pretrained, "adapter": adapter},
                "loss": {k: full["loss"][k] for k in SCHEMA_1_LOSS},
                "optim": {k: full["optim"][k] for k in SCHEMA_1_OPTIM},
                "run": {k: full["run"][k] for k in SCHEMA_1_RUN}}
    added = added_options(config)
    return {**identity, "options": added} if added else identity


# What schema 1's layout holds (beside model.adapter), and the options its method implied.
SCHEMA_1_DATA = ("batch_size", "micro_batch_size", "augment", "eval_split", "sampler")
SCHEMA_1_LOSS = ("loss", "tau", "compensation", "lam", "kappa", "delta_max", "ema", "focal_gamma", "ldam_margin",
                 "cb_beta", "lade_weight", "lade_lambda", "text_align")
SCHEMA_1_RUN = ("seed", "max_steps", "device")
SCHEMA_1_OPTIM = ("epochs", "lr", "momentum", "weight_decay", "warmup_epochs", "warmup_steps")
SCHEMA_1_ADAPTER = ("model", "pretrained", "module", "blocks", "bottleneck", "activation", "prompt_tokens",
                    "guidance", "guidance_tokens", "guidance_topk", "guidance_gate", "attn_heads", "topk_or_all",
                    "head", "head_init", "head_init_shots", "logit_scale", "train_head")


def added_options(config: TrainConfig) -> dict[str, Any]:
    """Options added after schema 1 that can change the weights, where they leave their default."""
    known = {*SCHEMA_1_DATA, *SCHEMA_1_LOSS, *SCHEMA_1_RUN, *SCHEMA_1_OPTIM, *SCHEMA_1_ADAPTER, *NOT_IN_RESULT}
    leaves = flat_fields()
    return {key: value for key, value in sorted(jsonable(config.flat()).items())
            if key in leaves and key not in known and value != jsonable(leaves[key].field.default)}


def read_config(record: Mapping[str, Any], where: str | Path = "train.json") -> TrainConfig:
    """The :class:`TrainConfig` a run was trained with, from its train.json (schema 2, or 1: before the one schema)."""
    try:
        config = dict(record["config"])
        version = int(record.get("schema_version", 1))
    except (KeyError, TypeError, ValueError):
        raise SageError(f"{where}: has no train config; was it written by sage train?") from None
    try:
        if version == 1:
            return _read_schema_1(config)
        if version == artifacts.SCHEMA_VERSION:
            return build_config(TrainConfig, config)
    except SageError as exc:
        raise SageError(f"{where}: {exc}") from None
    except (KeyError, TypeError) as exc:
        raise SageError(f"{where}: its config is not one sage wrote ({exc})") from None
    raise SageError(f"{where}: schema {version} is newer than this sage ({artifacts.SCHEMA_VERSION}); upgrade sage")


def _read_schema_1(config: dict[str, Any]) -> TrainConfig:
    """Schema 1: flat-ish groups with ``model.adapter`` holding the method and the adapter's options."""
    adapter = dict(config["model"]["adapter"])
    method = adapter.pop("method")
    flat: dict[str, Any] = {"model": config["model"].get("model"), "pretrained": config["model"].get("pretrained")}
    for group in ("data", "loss", "optim", "run"):
        flat.update(config.get(group, {}))
    if adapter.get("guidance") is None:  # the method has no guidance: its options meant nothing
        for key in ("guidance", "guidance_topk", "guidance_gate"):
            adapter.pop(key, None)
    flat.update(adapter)
    flat.update({k: v for k, v in BEFORE_LIFT_EXACT.items() if k not in flat})
    return resolve(method, {k: v for k, v in flat.items() if v is not None or k in _NULLABLE})


# The values of options runs were trained with before they existed, where a method now sets another
# (schema 2 records read the fields' defaults, which are these; schema 1 records resolve the method).
BEFORE_LIFT_EXACT = {"head_feature": "projected"}

_NULLABLE = ("model", "pretrained", "bottleneck", "blocks", "guidance_tokens", "micro_batch_size", "eval_split",
             "image_cache", "feature_cache", "max_steps", "warmup_steps")
