"""The train stage's configuration: frozen dataclasses grouped data / model / loss / optim / run.

Each group validates itself in ``__post_init__`` with a message that names the flag at fault.
:func:`build_train_config` turns the flat option mapping of ``sage train`` (or of a preset YAML,
merged by :func:`sage_cli.config.merge_with_preset`) into a :class:`TrainConfig`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sage_cli.config import check_batch_size, check_seed
from sage_cli.errors import SageError
from sage_cli.losses import LossConfig
from sage_cli.methods import TRAIN_METHODS, get_method
from sage_cli.model import AdapterConfig
from sage_cli.model.config import check_block_index

DEVICES = ("auto", "cpu", "cuda")
SamplerName = Literal["uniform", "class-aware"]


def _require(checks: list[tuple[bool, str]]) -> None:
    for ok, message in checks:
        if not ok:
            raise SageError(message)


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how it is batched.

    ``batch_size`` images make one optimizer step; they go through the model in micro-batches of
    ``micro_batch_size`` (gradient accumulation; None = the whole batch at once); both are global
    (under torchrun each rank takes 1 / world size of every micro-batch). ``augment`` False trains
    on the eval transform (deterministic; used by tests). ``eval_split`` None means val when the
    prepared dataset has one, else test. ``skip_bad`` skips (and records) unreadable images
    instead of stopping on the first. ``image_cache`` reads decoded pixels from a ``sage
    cache-images`` directory (the fast input path) instead of decoding every JPEG;
    ``feature_cache`` trains a head-only method on the frozen tower's cached output.
    """

    prepared: Path
    text_cache: Path
    image_cache: Path | None = None
    feature_cache: Path | None = None
    batch_size: int = 128
    micro_batch_size: int | None = None
    num_workers: int = 4
    augment: bool = True
    eval_split: str | None = None
    skip_bad: bool = False
    sampler: SamplerName = "uniform"

    def __post_init__(self) -> None:
        object.__setattr__(self, "prepared", Path(self.prepared))
        object.__setattr__(self, "text_cache", Path(self.text_cache))
        for key in ("image_cache", "feature_cache"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, Path(getattr(self, key)))
        micro = self.micro_batch_size
        check_batch_size("--batch-size", self.batch_size)
        _require([
            (micro is None or micro >= 1, f"--micro-batch-size must be >= 1; got {micro}"),
            (micro is None or micro < 1 or self.batch_size % micro == 0,  # 0: refused above, no ZeroDivisionError
             f"--micro-batch-size {micro} must divide --batch-size {self.batch_size}"),
            (self.num_workers >= 0, f"--num-workers must be >= 0; got {self.num_workers}"),
            (self.sampler in ("uniform", "class-aware"),
             f"--sampler must be uniform or class-aware; got {self.sampler!r}"),
            (self.eval_split in (None, "val", "test", "train"),
             f"--eval-split must be val, test or train; got {self.eval_split!r}"),
        ])

    @property
    def micro_batch(self) -> int:
        return self.micro_batch_size or self.batch_size

    @property
    def accumulation_steps(self) -> int:
        return self.batch_size // self.micro_batch


@dataclass(frozen=True)
class ModelConfig:
    """The backbone (None: the text cache's model / weights) and the classifier built on it."""

    model: str | None = None
    pretrained: str | None = None
    adapter: AdapterConfig = field(default_factory=AdapterConfig)

    def __post_init__(self) -> None:
        get_method(self.adapter.method, choices=TRAIN_METHODS)


@dataclass(frozen=True)
class OptimConfig:
    """SGD with a per-step cosine schedule after a linear warm-up.

    ``warmup_steps`` wins over ``warmup_epochs`` when given.
    """

    epochs: int = 10
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    warmup_steps: int | None = None

    def __post_init__(self) -> None:
        _require([
            (self.epochs >= 1, f"--epochs must be >= 1; got {self.epochs}"),
            (self.lr > 0, f"--lr must be > 0; got {self.lr}"),
            (0 <= self.momentum < 1, f"--momentum must be in [0, 1); got {self.momentum}"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0; got {self.weight_decay}"),
            (self.warmup_epochs >= 0, f"--warmup-epochs must be >= 0; got {self.warmup_epochs}"),
            (self.warmup_steps is None or self.warmup_steps >= 0,
             f"--warmup-steps must be >= 0; got {self.warmup_steps}"),
        ])


@dataclass(frozen=True)
class RunConfig:
    """Where outputs go and how the run behaves: seed, limits, logging and checkpoint cadence.

    ``eval_every`` is in epochs (0: evaluate once, at the end); ``checkpoint_every`` in optimizer
    steps (0: only at the end of each epoch); ``log_every`` in steps (train metrics averaged over
    the steps since the last log line).
    """

    out: Path
    seed: int = 0
    max_steps: int | None = None
    eval_every: int = 1
    checkpoint_every: int = 0
    log_every: int = 10
    device: str = "auto"
    force: bool = False
    resume: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        device = str(self.device)
        check_seed("--seed", self.seed)
        _require([
            (self.max_steps is None or self.max_steps >= 1, f"--max-steps must be >= 1; got {self.max_steps}"),
            (self.eval_every >= 0, f"--eval-every must be >= 0; got {self.eval_every}"),
            (self.checkpoint_every >= 0, f"--checkpoint-every must be >= 0; got {self.checkpoint_every}"),
            (self.log_every >= 1, f"--log-every must be >= 1; got {self.log_every}"),
            (device in DEVICES or device.startswith("cuda:"),
             f"--device must be auto, cpu or cuda[:N]; got {device!r}"),
            (not (self.force and self.resume), "--force and --resume exclude each other"),
        ])


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``sage train`` needs; see docs/training.md for each option.

    The loss options left None (loss, compensation) are resolved here from the method's spec
    (:mod:`sage_cli.methods`), so the CLI and the Python API build the same run.
    """

    data: DataConfig
    model: ModelConfig
    loss: LossConfig
    optim: OptimConfig
    run: RunConfig

    def __post_init__(self) -> None:
        object.__setattr__(self, "loss", self.loss.resolve(self.method))

    @property
    def method(self) -> str:
        return self.model.adapter.method

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every group (paths as strings, tuples as lists)."""
        return _jsonable(dataclasses.asdict(self))

    def result_dict(self) -> dict[str, Any]:
        """The options that can change the trained weights (fingerprinted into train.json)."""
        config = self.to_dict()
        for key in ("out", "force", "resume", "eval_every", "checkpoint_every", "log_every"):
            config["run"].pop(key)
        config["data"].pop("num_workers")
        config["data"].pop("skip_bad")  # a run that meets no bad image ends the same either way
        config["data"].pop("feature_cache")  # the same weights as from the images (within float rounding)
        for key in ("prepared", "text_cache", "image_cache"):  # identified by their content hashes instead
            config["data"].pop(key)
        return config


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def parse_blocks(text: str | None) -> tuple[int, ...] | None:
    """``"0-5"`` -> (0, 1, 2, 3, 4, 5); ``"0,2,4"`` -> (0, 2, 4); None / "" / "all" -> None (every block)."""
    if text is None or str(text).strip().lower() in ("", "all"):
        return None
    if isinstance(text, (list, tuple)):
        return tuple(int(b) for b in text)
    blocks: list[int] = []
    try:
        for part in str(text).split(","):
            first, _, last = part.strip().partition("-")
            start, stop = int(first), int(last or first)
            if stop < start:
                raise ValueError
            check_block_index(stop)  # before the range is expanded: 0-99999999 would fill the memory
            blocks.extend(range(start, stop + 1))
    except ValueError:
        raise SageError(f"--blocks must look like 0-5 or 0,2,4; got {text!r}") from None
    return tuple(blocks)


def build_train_config(options: Mapping[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from ``sage train``'s flat options (flag names with underscores).

    Missing options take the dataclass defaults; ``prepared``, ``text_cache``, ``out`` and
    ``method`` are required.
    """
    o = dict(options)
    missing = [f"--{k.replace('_', '-')}" for k in ("prepared", "text_cache", "out", "method") if o.get(k) is None]
    if missing:
        raise SageError(f"missing option {missing[0]}")

    def pick(*names: str) -> dict[str, Any]:
        return {n: o[n] for n in names if o.get(n) is not None}

    adapter = AdapterConfig(
        method=o["method"], blocks=parse_blocks(o.get("blocks", o.get("adapter_blocks"))),
        guidance=o.get("guidance"),
        **pick("bottleneck", "guidance_tokens", "guidance_topk", "guidance_gate", "activation", "attn_heads", "logit_scale", "head", "head_init",
                "head_init_shots", "prompt_tokens"),
    )
    return TrainConfig(
        data=DataConfig(**pick("prepared", "text_cache", "image_cache", "feature_cache", "batch_size", "micro_batch_size",
                               "num_workers", "augment", "eval_split", "skip_bad", "sampler")),
        model=ModelConfig(model=o.get("model"), pretrained=o.get("pretrained"), adapter=adapter),
        loss=LossConfig(**pick("loss", "compensation", "tau", "lam", "kappa", "delta_max", "ema", "focal_gamma",
                               "ldam_margin", "cb_beta", "lade_weight", "lade_lambda", "text_align")),
        optim=OptimConfig(**pick("epochs", "lr", "momentum", "weight_decay", "warmup_epochs", "warmup_steps")),
        run=RunConfig(**pick("out", "seed", "max_steps", "eval_every", "checkpoint_every", "log_every",
                             "device", "force", "resume")),
    )
