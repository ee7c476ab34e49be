"""The training loop: SGD steps with gradient accumulation, evaluation, metrics and checkpoints.

One optimizer step sees ``batch_size`` images in micro-batches of ``micro_batch_size``; each
micro-batch's mean loss is weighted by its share of the step's images, so an accumulated step
takes the same update as one big batch. The compensation statistics of the loss are updated per
micro-batch. Nothing is synchronised with the GPU per step except on logging steps.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch

from sage_cli.artifacts import write_bytes_atomic
from sage_cli.data import ManifestDataset, SeededEpochSampler, build_loader, iterate_batches
from sage_cli.losses import CompensatedLALoss
from sage_cli.model import SageClassifier
from sage_cli.train import checkpoint as ckpt
from sage_cli.train.config import TrainConfig
from sage_cli.train.evaluate import evaluate
from sage_cli.train.optim import build_optimizer, build_scheduler, compute_warmup_steps

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # images [B, 3, H, W], labels [B], sample ids [B]


@dataclass(frozen=True)
class StepInfo:
    """Progress after one optimizer step; ``loss`` and ``images_per_s`` only on logging steps."""

    step: int
    total_steps: int
    epoch: int
    loss: float | None = None
    images_per_s: float | None = None


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
    """Owns the optimizer, schedule, data order and outputs of one run on a built classifier."""

    def __init__(
        self,
        config: TrainConfig,
        classifier: SageClassifier,
        loss_fn: CompensatedLALoss,
        train_set: ManifestDataset,
        eval_set: ManifestDataset | None,
        groups: list[str],
        device: torch.device,
        hooks: TrainHooks | None = None,
        eval_split: str | None = None,
        fingerprint: str = "",
    ) -> None:
        self.config, self.classifier, self.loss_fn = config, classifier, loss_fn
        self.eval_split, self.fingerprint = eval_split, fingerprint
        self.device, self.groups, self.hooks = device, groups, hooks or TrainHooks()
        self.out = config.run.out
        data = config.data
        self.num_samples = len(train_set)
        self.sampler = SeededEpochSampler(self.num_samples, config.run.seed)
        self.loader = build_loader(train_set, data.micro_batch, data.num_workers, device, self.sampler)
        self.eval_loader = (build_loader(eval_set, data.micro_batch, data.num_workers, device)
                            if eval_set is not None and len(eval_set) else None)
        self.steps_per_epoch = math.ceil(self.num_samples / data.batch_size)
        planned = config.optim.epochs * self.steps_per_epoch
        self.total_steps = min(planned, config.run.max_steps or planned)
        self.warmup_steps = compute_warmup_steps(config.optim, self.steps_per_epoch, self.total_steps)
        self.optimizer = build_optimizer(classifier, config.optim)
        self.scheduler = build_scheduler(self.optimizer, self.warmup_steps, self.total_steps)
        self.position = ckpt.Position(epoch=0, step_in_epoch=0, global_step=0)
        self.counters = Counters()
        self.last_eval: dict[str, Any] | None = None
        self.needs_features = loss_fn.estimator.needs_features
        self._window_loss = torch.zeros((), device=device)  # summed on device; read on log steps only
        self._window_steps, self._window_images, self._window_start = 0, 0, time.perf_counter()
        self._step_lr = 0.0

    # ---------------------------------------------------------------------------------------
    # the loop

    def fit(self) -> dict[str, Any] | None:
        """Train to ``total_steps``; evaluate and checkpoint on schedule. Returns the last eval."""
        self.classifier.train()
        self.loss_fn.train()
        with open(self.out / METRICS, "a") as metrics:
            while self.position.global_step < self.total_steps:
                finished_epoch = self.train_epoch(metrics)
                if finished_epoch:
                    self.end_epoch(metrics)
            if self.last_eval is None or self.last_eval["step"] != self.position.global_step:
                self.run_eval(metrics)
        return self.last_eval

    def train_epoch(self, metrics: TextIO) -> bool:
        """Steps until the epoch ends (True) or the run reaches ``total_steps`` mid-epoch (False)."""
        epoch, start_step = self.position.epoch, self.position.step_in_epoch
        self.sampler.set_epoch(epoch, start=min(start_step * self.config.data.batch_size, self.num_samples))
        tic = time.perf_counter()
        for micro_batches in self.group_steps(iterate_batches(self.loader), start_step):
            images = self.train_step(micro_batches)
            self.position = ckpt.Position(epoch, self.position.step_in_epoch + 1, self.position.global_step + 1)
            self.counters.train_images += images
            self._window_images += images
            self._window_steps += 1
            self.after_step(metrics)
            if self.position.global_step >= self.total_steps:
                break
        self.counters.train_seconds += time.perf_counter() - tic
        return self.position.step_in_epoch >= self.steps_per_epoch

    def group_steps(self, batches: Iterable[Batch], start_step: int) -> Iterator[list[Batch]]:
        """Group micro-batches into optimizer steps of ``batch_size`` images (the last may be short)."""
        batch_size = self.config.data.batch_size
        position = start_step * batch_size
        group: list[Batch] = []
        count = 0
        for batch in batches:
            group.append(batch)
            count += len(batch[1])
            if count >= min(batch_size, self.num_samples - position):
                yield group
                position += count
                group, count = [], 0

    def train_step(self, micro_batches: list[Batch]) -> int:
        """One optimizer step over ``micro_batches``; returns the number of images it saw."""
        total = sum(len(labels) for _, labels, _ in micro_batches)
        self.optimizer.zero_grad(set_to_none=True)
        for images, labels, _ in micro_batches:
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            with self.autocast():
                logits, features = self.classifier.forward_with_features(images)  # [B, C], [B, E]
            loss = self.loss_fn(logits, labels, features if self.needs_features else None)
            weighted = loss * (len(labels) / total)
            weighted.backward()
            self._window_loss += weighted.detach()
        self._step_lr = self.optimizer.param_groups[0]["lr"]  # the lr this step used (a float)
        self.optimizer.step()
        self.scheduler.step()
        return total

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def after_step(self, metrics: TextIO) -> None:
        step = self.position.global_step
        info = StepInfo(step, self.total_steps, self.position.epoch)
        if step % self.config.run.log_every == 0 or step == self.total_steps:
            info = self.log_train(metrics)
        if self.hooks.on_step is not None:
            self.hooks.on_step(info)
        every = self.config.run.checkpoint_every
        if every and step % every == 0 and step < self.total_steps:
            self.save_checkpoint()

    def end_epoch(self, metrics: TextIO) -> None:
        """Evaluate on schedule, move to the next epoch, checkpoint (so a resume skips the eval)."""
        epoch = self.position.epoch
        every = self.config.run.eval_every
        if every and (epoch + 1) % every == 0:
            self.run_eval(metrics)
        self.position = ckpt.Position(epoch + 1, 0, self.position.global_step)
        self.save_checkpoint()

    # ---------------------------------------------------------------------------------------
    # metrics

    def log_train(self, metrics: TextIO) -> StepInfo:
        elapsed = max(time.perf_counter() - self._window_start, 1e-9)
        loss = float(self._window_loss) / max(1, self._window_steps)  # the one host sync
        speed = self._window_images / elapsed
        entry = {
            "kind": "train", "step": self.position.global_step, "epoch": self.position.epoch,
            "loss": loss, "lr": self._step_lr, "images_per_s": speed,
            "steps": self._window_steps,
        }
        write_metrics(metrics, entry)
        self._window_loss.zero_()
        self._window_steps, self._window_images, self._window_start = 0, 0, time.perf_counter()
        return StepInfo(self.position.global_step, self.total_steps, self.position.epoch, loss, speed)

    def run_eval(self, metrics: TextIO) -> None:
        if self.eval_loader is None:
            return
        tic = time.perf_counter()
        result = evaluate(self.classifier, self.eval_loader, self.groups, self.device)
        self.counters.eval_seconds += time.perf_counter() - tic
        self.last_eval = {"kind": "eval", "step": self.position.global_step, "epoch": self.position.epoch,
                          "split": self.eval_split, **result}
        write_metrics(metrics, self.last_eval)
        if self.hooks.on_eval is not None:
            self.hooks.on_eval(self.last_eval)
        self._window_start += time.perf_counter() - tic  # eval time is not training throughput

    # ---------------------------------------------------------------------------------------
    # checkpoints

    def training_state(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "loss": self.loss_fn.state_dict(),
            "rng": ckpt.collect_rng_state(),
            "counters": vars(self.counters).copy(),
            "last_eval": json.dumps(self.last_eval),
            "fingerprint": self.fingerprint,
        }

    def save_checkpoint(self) -> Path:
        metadata = {"method": self.config.method, "fingerprint": self.fingerprint}
        return ckpt.save_checkpoint(self.out, self.classifier.trainable_state_dict(), self.training_state(),
                                    self.position, metadata)

    def restore(self, checkpoint: Path) -> None:
        """Continue from ``checkpoint``: weights, optimizer, schedule, loss statistics, position, RNG."""
        state = ckpt.load_checkpoint_state(checkpoint)
        self.classifier.load_trainable_state_dict(ckpt.load_weights(checkpoint / ckpt.WEIGHTS))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.loss_fn.load_state_dict(state["loss"])
        self.position = ckpt.Position(**state["position"])
        self.counters = Counters(**state["counters"])
        self.last_eval = json.loads(state["last_eval"])
        ckpt.restore_rng_state(state["rng"])
        truncate_metrics(self.out / METRICS, self.position.global_step, self.last_eval)


METRICS = "metrics.jsonl"


def write_metrics(handle: TextIO, entry: dict[str, Any]) -> None:
    handle.write(json.dumps(entry, allow_nan=False) + "\n")
    handle.flush()


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

