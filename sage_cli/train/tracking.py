"""Experiment tracking for ``sage train --log tensorboard|wandb|csv``: the metrics.jsonl records, live.

:func:`build_trackers` opens one :class:`Tracker` per name; :func:`tracking_hooks` feeds them from
the trainer's :class:`TrainHooks` (the same values that go to metrics.jsonl: loss, learning rate,
images/s and the summary of the compensation factor on logging steps; overall / many / medium /
few top-1 on evaluations). TensorBoard and Weights & Biases are optional extras (``pip install sage-lt[tensorboard]`` / ``[wandb]``),
imported only when asked for; wandb honours ``WANDB_MODE=offline``. Every tracker writes under
the run directory (``RUN_DIR/tensorboard``, ``RUN_DIR/metrics.csv``, ``RUN_DIR/wandb``).
"""

from __future__ import annotations

import csv
import importlib
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from sage_cli.errors import SageError
from sage_cli.train.loop import StepInfo, TrainHooks

TRACKERS = ("tensorboard", "wandb", "csv")
EVAL_KEYS = ("top1", "many", "medium", "few")


class Tracker(Protocol):
    def log(self, step: int, values: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def step_values(info: StepInfo) -> dict[str, float]:
    """``train/loss``, ``train/lr``, ``train/images_per_s`` and, with a compensated loss, the summary of
    its factor delta (``compensation/mean``, ``/std``, ``/min``, ``/max``, ``/many``, ``/medium``,
    ``/few``) of a logging step (other steps: none)."""
    if info.loss is None:
        return {}
    values = {"train/loss": info.loss, "train/lr": info.lr, "train/images_per_s": info.images_per_s,
              **{f"compensation/{k}": v for k, v in (info.compensation or {}).items()}}
    return {k: float(v) for k, v in values.items() if v is not None}


def eval_values(entry: dict[str, Any]) -> dict[str, float]:
    """``SPLIT/top1``, ``SPLIT/many`` ... of an evaluation record (a group without images is left out)."""
    split = entry.get("split") or "val"
    return {f"{split}/{k}": float(entry[k]) for k in EVAL_KEYS if entry.get(k) is not None}


class CsvTracker:
    """``RUN_DIR/metrics.csv``: one row per logged step, a column per value (step first)."""

    def __init__(self, out: Path) -> None:
        self.path = out / "metrics.csv"
        self.rows: list[dict[str, float]] = []

    def log(self, step: int, values: dict[str, float]) -> None:
        self.rows.append({"step": step, **values})
        self.write()  # the whole file each time: a run cut off keeps every row logged so far

    def write(self) -> None:
        from sage_cli.artifacts import atomic_path

        columns = ["step", *sorted({k for row in self.rows for k in row} - {"step"})]
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)

    def close(self) -> None:
        pass


class TensorBoardTracker:
    """TensorBoard event files in ``RUN_DIR/tensorboard`` (``tensorboard --logdir runs``)."""

    def __init__(self, out: Path) -> None:
        module = _import_optional("torch.utils.tensorboard", "tensorboard", "tensorboard")
        self.writer = module.SummaryWriter(log_dir=str(out / "tensorboard"))

    def log(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """A Weights & Biases run (project ``$WANDB_PROJECT`` or ``sage``; ``WANDB_MODE=offline`` works offline)."""

    def __init__(self, out: Path, config: dict[str, Any]) -> None:
        wandb = _import_optional("wandb", "wandb", "wandb")
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "sage"), name=out.name, dir=str(out),
                              config=config, mode=os.environ.get("WANDB_MODE"))

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


def _import_optional(module: str, package: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SageError(f"--log {extra} needs the {package} package: pip install 'sage-lt[{extra}]'") from None


def check_tracker_names(names: Sequence[str]) -> tuple[str, ...]:
    """The ``--log`` values, each once, in order; an unknown name is a SageError listing the choices."""
    out: list[str] = []
    for name in names:
        if name not in TRACKERS:
            raise SageError(f"--log must be one of {', '.join(TRACKERS)}; got {name!r}")
        if name not in out:
            out.append(name)
    return tuple(out)


def build_trackers(names: Sequence[str], out: Path, config: dict[str, Any]) -> list[Tracker]:
    """One tracker per name (checked and imported before training starts)."""
    builders: dict[str, Callable[[], Tracker]] = {
        "csv": lambda: CsvTracker(out),
        "tensorboard": lambda: TensorBoardTracker(out),
        "wandb": lambda: WandbTracker(out, config),
    }
    out.mkdir(parents=True, exist_ok=True)
    return [builders[name]() for name in check_tracker_names(names)]


@contextmanager
def tracking_hooks(trackers: Sequence[Tracker], hooks: TrainHooks | None = None) -> Iterator[TrainHooks]:
    """``hooks`` with every tracker fed from on_step / on_eval as well; closes the trackers at the end."""
    base = hooks or TrainHooks()

    def on_step(info: StepInfo) -> None:
        values = step_values(info)
        if values:
            for tracker in trackers:
                tracker.log(info.step, values)
        if base.on_step is not None:
            base.on_step(info)

    def on_eval(entry: dict[str, Any]) -> None:
        for tracker in trackers:
            tracker.log(int(entry["step"]), eval_values(entry))
        if base.on_eval is not None:
            base.on_eval(entry)

    try:
        yield TrainHooks(on_start=base.on_start, on_step=on_step, on_eval=on_eval)
    finally:
        for tracker in trackers:
            tracker.close()
