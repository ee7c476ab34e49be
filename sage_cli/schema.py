"""The train stage's one option schema: plain frozen dataclasses, one per part of a run.

:class:`TrainConfig` holds :class:`DataConfig`, :class:`ModelConfig` (the backbone, a
:class:`PeftConfig` whose :class:`GuidanceConfig` is present iff the adapter is guided, and a
:class:`HeadConfig`), :class:`LossConfig`, :class:`OptimConfig` and :class:`RunConfig`. Every
field is a complete value: none means "the method's default" (a method is a named, complete
config: :mod:`sage_cli.methods`). Each field declared with :func:`~sage_cli.config.option`
carries its help, panel, choices and bounds: ``sage train``'s options, the preset loader and the
flat <-> nested mapping (:func:`flat_fields`) all read them, so an option is written once, here.

This module is plain data (no torch), so the CLI reads it before anything heavy loads; the model
and the losses read their parts from it and never see a method name or a flag.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sage_cli.config import MAX_BATCH_SIZE, MAX_SEED, check_options, option, option_label
from sage_cli.errors import SageError

# The names of every registry, as types (tests/train/test_methods.py checks them against the registries).
LossName = Literal["ce", "la", "bs", "focal", "ldam", "cb", "grw", "lade"]  # sage_cli.losses.LOSSES
CompensationName = Literal["semantic", "count", "zero-shot", "none"]  # sage_cli.losses.ESTIMATORS
ReweightNormName = Literal["weights", "samples"]  # how cb / grw normalise a batch (sage_cli.losses.classification)
HeadName = Literal["cosine", "linear", "l2"]  # sage_cli.model.head.HEADS
HeadInitName = Literal["text", "class-mean", "k-shot", "linear-probe", "random"]  # sage_cli.model.head_init
HeadFeatureName = Literal["pre-proj", "projected"]  # sage_cli.model.features
EvalResizeName = Literal["lift", "clip"]  # sage_cli.train.transforms.build_eval_transform
InterpolationName = Literal["model", "bilinear", "bicubic"]  # model: the backbone's own (bicubic for CLIP)
LrScheduleName = Literal["cosine-step", "cosine-epoch"]  # sage_cli.train.optim.compute_lr_factor
ActivationName = Literal["relu", "gelu"]
AdapterInitName = Literal["kaiming-uniform", "kaiming-normal"]
PrecisionName = Literal["auto", "bf16", "fp16", "fp32"]  # sage_cli.precision
SamplerName = Literal["uniform", "class-aware"]
EvalSplitName = Literal["val", "test", "train"]
OptimizerName = Literal["sgd", "adamw"]
KeepName = Literal["last", "best"]
SelectMetricName = Literal["top1", "few", "mean-groups"]  # sage_cli.train.selection.compute_selection_value

# Block indices stop below this, whatever the tower (ViT-bigG has 48 blocks): --blocks 0-99999999
# is refused before its range is expanded; the tower's own depth is checked when it is built.
MAX_BLOCKS = 1024

GUIDED_PEFT = ("sg-adapter",)  # the PEFT modules that take a GuidanceConfig
COMPENSATED_LOSSES = ("la", "bs")  # the logit-adjusted family: the losses a compensation composes with
REWEIGHTED_LOSSES = ("cb", "grw")  # the class-reweighted CEs: the losses --reweight-norm applies to
DEVICES = ("auto", "cpu", "cuda")

METHOD, LOSS, ADAPTER, OPTIM, DATA, RUN = "Method", "Loss", "Adapter", "Optimiser", "Data", "Run"


def names(alias: object) -> tuple[str, ...]:
    """The names a ``Literal`` alias allows."""
    return tuple(typing.get_args(alias))


def parse_blocks(text: Any) -> tuple[int, ...] | None:
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
        raise SageError(f"{option_label('blocks')} must look like 0-5 or 0,2,4; got {text!r}") from None
    return tuple(blocks)


def check_block_index(index: int) -> None:
    """Refuse a block index no image tower has (at or above :data:`MAX_BLOCKS`)."""
    if index >= MAX_BLOCKS:
        raise SageError(f"{option_label('blocks')}: block {index} is beyond any image tower "
                        f"(sage takes indices below {MAX_BLOCKS})")


def _require(checks: list[tuple[bool, str]]) -> None:
    for ok, message in checks:
        if not ok:
            raise SageError(message)


@dataclass(frozen=True)
class GuidanceConfig:
    """The SG-Adapter's text guidance: its hidden state attends to M class-text tokens.

    ``tokens`` None: one token per class (M = C), fewer: k-means centroids. ``topk`` k > 0 routes
    each image's guidance to its k tokens of the frozen zero-shot prediction (0: every token);
    ``topk_or_all`` lets a k above M mean every token (a named variant's k on a small dataset)
    instead of being refused. ``gate`` s0 > 0 adds log p0(m|x), the frozen zero-shot posterior at
    scale s0, to the attention's logits (0: no gate).
    """

    tokens: int | None = option(None, help="Guidance tokens M (default: one per class).", panel=ADAPTER,
                                key="guidance_tokens", ge=1)
    topk: int = option(0, help="Route each image's guidance to its top-k tokens of the frozen zero-shot prediction "
                       "(0: every token).", panel=ADAPTER, key="guidance_topk", ge=0)
    gate: float = option(0.0, help="Bias the guidance attention by each image's frozen zero-shot log-posterior at "
                         "this scale (0: off).", panel=ADAPTER, key="guidance_gate", ge=0)
    heads: int = option(1, help="Heads of the guidance attention (must divide --bottleneck).", panel=ADAPTER,
                        key="attn_heads", ge=1)
    topk_or_all: bool = option(False, help="A top-k above the guidance tokens routes to all of them.", panel=ADAPTER,
                               cli=False)

    def __post_init__(self) -> None:
        check_options(self)


@dataclass(frozen=True)
class PeftConfig:
    """The PEFT module put into the image tower and its shape; ``guidance`` present iff it is guided.

    ``blocks`` None tunes every vision block; ``bottleneck`` None applies LIFT's rule
    (:func:`~sage_cli.model.compute_default_bottleneck`).
    """

    module: str = option(help="PEFT module (a key of sage_cli.model.peft.PEFT_MODULES, checked where it is built).",
                         panel=ADAPTER, cli=False)
    blocks: tuple[int, ...] | None = option(None, help="Vision blocks the PEFT module tunes, e.g. 0-5 or 0,2,4 "
                                            "(default: all).", panel=ADAPTER, parse=parse_blocks,
                                            aliases=("--adapter-blocks",))
    bottleneck: int | None = option(None, help="Adapter width / LoRA rank (default: LIFT's rule).", panel=ADAPTER, ge=1)
    activation: ActivationName = option("relu", help="Adapter activation (sage, lift).", panel=ADAPTER,
                                        choices=names(ActivationName))
    adapter_init: AdapterInitName = option("kaiming-uniform", help="Adapter down-projection draw (sage, lift), a = "
                                           "sqrt(5): kaiming-uniform (nn.Linear's) or kaiming-normal (LIFT's; the "
                                           "same variance).", panel=ADAPTER, choices=names(AdapterInitName))
    prompt_tokens: int = option(10, help="Prompts per prompted block (VPT).", panel=ADAPTER, ge=1)
    guidance: GuidanceConfig | None = None

    def __post_init__(self) -> None:
        if self.blocks is not None:
            object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
            if not self.blocks or min(self.blocks) < 0 or len(set(self.blocks)) != len(self.blocks):
                raise SageError(f"{option_label('blocks')} must list distinct block indices >= 0; got {list(self.blocks)}")
            check_block_index(max(self.blocks))
        check_options(self)
        if self.guidance is not None and self.module not in GUIDED_PEFT:
            raise SageError(f"{option_label('guidance')} applies to the guided PEFT modules ({', '.join(GUIDED_PEFT)}); "
                            f"got {self.module}")


@dataclass(frozen=True)
class HeadConfig:
    """The classifier head: its kind, the feature it reads, its initial weights, its scale s and whether it trains.

    ``feature`` "pre-proj" is LIFT's: the class token after ``ln_post``, before the tower's ``proj``
    ([B, W], 768-d on ViT-B/16), the text init mapped in as normalize(normalize(t) @ proj.T);
    "projected" is CLIP's joint space ([B, E]). A tower without a ViT ``proj`` (a ResNet, whose
    attention-pool output LIFT classifies) reads its output either way. The field's default is the value runs had before
    the option existed (a train.json without it reads as projected); the methods set pre-proj.
    """

    kind: HeadName = option("cosine", help="Classifier head.", panel=METHOD, key="head", choices=names(HeadName))
    feature: HeadFeatureName = option("projected", help="Feature the head reads: pre-proj (LIFT: the CLS token "
                                      "after ln_post, before proj) or projected (CLIP's joint space).",
                                      panel=METHOD, key="head_feature", choices=names(HeadFeatureName))
    init: HeadInitName = option("text", help="Initial head weights.", panel=METHOD, key="head_init",
                                choices=names(HeadInitName))
    init_shots: int = option(10, help="Images per class for --head-init k-shot.", panel=METHOD,
                             key="head_init_shots", ge=1)
    scale: float = option(25.0, help="s of the cosine head (and LDAM's margin scale).", panel=METHOD,
                          key="logit_scale", gt=0)
    train: bool = option(True, help="Whether the head trains.", panel=METHOD, key="train_head", cli=False)

    def __post_init__(self) -> None:
        check_options(self)


@dataclass(frozen=True)
class ModelConfig:
    """The backbone (None: the text cache's model / weights) and the classifier built on it (no PEFT: head only)."""

    model: str | None = option(None, help="open_clip model, or hf-hub:ORG/NAME (default: the text cache's).",
                                panel=METHOD, short="-m")
    pretrained: str | None = option(None, help="Tag, checkpoint file or none (default: the text cache's).",
                                    panel=METHOD)
    peft: PeftConfig | None = None
    head: HeadConfig = dataclasses.field(default_factory=HeadConfig)

    @property
    def guidance(self) -> GuidanceConfig | None:
        return self.peft.guidance if self.peft is not None else None


@dataclass(frozen=True)
class LossConfig:
    """The training loss and, for the logit-adjusted family, its compensation factor delta.

    tau scales log(pi); lam, kappa, delta_max shape delta; ema is the running-stats momentum; the
    other fields are their losses' own (docs/methods.md).
    """

    loss: LossName = option("la", help="Training loss.", panel=LOSS, choices=names(LossName))
    tau: float = option(1.0, help="Scale of log(prior) in the logit adjustment.", panel=LOSS, ge=0)
    compensation: CompensationName = option("none", help="Compensation factor delta subtracted from the adjusted "
                                            "logits (--loss la or bs only): semantic (text-anchored class statistics "
                                            "of the image features), count (--lam x log(1 + --kappa / n_y)), zero-shot "
                                            "(the frozen zero-shot classifier's label bias on the training images) or "
                                            "none.", panel=LOSS, choices=names(CompensationName))
    lam: float = option(0.25, help="lambda: scale of the compensation factor.", panel=LOSS, ge=0)  # tuned on Shapes-LT val
    kappa: float = option(16.0, help="Pseudo-count of the text anchor.", panel=LOSS, gt=0)
    delta_max: float = option(5.0, help="Upper clamp of the compensation factor.", panel=LOSS, ge=0)
    ema: float = option(0.9, help="Momentum of the compensation statistics (class means, spread).", panel=LOSS,
                        ge=0, lt=1)
    focal_gamma: float = option(2.0, help="gamma of the focal loss.", panel=LOSS, ge=0)
    ldam_margin: float = option(0.5, help="Largest LDAM margin (on the cosine).", panel=LOSS, gt=0)
    cb_beta: float = option(0.9999, help="beta of the class-balanced loss.", panel=LOSS, ge=0, lt=1)
    grw_exp: float = option(1.0, help="Exponent p of GRW's class weights (n_y / N)^-p.", panel=LOSS, ge=0)
    reweight_norm: ReweightNormName = option("weights", help="Batch normaliser of cb and grw: weights (sum w_y CE / "
                                             "sum w_y, LIFT's) or samples (mean w_y CE, Cui et al.'s).", panel=LOSS,
                                             choices=names(ReweightNormName))
    lade_weight: float = option(0.1, help="Weight of LADE's estimator term.", panel=LOSS, ge=0)
    lade_lambda: float = option(0.1, help="LADE's ReMINE regulariser.", panel=LOSS, ge=0)
    text_align: float = option(0.0, help="beta of the text-alignment term: the adjusted CE of the frozen text "
                               "classifier on the image features (LA family; 0: none).", panel=LOSS, ge=0)
    spread: float = option(0.0, help="lambda_s of the spread margin: rival logits raised by 0.5 lambda_s "
                           "kappa/(n_y+kappa) s^2 (w_j - w_y)' Sigma (w_j - w_y), Sigma the pooled within-class "
                           "covariance of the head's input (LA family, cosine head; 0: none).", panel=LOSS, ge=0)

    def __post_init__(self) -> None:
        check_options(self)
        family = ", ".join(COMPENSATED_LOSSES)
        if self.compensation != "none" and self.loss not in COMPENSATED_LOSSES:
            raise SageError(f"{option_label('compensation')} {self.compensation} composes with the logit-adjusted "
                            f"losses ({family}) only; got {option_label('loss')} {self.loss}")
        if self.text_align > 0 and self.loss not in COMPENSATED_LOSSES:
            raise SageError(f"{option_label('text_align')} composes with the logit-adjusted losses ({family}) only; "
                            f"got {option_label('loss')} {self.loss}")
        if self.spread > 0 and self.loss not in COMPENSATED_LOSSES:
            raise SageError(f"{option_label('spread')} composes with the logit-adjusted losses ({family}) only; "
                            f"got {option_label('loss')} {self.loss}")
        if self.reweight_norm != "weights" and self.loss not in REWEIGHTED_LOSSES:
            raise SageError(f"{option_label('reweight_norm')} {self.reweight_norm} applies to the reweighted losses "
                            f"({', '.join(REWEIGHTED_LOSSES)}) only; got {option_label('loss')} {self.loss}")


@dataclass(frozen=True)
class OptimConfig:
    """SGD (LIFT's, the default) or AdamW with a cosine schedule after a linear warm-up
    (``warmup_steps`` wins over ``warmup_epochs``).

    SGD decays every trainable tensor; AdamW, as open_clip and timm do, none of dimension < 2
    (biases, norm and SSF scales/shifts, the head's scale) nor the prompt tokens
    (:func:`sage_cli.train.optim.split_decay`). ``lr_schedule`` cosine-step decays every optimiser
    step; cosine-epoch holds the lr through each epoch (LIFT's CosineAnnealingLR(T_max=epochs)
    stepped per epoch). Its default is the value of runs written before the option existed; the
    benchmark presets set LIFT's.
    """

    epochs: int = option(10, help="Training epochs.", panel=OPTIM, ge=1)
    lr: float = option(0.01, help="Peak learning rate.", panel=OPTIM, gt=0)
    optimizer: OptimizerName = option("sgd", help="Optimizer: sgd (LIFT's; momentum) or adamw (decoupled weight "
                                      "decay, none on biases, norms and scales).", panel=OPTIM,
                                      choices=names(OptimizerName))
    momentum: float = option(0.9, help="SGD momentum.", panel=OPTIM, ge=0, lt=1)
    weight_decay: float = option(5e-4, help="Weight decay (SGD: L2 on every tensor; AdamW: decoupled, on "
                                 "matrices only).", panel=OPTIM, ge=0)
    beta1: float = option(0.9, help="AdamW's beta1.", panel=OPTIM, ge=0, lt=1)
    beta2: float = option(0.999, help="AdamW's beta2.", panel=OPTIM, ge=0, lt=1)
    eps: float = option(1e-8, help="AdamW's epsilon.", panel=OPTIM, gt=0)
    warmup_epochs: float = option(1.0, help="Linear warm-up length in epochs.", panel=OPTIM, ge=0)
    warmup_steps: int | None = option(None, help="Warm-up length in steps (wins over --warmup-epochs).", panel=OPTIM,
                                      ge=0)
    lr_schedule: LrScheduleName = option("cosine-step", help="Cosine decay per optimiser step, or per epoch "
                                         "(LIFT: CosineAnnealingLR stepped once an epoch).", panel=OPTIM,
                                         choices=names(LrScheduleName))

    def __post_init__(self) -> None:
        check_options(self)


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how it is batched.

    ``batch_size`` images make one optimizer step; they go through the model in micro-batches of
    ``micro_batch_size`` (gradient accumulation; None = the whole batch at once); both are global
    (under torchrun each rank takes 1 / world size of every micro-batch). ``augment`` False trains
    on the eval transform; ``eval_resize`` and ``interpolation`` choose the resize of both (their
    defaults are open_clip's, the values of runs written before they existed; the benchmark presets
    set LIFT's). ``eval_split`` None means val when the prepared dataset has one, else
    test. ``skip_bad`` skips (and records) unreadable images instead of stopping on the first.
    ``image_cache`` reads decoded pixels from a ``sage cache-images`` directory; ``feature_cache``
    trains a head-only method on the frozen tower's cached output.
    """

    prepared: Path = option(help="Prepared dataset directory (sage prepare).", panel=DATA, short="-p")
    text_cache: Path = option(help="Text cache directory (sage encode-text).", panel=DATA, short="-t")
    image_cache: Path | None = option(None, help="Decoded-image cache (sage cache-images): the fast input path.",
                                      panel=DATA)
    feature_cache: Path | None = option(None, help="Directory of cached frozen features (linear with --no-augment): "
                                        "computed once, then read.", panel=DATA)
    batch_size: int = option(128, help="Images per optimizer step.", panel=DATA, ge=1, le=MAX_BATCH_SIZE,
                             low_message="must be a positive integer")
    micro_batch_size: int | None = option(None, help="Images per forward pass (gradient accumulation; it divides "
                                          "--batch-size).", panel=DATA, ge=1)
    num_workers: int | None = option(None, help="DataLoader worker processes per rank (default: the CPUs per local rank "
                                     "less one, at most 16).", panel=DATA, ge=0)
    augment: bool = option(True, help="Random crop + flip in training.", panel=DATA)
    eval_resize: EvalResizeName = option("clip", help="Eval resize before the centre crop: lift (shorter side to "
                                         "size * 8 // 7, LIFT's test transform) or clip (to size, open_clip's).",
                                         panel=DATA, choices=names(EvalResizeName))
    interpolation: InterpolationName = option("model", help="Resize interpolation in training and eval: the "
                                              "model's own (bicubic for CLIP), bilinear (LIFT's) or bicubic.",
                                              panel=DATA, choices=names(InterpolationName))
    eval_split: EvalSplitName | None = option(None, help="Split to validate on (default: val, else test).", panel=DATA,
                                              choices=names(EvalSplitName))
    skip_bad: bool = option(False, help="Skip unreadable images (listed in train.json) instead of stopping.",
                            panel=DATA)
    sampler: SamplerName = option("uniform", help="Training order: uniform (shuffled) or class-aware (balanced).",
                                  panel=DATA, choices=names(SamplerName))

    def __post_init__(self) -> None:
        for key in ("prepared", "text_cache", "image_cache", "feature_cache"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, Path(getattr(self, key)))
        check_options(self)
        micro = self.micro_batch_size
        _require([(micro is None or self.batch_size % micro == 0,
                   f"{option_label('micro_batch_size')} {micro} must divide {option_label('batch_size')} "
                   f"{self.batch_size}")])

    @property
    def micro_batch(self) -> int:
        return self.micro_batch_size or self.batch_size

    @property
    def accumulation_steps(self) -> int:
        return self.batch_size // self.micro_batch


@dataclass(frozen=True)
class RunConfig:
    """Where outputs go and how the run behaves: seed, limits, logging and checkpoint cadence.

    ``eval_every`` is in epochs (0: evaluate once, at the end); ``checkpoint_every`` in optimizer
    steps (0: only at the end of each epoch); ``log_every`` in steps. ``compile`` compiles the
    image tower with ``torch.compile`` (:meth:`~sage_cli.model.SageClassifier.compile_tower`); it
    changes how fast a step runs, not what it computes (within float rounding), so it is not part of
    a run's identity and a run may resume with or without it.
    """

    out: Path = option(help="Run directory to write.", panel=RUN, short="-o")
    seed: int = option(0, help="Seed of the init, the data order and the augmentation.", panel=RUN, ge=0, le=MAX_SEED,
                       message=f"must be in 0..{MAX_SEED}")
    max_steps: int | None = option(None, help="Stop after this many optimizer steps (smoke runs).", panel=RUN, ge=1)
    eval_every: int = option(1, help="Validate every N epochs (0: only at the end).", panel=RUN, ge=0)
    checkpoint_every: int = option(0, help="Also checkpoint every N steps (0: each epoch only).", panel=RUN, ge=0)
    log_every: int = option(10, help="Write train metrics (and, without a terminal, a progress line) every N steps.",
                            panel=RUN, ge=1)
    keep: KeepName = option("last", help="Weights that report, predict and export use: the last step's, or the "
                            "best evaluation's by --select-metric (kept beside them as best.safetensors).", panel=RUN,
                            choices=names(KeepName))
    select_metric: SelectMetricName = option("top1", help="Eval-split figure that --keep best and --patience "
                                             "follow: top1, few, or mean-groups (mean of many/medium/few top-1).",
                                             panel=RUN, choices=names(SelectMetricName))
    patience: int = option(0, help="Stop after N evaluations in a row without a better --select-metric (0: off).",
                           panel=RUN, ge=0)
    device: str = option("auto", help="Device to run on (auto: CUDA when available).", panel=RUN,
                         metavar="<auto|cpu|cuda[:N]>")
    precision: PrecisionName = option("auto", help="Mixed precision of every stage: auto (bf16 autocast on CUDA, "
                                      "fp32 on CPU), bf16, fp16 (LIFT's: fp16 autocast + GradScaler) or fp32 (none).",
                                      panel=RUN, choices=names(PrecisionName))
    compile: bool = option(False, help="torch.compile the image tower (the loss stays eager): faster GPU steps "
                           "after a one-off compile.", panel=RUN)
    force: bool = option(False, help="Overwrite another run in --out.", panel=RUN)
    resume: bool = option(False, help="Continue an interrupted run in --out from its last checkpoint.", panel=RUN)

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        device = str(self.device)
        check_options(self)
        _require([
            (device in DEVICES or device.startswith("cuda:"),
             f"{option_label('device')} must be auto, cpu or cuda[:N]; got {device!r}"),
            (not (self.force and self.resume), f"{option_label('force')} and {option_label('resume')} exclude each other"),
            (self.eval_every > 0 or (self.keep == "last" and self.patience == 0),
             f"{option_label('keep')} best and {option_label('patience')} follow evaluations during the run; "
             f"{option_label('eval_every')} is 0 (evaluate only at the end)"),
        ])


# Options that change how a run is written or watched, not what it trains: left out of its identity.
NOT_IN_RESULT = ("out", "force", "resume", "eval_every", "checkpoint_every", "log_every", "num_workers", "skip_bad",
                 "feature_cache", "prepared", "text_cache", "image_cache", "compile")


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``sage train`` needs, complete (see docs/training.md for each option).

    ``method`` names the preset it was resolved from (:func:`sage_cli.methods.resolve`); it labels
    the run and decides nothing: the parts do.
    """

    data: DataConfig
    model: ModelConfig
    loss: LossConfig
    optim: OptimConfig
    run: RunConfig
    method: str = "custom"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every part (paths as strings, tuples as lists): train.json's ``config``."""
        return jsonable(dataclasses.asdict(self))

    def flat(self) -> dict[str, Any]:
        """Every option by its flat key (``method`` included; ``guidance`` True iff guided)."""
        return {"method": self.method, **flatten(self)}


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# ------------------------------------------------------------------------------------------------
# The flat <-> nested mapping


@dataclass(frozen=True)
class Leaf:
    """One option: its path in :class:`TrainConfig`, its dataclass field and its type."""

    key: str
    path: tuple[str, ...]
    field: dataclasses.Field
    annotation: Any

    @property
    def option(self) -> Any:
        return self.field.metadata.get("option")


def part_type(annotation: Any) -> type | None:
    """The config dataclass a field holds (``PeftConfig | None`` -> PeftConfig), None for a leaf."""
    candidates = [a for a in (typing.get_args(annotation) or (annotation,)) if dataclasses.is_dataclass(a)]
    return candidates[0] if candidates else None


def build_config(cls: type, tree: Mapping[str, Any]) -> Any:
    """A config dataclass from nested dicts (:meth:`TrainConfig.to_dict`'s form; parts built recursively)."""
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in tree.items():
        sub = part_type(hints[name])
        values[name] = build_config(sub, value) if sub is not None and isinstance(value, Mapping) else value
    return cls(**values)


def flat_fields(cls: type = TrainConfig, path: tuple[str, ...] = ()) -> dict[str, Leaf]:
    """Every option field under ``cls`` by flat key, depth first (the order of ``sage train --help``)."""
    hints = typing.get_type_hints(cls)
    leaves: dict[str, Leaf] = {}
    for f in dataclasses.fields(cls):
        sub = part_type(hints[f.name])
        if sub is not None:
            leaves.update(flat_fields(sub, (*path, f.name)))
        elif "option" in f.metadata:
            key = f.metadata["option"].key or f.name
            leaves[key] = Leaf(key, (*path, f.name), f, hints[f.name])
    return leaves


def flatten(config: Any) -> dict[str, Any]:
    """The options of a config tree by flat key; an absent part's options are absent (``guidance``
    says whether a guided PEFT module has its guidance)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out.update(flatten(value))
        elif f.name == "guidance":  # PeftConfig.guidance absent
            pass
        elif "option" in f.metadata:
            out[f.metadata["option"].key or f.name] = value
    if isinstance(config, PeftConfig) and config.module in GUIDED_PEFT:
        out["guidance"] = config.guidance is not None
    return out
