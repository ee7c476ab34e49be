"""The method registry: each ``--method`` is a name for a complete model + loss config (a preset).

A :class:`Method` holds a :class:`~sage_cli.schema.ModelConfig` (the PEFT module with its
guidance, the head) and a :class:`~sage_cli.schema.LossConfig`, every field set. :func:`resolve`
is the one place where a method name becomes a :class:`~sage_cli.schema.TrainConfig`: the
method's parts, with the options given (flat keys, as ``sage train`` and the presets name them)
put over them, once, at the edge. ``sage train --method``'s choices, ``sage demo``, the presets'
test and docs/methods.md read :data:`METHODS`; the model and the losses never see a name.

Plain data (no torch), so that the CLI can read it before anything heavy loads. Adding a method
is one entry here; a PEFT module or a loss is one class in its own registry (docs/methods.md).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sage_cli.config import choice_message, coerce_preset, coerce_value, load_yaml_mapping, option_label
from sage_cli.errors import SageError
from sage_cli.schema import (
    COMPENSATED_LOSSES,
    GUIDED_PEFT,
    DataConfig,
    GuidanceConfig,
    HeadConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    PeftConfig,
    RunConfig,
    TrainConfig,
    build_config,
    flat_fields,
)


# LIFT's head: cosine, s = 25, on the pre-projection class token, initialised from the text
# (models/classifiers.py CosineClassifier, trainer.py init_head_text_feat). Every trained method has it.
LIFT_HEAD = HeadConfig(feature="pre-proj")


@dataclass(frozen=True)
class Method:
    """A named, complete model + loss config; the defaults are LIFT's (cosine head from text on the
    pre-projection feature, LA)."""

    name: str
    summary: str
    model: ModelConfig = dataclasses.field(default_factory=lambda: ModelConfig(head=LIFT_HEAD))
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    trainable: bool = True  # offered by `sage train` (zeroshot is a baseline, not a run)
    demo: bool = False  # trained by `sage demo`


def peft(module: str, guidance: GuidanceConfig | None = None) -> ModelConfig:
    """The model part of a method that puts PEFT ``module`` into the tower (LIFT's head)."""
    return ModelConfig(peft=PeftConfig(module, guidance=guidance), head=LIFT_HEAD)


SEMANTIC = LossConfig(compensation="semantic")

_METHODS = (
    Method("linear", "cosine head only (a linear probe of the frozen features)", demo=True),
    Method("lift", "LIFT: AdaptFormer adapters parallel to each block's MLP", peft("adaptformer"), demo=True),
    Method("sage", "SG-Adapter: AdaptFormer adapters whose hidden state attends to the class texts, "
           "with the semantic compensation factor", peft("sg-adapter", GuidanceConfig()), SEMANTIC, demo=True),
    Method("lora", "LoRA on the attention's query and value projections", peft("lora")),
    Method("lora-mlp", "LoRA on q, v and both MLP projections", peft("lora-mlp")),
    Method("vpt-shallow", "visual prompt tuning: prompts entering at the first tuned block", peft("vpt-shallow")),
    Method("vpt-deep", "visual prompt tuning: fresh prompts at every tuned block", peft("vpt-deep")),
    Method("adapter", "Houlsby bottleneck adapter after each block's MLP", peft("adapter")),
    Method("ssf", "SSF: scale and shift after each block's norms, attention and MLP projections", peft("ssf")),
    Method("bitfit", "BitFit: every bias of the tuned blocks", peft("bitfit")),
    Method("ln-tuning", "LayerNorm tuning: the tuned blocks' LayerNorm weights and biases", peft("ln-tuning")),
    Method("full-ft", "full fine-tuning of the tuned blocks", peft("full-ft")),
    # Sage's named variants (issue 10): each changes one of its two pieces; docs/method.md#named-variants.
    Method("sage-topk", "SG-Adapter whose guidance attends only to each image's top-5 classes of the frozen "
           "zero-shot prediction, with the semantic compensation factor",
           peft("sg-adapter", GuidanceConfig(topk=5, topk_or_all=True)), SEMANTIC),
    Method("sage-gate", "SG-Adapter whose guidance attention is biased by each image's frozen zero-shot "
           "posterior over the class tokens, with the semantic compensation factor",
           peft("sg-adapter", GuidanceConfig(gate=25.0)), SEMANTIC),
    Method("sage-zs", "SG-Adapter with the zero-shot compensation factor: the frozen zero-shot classifier's "
           "own label bias on the training images, corrected in the loss",
           peft("sg-adapter", GuidanceConfig()), LossConfig(compensation="zero-shot")),
    Method("zeroshot", "CLIP zero-shot: the head is the class text embeddings, frozen, in CLIP's joint space",
           ModelConfig(head=HeadConfig(train=False)), trainable=False),
)

METHODS: dict[str, Method] = {method.name: method for method in _METHODS}
TRAIN_METHODS: tuple[str, ...] = tuple(name for name, method in METHODS.items() if method.trainable)
DEMO_METHODS: tuple[str, ...] = tuple(name for name, method in METHODS.items() if method.demo)
MethodName = Literal[TRAIN_METHODS]  # type: ignore[valid-type]

# The guidance options refused (not ignored) without the guidance, and what they do to it.
GUIDANCE_VERBS = {"guidance_topk": "routes", "guidance_gate": "gates"}


def get_method(name: str, choices: tuple[str, ...] | None = None) -> Method:
    """The method ``name``; a SageError naming ``--method`` and the valid names otherwise."""
    valid = choices if choices is not None else tuple(METHODS)
    if name not in valid:
        raise SageError(choice_message(option_label('method'), name, valid))
    return METHODS[name]


def resolve(method: str, overrides: Mapping[str, Any] | None = None, **options: Any) -> TrainConfig:
    """The complete :class:`TrainConfig` of ``method`` with ``overrides`` (flat keys) put over it.

    Keys may use dashes or underscores; an unknown key, a value of the wrong type or out of bounds
    is a one-line SageError naming it. ``prepared``, ``text_cache`` and ``out`` are required. A
    loss outside the logit-adjusted family given without a compensation takes none (the method's
    compensation belongs to its loss). Options of a part the method does not have (``bottleneck``
    for linear) are ignored, except the guidance's routing and gate, which are refused.
    """
    spec = get_method(method)
    given = {str(k).replace("-", "_"): v for k, v in {**(overrides or {}), **options}.items()}
    leaves = flat_fields()
    unknown = sorted(k for k in given if k not in leaves and k != "guidance")
    if unknown:
        raise SageError(f"unknown option {option_label(unknown[0])}")
    tree = {"data": {}, "model": _as_tree(spec.model), "loss": _as_tree(spec.loss), "optim": {}, "run": {}}
    _switch_guidance(tree["model"], given, method)
    if "loss" in given and "compensation" not in given and given["loss"] not in COMPENSATED_LOSSES:
        given["compensation"] = "none"
    for key, value in given.items():
        if key != "guidance":
            _put(tree, leaves[key], _coerce(leaves[key], value), method)
    missing = [k for k in ("prepared", "text_cache", "out") if k not in given]
    if missing:
        raise SageError(f"missing option {option_label(missing[0])}")
    return TrainConfig(
        data=DataConfig(**tree["data"]), model=build_config(ModelConfig, tree["model"]), loss=LossConfig(**tree["loss"]),
        optim=OptimConfig(**tree["optim"]), run=RunConfig(**tree["run"]), method=method,
    )


def _as_tree(config: Any) -> dict[str, Any]:
    """A config as nested dicts of its own values (no copies of leaves)."""
    return {f.name: _as_tree(v) if dataclasses.is_dataclass(v := getattr(config, f.name)) else v
            for f in dataclasses.fields(config)}


def _switch_guidance(model: dict[str, Any], given: dict[str, Any], method: str) -> None:
    """``guidance`` given: the guidance part added (with its defaults) or removed."""
    if "guidance" not in given:
        return
    peft_tree = model.get("peft")
    if peft_tree is None or peft_tree["module"] not in GUIDED_PEFT:
        raise SageError(f"{option_label('guidance')} applies to the methods with text guidance "
                        f"({', '.join(guided_methods())}); got {option_label('method')} {method}")
    if not given["guidance"]:
        peft_tree["guidance"] = None
    elif peft_tree.get("guidance") is None:
        peft_tree["guidance"] = _as_tree(GuidanceConfig())


def _put(tree: dict[str, Any], leaf: Any, value: Any, method: str) -> None:
    """Set ``leaf`` in ``tree``; a part the method lacks ignores it (refuses a routing or gate)."""
    node = tree
    for name in leaf.path[:-1]:
        if node.get(name) is None:
            _refuse_without_guidance(leaf.key, value, method)
            return
        node = node[name]
    if leaf.key == "guidance_topk" and value != node["topk"]:
        node["topk_or_all"] = False  # a k other than the method's is checked against the guidance tokens
    node[leaf.path[-1]] = value


def _refuse_without_guidance(key: str, value: Any, method: str) -> None:
    """The guidance's routing and gate change what a guided method trains: never dropped silently."""
    if key not in GUIDANCE_VERBS:
        return
    if method not in guided_methods():
        raise SageError(f"{option_label(key)} applies to the methods with text guidance; "
                        f"got {option_label('method')} {method}")
    if value:
        raise SageError(f"{option_label(key)} {GUIDANCE_VERBS[key]} the text guidance: it needs {option_label('guidance')}")


def _coerce(leaf: Any, value: Any) -> Any:
    """``value`` as the leaf's type (a flag's text, a preset's YAML value); a SageError naming it otherwise."""
    meta = leaf.option
    if meta.parse is not None and (value is None or isinstance(value, (str, list, tuple))):
        return meta.parse(value)
    if meta.choices is not None and value is not None and value not in meta.choices:
        raise SageError(choice_message(option_label(leaf.key), value, meta.choices))
    try:
        return coerce_value(value, leaf.annotation)
    except ValueError as exc:
        raise SageError(f"{option_label(leaf.key)}: {exc}; got {value!r}") from None


def guided_methods() -> tuple[str, ...]:
    return tuple(n for n, m in METHODS.items() if m.model.peft is not None and m.model.peft.module in GUIDED_PEFT)


PRESETS_DIR = Path(__file__).resolve().parent / "presets"
NOT_IN_PRESETS = ("out", "force", "resume")  # where a run goes and how this invocation behaves


def shipped_presets() -> tuple[str, ...]:
    """The names of the presets shipped in sage_cli/presets (``imagenet-lt``, ...)."""
    return tuple(sorted(p.stem.replace("_", "-") for p in PRESETS_DIR.glob("*.yaml")))


def find_preset(name_or_path: str | os.PathLike[str]) -> Path:
    """A preset file: ``name_or_path`` itself, else the shipped preset of that name (``imagenet-lt``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = PRESETS_DIR / f"{str(name_or_path).replace('-', '_')}.yaml"
    if path.suffix == "" and shipped.is_file():
        return shipped
    raise SageError(f"{path}: config file not found (shipped presets: {', '.join(shipped_presets())})")


def load_preset(name_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """A preset's options by flat key, each checked against (and coerced to) its option's type.

    An unknown key, or one a preset may not set (``out``), is a one-line SageError naming the file
    and key; a value of the wrong type names its line too.
    """
    path = find_preset(name_or_path)
    preset = load_yaml_mapping(path)
    leaves = flat_fields()
    for key in preset:
        name = str(key).replace("-", "_")
        if name in NOT_IN_PRESETS or (name not in leaves and name not in ("method", "guidance")):
            raise SageError(f"{path}: unknown option {key!r}")
    types = {key: preset_type(leaf) for key, leaf in leaves.items()} | {"method": MethodName, "guidance": bool}
    return {str(k).replace("-", "_"): v for k, v in coerce_preset(preset, types, path).items()}


def preset_type(leaf: Any) -> Any:
    """The type a preset's value of ``leaf`` is coerced to (text for a parsed field, such as blocks)."""
    return str | None if leaf.option.parse is not None else leaf.annotation


def model_config(method: str = "sage", **options: Any) -> ModelConfig:
    """The :class:`ModelConfig` of ``method`` with ``options`` (flat keys: ``bottleneck=4``,
    ``guidance_topk=5``) put over it: what :func:`~sage_cli.model.build_classifier` takes."""
    required = {"prepared": ".", "text_cache": ".", "out": "."}
    foreign = sorted(k for k in options if k.replace("-", "_") in required)
    if foreign:
        raise SageError(f"unknown option {option_label(foreign[0])}")
    return resolve(method, {**required, **options}).model
