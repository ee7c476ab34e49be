"""The train stage: SG-Adapter / LIFT / linear-probe fine-tuning of a frozen CLIP image tower.

Public API: :func:`run` with :class:`TrainConfig` (a method's, from :func:`resolve`, or from
``sage train``'s flat options by :func:`build_train_config`; a run's own by :func:`read_config`)
returning :class:`TrainResult`; :func:`load_trained_classifier` for
the stages that evaluate a run. :class:`TrainingInterrupted` (a SageError) is raised when a
stop signal ended a run after writing its checkpoint.
"""

from sage_cli.methods import resolve
from sage_cli.train.config import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    build_train_config,
    parse_blocks,
    read_config,
)
from sage_cli.train.core import ADAPTER, TrainResult, run
from sage_cli.train.faults import TrainingInterrupted
from sage_cli.train.loop import METRICS, StepInfo, TrainHooks
from sage_cli.train.restore import load_trained_classifier

__all__ = [
    "ADAPTER",
    "METRICS",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "StepInfo",
    "TrainConfig",
    "TrainHooks",
    "TrainResult",
    "TrainingInterrupted",
    "build_train_config",
    "load_trained_classifier",
    "parse_blocks",
    "read_config",
    "resolve",
    "run",
]
