"""The training loop: SGD steps with gradient accumulation, evaluation, metrics and checkpoints.

One optimizer step sees ``batch_size`` images in micro-batches of ``micro_batch_size``; each
micro-batch's loss is weighted by its share of the step's normaliser (the loss's denominator:
the images, or their class weights for ``cb`` / ``grw``; :meth:`ClassificationTask.normaliser`),
so an accumulated step takes the same update as one big batch. The compensation statistics of
the loss are updated per micro-batch. Nothing is synchronised with the GPU per step except on logging and checkpoint steps.

Under torchrun each rank takes a disjoint strided slice of every micro-batch of the same seeded
order (:class:`~sage_cli.data.StepBatchSampler`), weights its losses by its share of the *global*
step's normaliser, and DDP sums the gradients over ranks in the backward of the step's last
micro-batch (the earlier ones accumulate locally); rank 0 alone writes. A NaN / inf loss stops
the run before anything is logged or checkpointed; SIGINT / SIGTERM stop it at the next step
boundary with a checkpoint (see :mod:`sage_cli.train.faults`). Under ``--precision fp16`` (LIFT's
``prec: amp``) a :class:`torch.amp.GradScaler` scales each micro-batch's loss before its backward and
unscales, steps and updates once per optimizer step; its state is checkpointed. Each evaluation goes to
:class:`~sage_cli.train.selection.Selection` (``--keep best``, ``--patience``).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
import torch

from sage_cli.artifacts import write_bytes_atomic
from sage_cli.data import ManifestDataset, MicroBatch, StepBatchSampler, build_loader, iterate_batches
from sage_cli.errors import SageError
from sage_cli.precision import uses_grad_scaler
from sage_cli.train import checkpoint as ckpt
from sage_cli.train.config import TrainConfig
from sage_cli.train.distributed import DistContext
from sage_cli.train.evaluate import predict, summarise_predictions
from sage_cli.train.faults import (
    NonFiniteWatch,
    StopSignals,
    TrainingInterrupted,
    explain_write_errors,
    non_finite_error,
)
from sage_cli.train.optim import build_optimizer, build_scheduler, compute_warmup_steps
from sage_cli.train.selection import BEST, Selection

if TYPE_CHECKING:
    from sage_cli.task import ClassificationTask

@dataclass(frozen=True)
class StepInfo:
    """Progress after one optimizer step; ``loss`` and ``images_per_s`` only on logging steps."""

    step: int
    total_steps: int
    epoch: int
    loss: float | None = None
    images_per_s: float | None = None
    lr: float | None = None  # the learning rate of the step (logging steps)
    compensation: dict[str, float] | None = None  # delta's summary (logging steps, compensated losses)


@dataclass
class TrainHooks:
    """Callbacks for a front end (the CLI's progress bar); all optional."""

    on_start: Callable[[dict[str, Any]], None] | None = None
    on_step: Callable[[StepInfo], None] | None = None
    on_eval: Callable[[dict[str, Any]], None] | None = None


@dataclass
class Counters:
    """Running totals, checkpointed so that a resumed run reports whole-run figures."""

    train_images: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0


class Trainer:
    """Owns the optimizer, schedule, data order and outputs of one run of a built task.

    The task (:class:`~sage_cli.task.ClassificationTask`) owns the model and the loss; the
    Trainer only asks it for a micro-batch's loss, the trainable parameters and their state.
    """

    def __init__(
        self,
        config: TrainConfig,
        task: ClassificationTask,
        train_set: ManifestDataset,
        eval_set: ManifestDataset | None,
        groups: list[str],
        device: torch.device,
        hooks: TrainHooks | None = None,
        eval_split: str | None = None,
        fingerprint: str = "",
        dist_ctx: DistContext | None = None,
    ) -> None:
        self.config, self.task = config, task
        self.eval_split, self.fingerprint = eval_split, fingerprint
        self.dist = dist_ctx or DistContext()
        self.device, self.groups = device, groups
        self.hooks = (hooks or TrainHooks()) if self.dist.is_main else TrainHooks()
        self.out = config.run.out
        data = config.data
        self.num_samples = len(train_set)
        labels = train_set.labels if data.sampler == "class-aware" else None
        self.sampler = StepBatchSampler(self.num_samples, config.run.seed, data.batch_size, data.micro_batch,
                                        self.dist.rank, self.dist.world_size, labels=labels)
        self.loader = build_loader(train_set, data.micro_batch, data.num_workers, device, batch_sampler=self.sampler)
        self.eval_loader = self.build_eval_loader(eval_set)
        self.steps_per_epoch = self.sampler.steps_per_epoch
        planned = config.optim.epochs * self.steps_per_epoch
        self.total_steps = min(planned, config.run.max_steps or planned)
        self.warmup_steps = compute_warmup_steps(config.optim, self.steps_per_epoch, self.total_steps)
        self.trainable = task.trainable_parameters()
        self.model = self.dist.wrap(task)  # the task under DDP (the task itself in one process)
        self.optimizer = build_optimizer(task.named_trainable_parameters(), config.optim)
        per_epoch = self.steps_per_epoch if config.optim.lr_schedule == "cosine-epoch" else None
        self.scheduler = build_scheduler(self.optimizer, self.warmup_steps, self.total_steps, per_epoch,
                                         config.optim.epochs)
        # fp16 only (LIFT's defaults); disabled, scale() returns the loss and step() steps the optimizer
        self.scaler = torch.amp.GradScaler(device.type, enabled=uses_grad_scaler(device, config.run.precision))
        self.position = ckpt.Position(epoch=0, step_in_epoch=0, global_step=0)
        self.counters = Counters()
        self.last_eval: dict[str, Any] | None = None
        self.selection = Selection.from_config(config.run)  # --keep best, --patience
        self.skipped: set[str] = set()  # unreadable training images met with --skip-bad (this rank)
        self.watch = NonFiniteWatch(device)
        self.signals = StopSignals()
        self.stopped = False
        self.saved_step: int | None = None  # global step of the newest checkpoint on disk
        self._window_loss = torch.zeros((), device=device)  # summed on device; read on log steps only
        self._window_steps, self._window_images, self._window_start = 0, 0, time.perf_counter()
        self._step_lr = 0.0

    def build_eval_loader(self, eval_set: ManifestDataset | None) -> torch.utils.data.DataLoader | None:
        """The eval loader; under DDP each rank evaluates a strided shard and the results are gathered."""
        if eval_set is None or not len(eval_set):
            return None
        shard = range(self.dist.rank, len(eval_set), self.dist.world_size) if self.dist.enabled else None
        data = self.config.data
        return build_loader(eval_set, data.micro_batch, data.num_workers, self.device, sampler=shard)

    # ---------------------------------------------------------------------------------------
    # the loop

    def fit(self) -> dict[str, Any] | None:
        """Train to ``total_steps`` (or until ``--patience`` runs out); evaluate and checkpoint on
        schedule. Returns the last eval.

        Raises :class:`TrainingInterrupted` after a stop signal (with a checkpoint of the last
        finished step) and a SageError naming the step of a NaN / inf loss.
        """
        self.task.train()
        with MetricsLog(self.out / METRICS, self.dist.is_main) as metrics, self.signals:
            while self.position.global_step < self.total_steps and not self.selection.exhausted:
                finished_epoch = self.train_epoch(metrics)
                if self.stopped:
                    self.stop_with_checkpoint()
                if finished_epoch:
                    self.end_epoch(metrics)
            self.check_finite()
            if self.last_eval is None or self.last_eval["step"] != self.position.global_step:
                self.run_eval(metrics)
        return self.last_eval

    @property
    def stopped_early(self) -> bool:
        """Whether ``--patience`` ended the run before ``total_steps``."""
        return self.selection.exhausted and self.position.global_step < self.total_steps

    def train_epoch(self, metrics: MetricsLog) -> bool:
        """Steps until the epoch ends (True), the run reaches ``total_steps`` or a stop signal (False)."""
        epoch, start_step = self.position.epoch, self.position.step_in_epoch
        self.sampler.set_epoch(epoch, start_step)
        tic = time.perf_counter()
        for micro_batches in self.group_steps(iterate_batches(self.loader), start_step):
            images = self.train_step(micro_batches)
            if images is None:
                self.stopped = True
                break
            self.position = ckpt.Position(epoch, self.position.step_in_epoch + 1, self.position.global_step + 1)
            self.counters.train_images += images
            self._window_images += images
            self._window_steps += 1
            self.after_step(metrics)
            if self.position.global_step >= self.total_steps:
                break
        self.counters.train_seconds += time.perf_counter() - tic
        return not self.stopped and self.position.step_in_epoch >= self.steps_per_epoch

    def group_steps(self, batches: Iterable[MicroBatch], start_step: int) -> Iterator[list[MicroBatch]]:
        """Group this rank's micro-batches into optimizer steps (the sampler knows how many per step)."""
        step, group = start_step, []
        for batch in batches:
            group.append(batch)
            if len(group) == self.sampler.micro_batches_in_step(step):
                yield group
                step, group = step + 1, []

    def train_step(self, micro_batches: list[MicroBatch]) -> int | None:
        """One optimizer step; the number of images it saw over all ranks, or None on a stop signal."""
        local = sum(len(batch.labels) for batch in micro_batches)
        shares = [self.task.normaliser(batch) for batch in micro_batches]  # each one's part of the step's normaliser
        self.note_skipped(micro_batches)
        total, stops, normaliser = self.dist.sum_host_floats([local, int(self.signals.received is not None),
                                                              sum(shares)])
        if stops:
            return None
        step = self.position.global_step + 1
        self.optimizer.zero_grad(set_to_none=True)
        last = len(micro_batches) - 1  # the same on every rank: each takes part in every micro-batch
        for index, (batch, share) in enumerate(zip(micro_batches, shares)):
            with self.dist.gradient_sync(self.model, sync=index == last):  # DDP all-reduces on the last one
                self.train_micro_batch(batch, share / normaliser if share else 0.0, step)
        self._step_lr = self.optimizer.param_groups[0]["lr"]  # the lr this step used (a float)
        if total:  # a step without one readable image (on any rank) changes no weight
            # The scaler unscales the gradients and skips the step when one is inf / NaN (an fp16
            # overflow), then lowers its scale. Such a step still counts and still advances the lr
            # schedule, as in LIFT and torch's AMP recipe. The NaN-loss stop watches the float32 loss,
            # not the gradients: a non-finite loss still stops the run, a scaled-gradient overflow does not.
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.scheduler.step()
        return int(total)

    def train_micro_batch(self, batch: MicroBatch, share: float, step: int) -> None:
        """Forward and backward of one micro-batch, its loss weighted by ``share``: its part of the step's normaliser.

        A micro-batch without images still runs its (zero) backward: under DDP every rank must.
        """
        out = self.model(batch)
        loss = out["loss"]
        if not out["samples"]:  # nothing readable here: a zero that reaches every trainable parameter
            self.scaler.scale(loss).backward()
            return
        self.watch.observe(loss, step)
        weighted = loss * share
        self.scaler.scale(weighted).backward()  # the loss itself under fp16 without a scaler
        self._window_loss += weighted.detach()

    def note_skipped(self, micro_batches: list[MicroBatch]) -> None:
        for batch in micro_batches:
            self.skipped.update(batch.skipped)

    def after_step(self, metrics: MetricsLog) -> None:
        step = self.position.global_step
        info = StepInfo(step, self.total_steps, self.position.epoch)
        if step % self.config.run.log_every == 0 or step == self.total_steps:
            self.check_finite()
            info = self.log_train(metrics)
        if self.hooks.on_step is not None:
            self.hooks.on_step(info)
        every = self.config.run.checkpoint_every
        # the last step of an epoch is checkpointed by end_epoch (after its eval)
        if every and step % every == 0 and step < self.total_steps and self.position.step_in_epoch < self.steps_per_epoch:
            self.save_checkpoint()

    def end_epoch(self, metrics: MetricsLog) -> None:
        """Evaluate on schedule, move to the next epoch, checkpoint (so a resume skips the eval)."""
        epoch = self.position.epoch
        every = self.config.run.eval_every
        self.check_finite()
        if every and (epoch + 1) % every == 0:
            self.run_eval(metrics)
        self.position = ckpt.Position(epoch + 1, 0, self.position.global_step)
        self.save_checkpoint()

    def check_finite(self) -> None:
        """A SageError naming the first step whose loss was NaN or inf (on any rank), if there was one."""
        bad = self.watch.first_bad_step(self.dist.min_ if self.dist.enabled else None)
        if bad is not None:
            raise non_finite_error(bad, ckpt.find_latest_checkpoint(self.out))

    def stop_with_checkpoint(self) -> None:
        """After a stop signal: checkpoint the last finished step (unless on disk already) and raise."""
        step = self.position.global_step
        checkpoint = (ckpt.find_latest_checkpoint(self.out) if self.saved_step == step else self.save_checkpoint())
        raise TrainingInterrupted(step, self.total_steps, checkpoint, self.signals.received or "stop signal")

    # ---------------------------------------------------------------------------------------
    # metrics

    def log_train(self, metrics: MetricsLog) -> StepInfo:
        elapsed = max(time.perf_counter() - self._window_start, 1e-9)
        loss = float(self.dist.sum_(self._window_loss.clone())) / max(1, self._window_steps)  # the one host sync
        speed = self._window_images / elapsed
        entry = {
            "kind": "train", "step": self.position.global_step, "epoch": self.position.epoch,
            "loss": loss, "lr": self._step_lr, "images_per_s": speed,
            "steps": self._window_steps,
        }
        compensation = self.compensation_summary()
        if compensation is not None:
            entry["compensation"] = compensation
        metrics.write(entry)
        self._window_loss.zero_()
        self._window_steps, self._window_images, self._window_start = 0, 0, time.perf_counter()
        return StepInfo(self.position.global_step, self.total_steps, self.position.epoch, loss, speed, self._step_lr,
                        compensation)

    def compensation_summary(self) -> dict[str, float] | None:
        """The loss's compensation factor delta [C] in a few numbers: its mean, spread and extremes over
        all classes and its mean over each many / medium / few group; None without a compensation.

        Every rank holds the same delta (its statistics fold in the gathered global batch), so no collective is needed.
        """
        delta = self.task.loss.compensation()
        if delta is None:
            return None
        values = delta.detach().float().cpu().numpy()
        summary = {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
                   "max": float(values.max())}
        groups = np.asarray(self.groups)
        for group in ("many", "medium", "few"):
            if (groups == group).any():
                summary[group] = float(values[groups == group].mean())
        return summary

    def run_eval(self, metrics: MetricsLog) -> None:
        if self.eval_loader is None:
            return
        tic = time.perf_counter()
        predictions, labels = predict(self.task.classifier, self.eval_loader, self.device,
                                      self.config.run.precision)
        if self.dist.enabled:  # each rank evaluated a shard
            shards = self.dist.gather_objects((predictions, labels))
            predictions = np.concatenate([p for p, _ in shards])
            labels = np.concatenate([y for _, y in shards])
        result = summarise_predictions(predictions, labels, self.groups)
        self.counters.eval_seconds += time.perf_counter() - tic
        self.last_eval = {"kind": "eval", "step": self.position.global_step, "epoch": self.position.epoch,
                          "split": self.eval_split, **result}
        metrics.write(self.last_eval)
        if self.selection.active:
            self.selection.observe(self.last_eval, self.task.trainable_state_dict())
        if self.hooks.on_eval is not None:
            self.hooks.on_eval(self.last_eval)
        self._window_start += time.perf_counter() - tic  # eval time is not training throughput

    def all_skipped(self) -> list[str]:
        """Unreadable training images met so far, over every rank, sorted."""
        return sorted(set().union(*self.dist.gather_objects(self.skipped)))

    # ---------------------------------------------------------------------------------------
    # checkpoints

    def training_state(self) -> dict[str, Any]:
        """Everything but the weights that a resume needs (collective under DDP: every rank calls it)."""
        window_loss = float(self.dist.sum_(self._window_loss.clone()))
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            **({"scaler": self.scaler.state_dict()} if self.scaler.is_enabled() else {}),
            "loss": self.task.loss.state_dict(),
            "rng": ckpt.collect_rng_state(),
            "rng_ranks": self.dist.gather_objects(ckpt.collect_rng_state()) if self.dist.enabled else [],
            "counters": vars(self.counters).copy(),
            "window": {"loss": window_loss, "steps": self._window_steps, "images": self._window_images},
            "skipped": json.dumps(self.all_skipped()),
            "last_eval": json.dumps(self.last_eval),
            "selection": self.selection.state(),
            "fingerprint": self.fingerprint,
        }

    def save_checkpoint(self) -> Path:
        """Checkpoint the current step (rank 0 writes; every rank learns whether it worked)."""
        self.check_finite()  # never save a state that a NaN / inf loss has reached
        state = self.training_state()
        path = self.out / ckpt.CHECKPOINT_DIR / ckpt.checkpoint_name(self.position.global_step)
        error: SageError | None = None
        if self.dist.is_main:
            metadata = {"method": self.config.method, "fingerprint": self.fingerprint}
            try:
                best = {BEST: self.selection.weights} if self.selection.weights is not None else None
                path = ckpt.save_checkpoint(self.out, self.task.trainable_state_dict(), state,
                                            self.position, metadata, extra=best)
            except SageError as exc:
                error = exc
        if not self.dist.all_true(error is None):
            raise error or SageError(f"{path}: rank 0 could not write this checkpoint; see its error")
        self.saved_step = self.position.global_step
        return path

    def restore(self, checkpoint: Path) -> None:
        """Continue from ``checkpoint``: weights, optimizer, schedule, loss statistics, position, RNG."""
        state = ckpt.load_checkpoint_state(checkpoint)
        self.task.load_trainable_state_dict(ckpt.load_weights(checkpoint / ckpt.WEIGHTS))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler.is_enabled() and "scaler" in state:  # a checkpoint without one resumes with a fresh scaler
            self.scaler.load_state_dict(state["scaler"])
        self.task.loss.load_state_dict(state["loss"])
        self.position = ckpt.Position(**state["position"])
        self.counters = Counters(**state["counters"])
        self.last_eval = json.loads(state["last_eval"])
        best = checkpoint / BEST
        self.selection.load_state(state.get("selection"), ckpt.load_weights(best) if best.is_file() else None)
        window = state.get("window", {"loss": 0.0, "steps": 0, "images": 0})
        self._window_loss.fill_(window["loss"] if self.dist.is_main else 0.0)  # summed over ranks on log steps
        self._window_steps, self._window_images = window["steps"], window["images"]
        self.skipped = set(json.loads(state.get("skipped", "[]"))) if self.dist.is_main else set()
        ckpt.restore_rng_state(ckpt.select_rank_rng_state(state, self.dist.rank, self.dist.world_size))
        self.saved_step = self.position.global_step
        if self.dist.is_main:
            with explain_write_errors(self.out / METRICS, "metrics"):
                truncate_metrics(self.out / METRICS, self.position.global_step, self.last_eval)


METRICS = "metrics.jsonl"


class MetricsLog:
    """Appends JSON lines to ``metrics.jsonl`` on rank 0 (a no-op elsewhere); write errors are SageErrors."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path, self.enabled = path, enabled
        self.handle: TextIO | None = None

    def __enter__(self) -> MetricsLog:
        if self.enabled:
            with explain_write_errors(self.path, "metrics"):
                self.handle = open(self.path, "a")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            with contextlib.suppress(OSError):
                self.handle.close()
            self.handle = None

    def write(self, entry: dict[str, Any]) -> None:
        if self.handle is None:
            return
        with explain_write_errors(self.path, "metrics"):
            self.handle.write(json.dumps(entry, allow_nan=False) + "\n")
            self.handle.flush()


def truncate_metrics(path: Path, step: int, last_eval: dict[str, Any] | None) -> None:
    """Drop entries a killed run logged after the checkpoint it resumes from."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut by the kill
        late = entry.get("step", 0) > step
        extra_eval = entry.get("kind") == "eval" and entry.get("step") == step and last_eval != entry
        if not late and not extra_eval:
            kept.append(line)
    write_bytes_atomic(path, ("\n".join(kept) + "\n" if kept else "").encode())

