"""Experiment tracking for ``sage train --log tensorboard|wandb|csv``: the metrics.jsonl records, live.

:func:`check_trackers` checks the names and imports the optional packages before anything is
written; :func:`tracking_hooks` opens one :class:`Tracker` per name when training starts (inside the
run directory's lock, once the run knows the step it starts after) and feeds them from the
trainer's :class:`TrainHooks` (the same values that go to metrics.jsonl: loss, learning rate,
images/s and the summary of the compensation factor on logging steps; overall / many / medium /
few top-1 on evaluations). TensorBoard and Weights & Biases are optional extras (``pip install
sage-lt[tensorboard]`` / ``[wandb]``), imported only when asked for; wandb honours
``WANDB_MODE=offline``. Every tracker writes under the run directory (``RUN_DIR/tensorboard``,
``RUN_DIR/metrics.csv``, ``RUN_DIR/wandb``).

A resumed run continues each tracker where its checkpoint left off: the CSV is rebuilt from
metrics.jsonl (which the resume has cut back to the checkpoint), TensorBoard purges the points
after the checkpoint step, and W&B continues the run whose id ``RUN_DIR/wandb/sage_run.json`` holds.
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sage_cli.config import choice_message
from sage_cli.errors import SageError
from sage_cli.train.loop import METRICS, StepInfo, TrainHooks

TRACKERS = ("tensorboard", "wandb", "csv")
EVAL_KEYS = ("top1", "many", "medium", "few")
# the package each optional tracker imports, and the pip extra that installs it
OPTIONAL = {"tensorboard": ("torch.utils.tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}
WANDB_RUN = "sage_run.json"  # in RUN_DIR/wandb: the id of the W&B run that a resume continues


class Tracker(Protocol):
    def log(self, step: int, values: dict[str, float]) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RunStart:
    """Where the trackers of a run start: its directory, the step it starts after, whether it resumes."""

    out: Path
    step: int = 0  # the global step of the checkpoint a resume starts from (0: a fresh run)
    resumed: bool = False
    config: dict[str, Any] | None = None


def train_values(loss: float, lr: float | None, images_per_s: float | None,
                 compensation: dict[str, float] | None) -> dict[str, float]:
    """``train/loss``, ``train/lr``, ``train/images_per_s`` and the ``compensation/...`` summary."""
    values = {"train/loss": loss, "train/lr": lr, "train/images_per_s": images_per_s,
              **{f"compensation/{k}": v for k, v in (compensation or {}).items()}}
    return {k: float(v) for k, v in values.items() if v is not None}


def step_values(info: StepInfo) -> dict[str, float]:
    """``train/loss``, ``train/lr``, ``train/images_per_s`` and, with a compensated loss, the summary of
    its factor delta (``compensation/mean``, ``/std``, ``/min``, ``/max``, ``/many``, ``/medium``,
    ``/few``) of a logging step (other steps: none)."""
    if info.loss is None:
        return {}
    return train_values(info.loss, info.lr, info.images_per_s, info.compensation)


def eval_values(entry: dict[str, Any]) -> dict[str, float]:
    """``SPLIT/top1``, ``SPLIT/many`` ... of an evaluation record (a group without images is left out)."""
    split = entry.get("split") or "val"
    return {f"{split}/{k}": float(entry[k]) for k in EVAL_KEYS if entry.get(k) is not None}


def record_values(entry: dict[str, Any]) -> dict[str, float]:
    """The tracker values of one metrics.jsonl record (a train or an eval entry)."""
    if entry.get("kind") == "eval":
        return eval_values(entry)
    return train_values(entry["loss"], entry.get("lr"), entry.get("images_per_s"), entry.get("compensation"))


def load_logged_rows(path: Path) -> list[dict[str, float]]:
    """One row (``step`` and its values) per record of ``metrics.jsonl``, in order; none when it is missing."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill (a resume drops it from the file too)
        if isinstance(entry, dict) and entry.get("kind") in ("train", "eval"):
            rows.append({"step": entry["step"], **record_values(entry)})
    return rows


class CsvTracker:
    """``RUN_DIR/metrics.csv``: one row per logged step, a column per value (step first).

    It starts from the rows of ``metrics.jsonl`` (none in a fresh run; a resumed run's records up to
    its checkpoint), so the file always holds every record of the run once.
    """

    def __init__(self, start: RunStart) -> None:
        self.path = start.out / "metrics.csv"
        self.rows = load_logged_rows(start.out / METRICS)
        if self.rows or self.path.exists():
            self.write()  # a resume drops the rows a killed run wrote after its checkpoint

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
    """TensorBoard event files in ``RUN_DIR/tensorboard`` (``tensorboard --logdir runs``).

    A resumed run purges the points after its checkpoint step (TensorBoard's ``purge_step``): a run
    killed at step T+X and resumed from T shows each step once.
    """

    def __init__(self, start: RunStart) -> None:
        module = _import_optional("tensorboard")
        purge_step = start.step + 1 if start.resumed else None
        self.writer = module.SummaryWriter(log_dir=str(start.out / "tensorboard"), purge_step=purge_step)

    def log(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """A Weights & Biases run (project ``$WANDB_PROJECT`` or ``sage``; ``WANDB_MODE=offline`` works offline).

    The run is named by the run directory's last two components (``s0/lift``); its id is kept in
    ``RUN_DIR/wandb/sage_run.json`` so that ``--resume`` continues the same W&B run.
    """

    def __init__(self, start: RunStart) -> None:
        wandb = _import_optional("wandb")
        run_id = (load_wandb_run_id(start.out) if start.resumed else None) or uuid.uuid4().hex[:12]
        save_wandb_run_id(start.out, run_id)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "sage"), name=wandb_run_name(start.out),
                              id=run_id, resume="allow", dir=str(start.out), config=start.config,
                              mode=os.environ.get("WANDB_MODE"))

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


def wandb_run_name(out: Path) -> str:
    """``PARENT/NAME`` of the run directory (``runs/s0/lift`` -> ``s0/lift``): seeds of a method differ."""
    out = out.resolve()
    return f"{out.parent.name}/{out.name}" if out.parent.name else out.name


def load_wandb_run_id(out: Path) -> str | None:
    """The W&B run id an earlier start of this run directory saved, or None (none, or unreadable)."""
    try:
        run_id = json.loads((out / "wandb" / WANDB_RUN).read_text()).get("id")
    except (OSError, ValueError, AttributeError):
        return None
    return run_id if isinstance(run_id, str) and run_id else None


def save_wandb_run_id(out: Path, run_id: str) -> None:
    from sage_cli.artifacts import write_bytes_atomic

    write_bytes_atomic(out / "wandb" / WANDB_RUN, (json.dumps({"id": run_id}) + "\n").encode())


def _import_optional(name: str) -> Any:
    module, extra = OPTIONAL[name]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SageError(f"--log {name} needs the {extra} package: pip install 'sage-lt[{extra}]'") from None


def check_tracker_names(names: Sequence[str]) -> tuple[str, ...]:
    """The ``--log`` values, each once, in order; an unknown name is a SageError listing the choices."""
    out: list[str] = []
    for name in names:
        if name not in TRACKERS:
            raise SageError(choice_message("--log", name, TRACKERS))
        if name not in out:
            out.append(name)
    return tuple(out)


def check_trackers(names: Sequence[str]) -> tuple[str, ...]:
    """:func:`check_tracker_names`, and each optional package imported: a refusal before anything is written."""
    checked = check_tracker_names(names)
    for name in checked:
        if name in OPTIONAL:
            _import_optional(name)
    return checked


def build_trackers(names: Sequence[str], start: RunStart) -> list[Tracker]:
    """One tracker per name, started at ``start``."""
    builders: dict[str, Callable[[RunStart], Tracker]] = {
        "csv": CsvTracker, "tensorboard": TensorBoardTracker, "wandb": WandbTracker,
    }
    start.out.mkdir(parents=True, exist_ok=True)
    return [builders[name](start) for name in check_tracker_names(names)]


@contextmanager
def tracking_hooks(names: Sequence[str], out: Path, config: dict[str, Any],
                   hooks: TrainHooks | None = None) -> Iterator[TrainHooks]:
    """``hooks`` with every tracker of ``names`` fed from on_step / on_eval as well.

    The trackers open on on_start (a run that finds nothing to do opens none) and close at the end.
    """
    base = hooks or TrainHooks()
    trackers: list[Tracker] = []

    def on_start(info: dict[str, Any]) -> None:
        start = RunStart(out, int(info.get("start_step") or 0), info.get("resumed_from") is not None, config)
        trackers.extend(build_trackers(names, start))
        if base.on_start is not None:
            base.on_start(info)

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
        yield TrainHooks(on_start=on_start, on_step=on_step, on_eval=on_eval)
    finally:
        for tracker in trackers:
            tracker.close()
