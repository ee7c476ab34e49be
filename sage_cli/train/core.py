"""``run``: check the inputs, build the classifier and loss, train, write the run directory.

Outputs in ``RUN_DIR``: ``metrics.jsonl`` (appended as the run goes), ``checkpoints/``,
``adapter.safetensors`` (the final adapter + head weights), under ``--keep best``
``best.safetensors`` (the best evaluation's) and, last, ``train.json``, whose ``kept`` names the
weights that report, predict and export use. A directory
with outputs but no train.json is an interrupted run: ``--resume`` continues it from its latest
checkpoint (from step 0 when it was stopped before its first one), ``--force`` starts over. The
finished state is checkpointed before the final writes, so a run that fails there (a full disk)
resumes without losing a step. Under torchrun only rank 0 writes.
"""

from __future__ import annotations

import logging
import random
import resource
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sage_cli import artifacts
from sage_cli.artifacts import TRAIN_RECORD
from sage_cli.backbone import BACKBONE_INIT_SEED, LoadedClip, build_backbone
from sage_cli.data import ManifestDataset
from sage_cli.encode_text import check_text_cache_matches
from sage_cli.model.head_init import DATA_FREE_INITS, compute_head_vectors
from sage_cli.train.advice import warn_launch_bound, warn_short_schedule
from sage_cli.model.features import PRE_PROJ, resolve_head_feature
from sage_cli.train.evaluate import FrozenFeatures, compute_sharded_image_features
from sage_cli.errors import SageError
from sage_cli.locks import lock_output_dir
from sage_cli.losses import ESTIMATORS
from sage_cli.model import SageClassifier
from sage_cli.precision import cast_frozen_weights, casts_frozen_weights, compute_dtype, describe_precision
from sage_cli.train import checkpoint as ckpt
from sage_cli.train.config import TrainConfig, identity_of
from sage_cli.train.datasets import build_datasets, describe_input, use_cached_features
from sage_cli.train.distributed import DistContext, distributed_session
from sage_cli.train.faults import explain_write_errors
from sage_cli.train.inputs import TrainInputs, resolve_inputs
from sage_cli.train.loop import METRICS, Trainer, TrainHooks
from sage_cli.train.selection import BEST, compute_selection_value
from sage_cli.task import build_task
from sage_cli.train.transforms import apply_preprocessing, describe_preprocessing

logger = logging.getLogger(__name__)

STAGE = "train"
ADAPTER = "adapter.safetensors"
OUTPUTS = (ADAPTER, BEST, METRICS, ckpt.CHECKPOINT_DIR)
TRACKED_OUTPUTS = ("metrics.csv", "tensorboard")  # written by `--log csv|tensorboard` from the metrics


@dataclass(frozen=True)
class TrainResult:
    """The run directory and its train.json; ``skipped`` when it already held this exact run.

    ``classifier`` is the trained model in memory (eval mode; None when skipped); trained on CUDA,
    its frozen tower weights are bf16 under ``--precision auto`` or ``bf16``
    (:func:`~sage_cli.precision.cast_frozen_weights`): run it under :func:`~sage_cli.precision.autocast`
    with the run's precision, as every stage does.
    """

    out: Path
    record: dict[str, Any]
    skipped: bool = False
    classifier: SageClassifier | None = field(default=None, repr=False, compare=False)


def run(config: TrainConfig, hooks: TrainHooks | None = None) -> TrainResult:
    """Train ``config.method`` on the prepared data with the cached class texts; see module doc.

    Under torchrun every rank calls this; they train data-parallel and rank 0 writes the outputs.
    """
    started = time.perf_counter()
    inputs = resolve_inputs(config)  # every refusal of a mismatched input happens here
    with distributed_session(config.run.device) as (dist_ctx, device):
        return run_on(config, inputs, dist_ctx, device, hooks, started)


def run_on(
    config: TrainConfig, inputs: TrainInputs, dist_ctx: DistContext, device: torch.device,
    hooks: TrainHooks | None, started: float,
) -> TrainResult:
    """:func:`run` once the inputs are checked and this process knows its rank and device."""
    out = config.run.out
    with lock_output_dir(out, STAGE, enabled=dist_ctx.is_main, agree=dist_ctx.all_true if dist_ctx.enabled else None):
        return train_locked(config, inputs, dist_ctx, device, hooks, started)


def train_locked(
    config: TrainConfig, inputs: TrainInputs, dist_ctx: DistContext, device: torch.device,
    hooks: TrainHooks | None, started: float,
) -> TrainResult:
    """:func:`run_on` while holding the run directory's lock (rank 0)."""
    out = config.run.out
    record_inputs = {**inputs.record(out), "config": identity_of(config)}
    identity = artifacts.strip_locations(record_inputs)  # paths move with a copied run; the content decides
    fingerprint = artifacts.sha256_json(identity)
    resume_from = find_resume_checkpoint(out, fingerprint) if config.run.resume else None
    if not config.run.resume and artifacts.guard_output_dir(out, TRAIN_RECORD, fingerprint, OUTPUTS, config.run.force,
                                                            required=(ADAPTER,), identity=identity):
        return TrainResult(out, artifacts.read_record(out, TRAIN_RECORD), skipped=True)
    seed_everything(config.run.seed)
    trainer, clip_record = build_trainer(config, inputs, device, hooks, fingerprint, dist_ctx)
    dist_ctx.barrier()  # every rank has read the run directory before rank 0 changes it
    if dist_ctx.is_main:
        with explain_write_errors(out, "run directory"):
            if resume_from is None:
                clear_outputs(out)
            out.mkdir(parents=True, exist_ok=True)
    if resume_from is not None:
        trainer.restore(resume_from)
        logger.info("resuming from %s (step %d)", resume_from, trainer.position.global_step)
    preprocessing = {**describe_preprocessing(clip_record, config.data.augment), "input": describe_input(config)}
    if hooks is not None and hooks.on_start is not None and dist_ctx.is_main:
        hooks.on_start(start_info(trainer, preprocessing, inputs, resume_from))
    final_eval = trainer.fit()
    if trainer.saved_step != trainer.position.global_step:
        trainer.save_checkpoint()  # the finished state: a failed final write below resumes from here
    record = artifacts.build_record(
        STAGE, record_inputs, identity=identity,
        **summarise(config, trainer, clip_record, preprocessing, inputs, device),
        final_eval=final_eval, kept=describe_kept(trainer, final_eval), early_stop=describe_early_stop(trainer),
        wall_time_s=time.perf_counter() - started,
    )
    if dist_ctx.is_main:
        weights = save_final_weights(out, trainer, clip_record)
        with explain_write_errors(out / TRAIN_RECORD, "run record"):
            record = artifacts.seal_record(out, record, (*weights, METRICS))
            artifacts.write_record(out, TRAIN_RECORD, record)  # last: marks the run complete
    dist_ctx.barrier()  # no rank reports success before the outputs are on disk
    return TrainResult(out, record, classifier=trainer.task.classifier.eval())


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy and torch (every device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_trainer(
    config: TrainConfig, inputs: TrainInputs, device: torch.device, hooks: TrainHooks | None, fingerprint: str,
    dist_ctx: DistContext | None = None,
) -> tuple[Trainer, dict[str, Any]]:
    """Backbone, task (classifier + loss) and datasets, wired into a :class:`Trainer`."""
    clip = build_backbone(inputs.model, inputs.pretrained, device)
    check_text_cache_matches(inputs.cache, clip.record)
    clip = apply_preprocessing(clip, config.data.eval_resize, config.data.interpolation)
    embeddings = inputs.cache.class_embeddings
    counts = torch.tensor(inputs.data.classes["train_count"].to_numpy(), dtype=torch.float32)
    frozen = compute_frozen_train_features(config, inputs, clip, device, dist_ctx)
    head_vectors = compute_initial_head(config, frozen, len(inputs.data.classes))
    zero_shot = frozen[:2] if ESTIMATORS[config.loss.compensation].needs_zero_shot else None  # joint space
    task = build_task(clip.model, embeddings, counts, config.model, config.loss, device, head_vectors,
                      zero_shot, config.run.precision)
    if casts_frozen_weights(device, config.run.precision):  # bf16: frozen tower weights cast once, not at every op
        dtype = compute_dtype(device, config.run.precision)
        cast = cast_frozen_weights(task.classifier.visual, dtype)
        logger.info("%d frozen tower weights cast to %s (norms and trainable parameters stay float32)", cast, dtype)
    train_set, eval_set = build_datasets(config, inputs, clip)
    if config.data.feature_cache is not None:
        world_size = dist_ctx.world_size if dist_ctx is not None else 1
        train_set, eval_set, _ = use_cached_features(config, inputs, task.classifier, (train_set, eval_set),
                                                     clip.record, device, world_size)
    if config.run.compile and config.data.feature_cache is None:  # with cached features there is no tower to run
        task.classifier.compile_tower()
    groups = inputs.data.classes["group"].tolist()
    trainer = Trainer(config, task, train_set, eval_set, groups, device, hooks,
                      eval_split=inputs.eval_split, fingerprint=fingerprint, dist_ctx=dist_ctx)
    if dist_ctx is None or dist_ctx.is_main:
        warn_short_schedule(trainer.num_samples, config.data.batch_size, config.optim.epochs, config.run.max_steps)
        if config.data.feature_cache is None:  # a head on cached features is launch-bound at any batch
            warn_launch_bound(config.data.micro_batch, trainer.dist.world_size, device.type)
    return trainer, clip.record


def compute_frozen_train_features(
    config: TrainConfig, inputs: TrainInputs, clip: LoadedClip, device: torch.device,
    dist_ctx: DistContext | None = None,
) -> FrozenFeatures | None:
    """The frozen tower's features of the training split under the eval transform, before any PEFT
    module, when something needs them (a ``--head-init`` other than text: in the head's feature
    space; the zero-shot compensation: in CLIP's joint space); None otherwise. One pass serves both;
    under torchrun each rank encodes its share and every rank gets the whole."""
    needed = config.model.head.init not in DATA_FREE_INITS or ESTIMATORS[config.loss.compensation].needs_zero_shot
    if not needed:
        return None
    data = inputs.data
    dataset = ManifestDataset(data.split("train"), data.image_root, clip.preprocess_eval, skip_bad=config.data.skip_bad)
    visual = clip.model.visual
    pre_projection = resolve_head_feature(visual, config.model.head.feature) == PRE_PROJ
    frozen = compute_sharded_image_features(visual, dataset, config.data.micro_batch, config.data.num_workers, device,
                                            dist_ctx or DistContext(), pre_projection, config.run.precision)
    logger.info("frozen features of %d training images", len(frozen.labels))
    return frozen


def compute_initial_head(
    config: TrainConfig, frozen: FrozenFeatures | None, num_classes: int
) -> torch.Tensor | None:
    """The head's initial rows [C, D] (in its feature space) for a ``--head-init`` other than text
    (None for text and random: :func:`~sage_cli.model.classifier.build_classifier` makes those), from
    :func:`compute_frozen_train_features`."""
    head = config.model.head
    if head.init in DATA_FREE_INITS:
        return None
    logger.info("head init %s from %d training images", head.init, len(frozen.labels))
    return compute_head_vectors(head.init, frozen.head, frozen.labels, num_classes, head.init_shots)


def find_resume_checkpoint(out: Path, fingerprint: str) -> Path | None:
    """The latest checkpoint of an interrupted run of these exact inputs, or a SageError."""
    if (out / TRAIN_RECORD).is_file():
        raise SageError(f"{out}: the run is already complete ({TRAIN_RECORD}); nothing to resume")
    checkpoint = ckpt.find_latest_checkpoint(out)
    if checkpoint is None:
        if (out / ADAPTER).exists():  # final weights without a checkpoint: not a run this sage stopped
            raise SageError(f"{out}: holds {ADAPTER} but no checkpoint and no {TRAIN_RECORD}; pass --force to "
                            "start over")
        stopped = any((out / o).exists() for o in OUTPUTS)
        logger.warning("%s: no checkpoint to resume from (%s); starting from step 0", out,
                       "stopped before its first checkpoint" if stopped else "nothing trained here yet")
        return None
    state = ckpt.load_checkpoint_state(checkpoint)
    ckpt.warn_if_threads_differ(state, checkpoint)
    if state.get("fingerprint") != fingerprint:
        raise SageError(
            f"{checkpoint}: was written by a run of other inputs or options; resume with the same "
            "command, or pass --force to start over"
        )
    return checkpoint


def clear_outputs(out: Path) -> None:
    """Remove this stage's outputs of an earlier run (only reached with --force or on a fresh dir)."""
    (out / TRAIN_RECORD).unlink(missing_ok=True)  # first: the directory is now marked incomplete
    (out / ADAPTER).unlink(missing_ok=True)
    (out / BEST).unlink(missing_ok=True)
    (out / METRICS).unlink(missing_ok=True)
    shutil.rmtree(out / ckpt.CHECKPOINT_DIR, ignore_errors=True)
    for tracked in TRACKED_OUTPUTS:  # the --log trackers' copies of the old metrics (W&B's own files stay)
        path = out / tracked
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def save_final_weights(out: Path, trainer: Trainer, clip_record: dict[str, Any]) -> tuple[str, ...]:
    """The last weights (``adapter.safetensors``) and, under ``--keep best``, the best evaluation's; their names."""
    metadata = {
        "format": "sage-adapter",
        "method": trainer.config.method,
        "adapter_config": ckpt.describe_adapter_config(trainer.task.classifier, trainer.config.method),
        "model": clip_record["model"],
        "pretrained": clip_record["pretrained"],
        "global_step": trainer.position.global_step,
        "fingerprint": trainer.fingerprint,
    }
    with explain_write_errors(out / ADAPTER, "final weights"):
        ckpt.save_weights(out / ADAPTER, trainer.task.trainable_state_dict(), metadata)
    best = trainer.selection
    if best.weights is None:
        return (ADAPTER,)
    with explain_write_errors(out / BEST, "best weights"):
        ckpt.save_weights(out / BEST, best.weights,
                          {**metadata, "global_step": best.best["step"], "selected": best.best})
    return ADAPTER, BEST


def describe_kept(trainer: Trainer, final_eval: dict[str, Any] | None) -> dict[str, Any]:
    """train.json's ``kept``: the weights file that report, predict and export use, its step, epoch
    and the ``--select-metric`` value of its evaluation (None without one)."""
    selection = trainer.selection
    if selection.weights is not None:
        return {"keep": "best", "file": BEST, **selection.best}
    step, epoch = trainer.position.global_step, trainer.position.epoch
    evaluated = final_eval is not None and final_eval["step"] == step
    value = compute_selection_value(final_eval, selection.metric) if evaluated else None
    return {"keep": "last", "file": ADAPTER, "step": step, "epoch": epoch,
            "split": final_eval.get("split") if evaluated else None, "metric": selection.metric, "value": value}


def describe_early_stop(trainer: Trainer) -> dict[str, Any] | None:
    """Where ``--patience`` stopped the run (None when it ran its course)."""
    if not trainer.stopped_early:
        return None
    return {"step": trainer.position.global_step, "epoch": trainer.position.epoch,
            "patience": trainer.selection.patience, "planned_steps": trainer.total_steps}


def start_info(
    trainer: Trainer, preprocessing: dict[str, Any], inputs: TrainInputs, resume_from: Path | None
) -> dict[str, Any]:
    """What the front end prints before the first step."""
    return {
        "trainable_params": trainer.task.num_trainable,
        "total_params": sum(p.numel() for p in trainer.task.classifier.parameters()),
        "classifier": {"method": trainer.config.method, **trainer.task.summary()},
        "preprocessing": preprocessing,
        "total_steps": trainer.total_steps,
        "start_step": trainer.position.global_step,
        "steps_per_epoch": trainer.steps_per_epoch,
        "train_images": trainer.num_samples,
        "eval_split": inputs.eval_split,
        "device": str(trainer.device),
        "resumed_from": str(resume_from) if resume_from else None,
    }


def summarise(
    config: TrainConfig, trainer: Trainer, clip_record: dict[str, Any], preprocessing: dict[str, Any],
    inputs: TrainInputs, device: torch.device,
) -> dict[str, Any]:
    """The fields of train.json beside inputs, final_eval and wall time."""
    counters = trainer.counters
    return {
        "method": config.method,
        "config": config.to_dict(),  # schema artifacts.SCHEMA_VERSION (sage_cli.train.config.read_config reads it)
        "prepared": artifacts.relative_path(inputs.data.directory, config.run.out),
        "text_cache": artifacts.relative_path(inputs.cache.directory, config.run.out),
        "model": clip_record,
        "backbone_init_seed": BACKBONE_INIT_SEED,
        "classifier": {"method": config.method, **trainer.task.summary()},
        "compensation_estimate": describe_compensation(trainer),
        "trainable_params": trainer.task.num_trainable,
        "preprocessing": preprocessing,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "world_size": trainer.dist.world_size,
        "distributed_backend": trainer.dist.backend,
        "precision": describe_precision(device, config.run.precision),
        "steps": trainer.position.global_step,
        "steps_per_epoch": trainer.steps_per_epoch,
        "warmup_steps": trainer.warmup_steps,
        "epochs_completed": trainer.position.epoch,
        "train_images": trainer.num_samples,
        "eval_split": inputs.eval_split,
        "images_seen": counters.train_images,
        "train_time_s": counters.train_seconds,
        "eval_time_s": counters.eval_seconds,
        "images_per_s": counters.train_images / max(counters.train_seconds, 1e-9),
        "peak_memory": measure_peak_memory(device),
        "skipped_images": trainer.all_skipped(),
        "outputs": [ADAPTER, *([BEST] if trainer.selection.weights is not None else []), METRICS,
                    ckpt.CHECKPOINT_DIR],
    }


def describe_compensation(trainer: Trainer) -> dict[str, Any] | None:
    """The compensation estimator's own record (the zero-shot prior and delta), None for the others."""
    estimator = getattr(trainer.task.loss, "estimator", None)
    return estimator.describe() if estimator is not None else None


def measure_peak_memory(device: torch.device) -> dict[str, Any]:
    """CUDA max allocated bytes on GPU, else the process's max RSS (bytes)."""
    if device.type == "cuda":
        return {"kind": "cuda_max_allocated", "bytes": int(torch.cuda.max_memory_allocated(device))}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    return {"kind": "cpu_max_rss", "bytes": int(rss * scale)}
