"""`sage demo`: the whole pipeline on the embedded shapes world, on a laptop CPU in minutes.

prepare (Shapes-LT) -> encode-text (the shipped toy CLIP) -> train (linear, lift, sage) ->
report (with the zero-shot row). Every stage is the same ``run`` the CLI calls, so a re-run
skips what is already done and the artifacts can be inspected or extended by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sage_cli.config import check_batch_size, check_seed
from sage_cli.errors import SageError
from sage_cli.methods import DEMO_METHODS
from sage_cli.outdir import check_output_dir

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    """Where the demo writes and how long it trains."""

    out: Path = Path("sage-demo")
    methods: tuple[str, ...] = DEMO_METHODS
    epochs: int = 8
    batch_size: int = 64
    lr: float = 0.03  # the preset's budget: lift within 2 points of 3x its epochs (instrument card, K10)
    augment: bool = False  # chosen by the balanced oracle's val accuracy (instrument card, K10)
    seed: int = 0
    max_steps: int | None = None
    device: str = "auto"
    num_workers: int = 0
    force: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        check_output_dir(self.out)  # the stages write below it
        bad = [m for m in self.methods if m not in DEMO_METHODS]
        if bad or not self.methods:
            raise SageError(f"--methods {','.join(self.methods)}: choose from {', '.join(DEMO_METHODS)}")
        if self.epochs < 1:
            raise SageError(f"--epochs must be >= 1; got {self.epochs}")
        check_batch_size("--batch-size", self.batch_size)  # before the first stage runs, not at train
        check_seed("--seed", self.seed)


@dataclass(frozen=True)
class DemoResult:
    out: Path
    report_dir: Path
    report: dict[str, Any]


# stage(name, detail) is called as each stage starts, for a front end's progress display.
StageCallback = Callable[[str, str], None]


def run(config: DemoConfig, on_stage: StageCallback | None = None, hooks: Any = None) -> DemoResult:
    """Run the four stages into ``config.out``; stages whose outputs match are skipped."""
    notify = on_stage or (lambda name, detail: None)
    prepared = config.out / "prepared"
    text = config.out / "text"
    notify("prepare", "Shapes-LT: long-tailed, world v3")
    prepare_world(prepared, config)
    notify("encode-text", "toy CLIP text tower")
    encode_world(prepared, text, config)
    runs = []
    for method in config.methods:
        notify("train", method)
        runs.append(_train(method, prepared, text, config, hooks))
    notify("report", "zero-shot + " + ", ".join(config.methods))
    report_dir = config.out / "report"
    report = _report(runs, prepared, text, report_dir, config)
    return DemoResult(out=config.out, report_dir=report_dir, report=report)


def prepare_world(out: Path, config: DemoConfig) -> None:
    """Shapes-LT (world v3, the default domain) prepared into ``out`` with the demo's seed (skipped when it is there)."""
    from sage_cli.prepare import PrepareConfig
    from sage_cli.prepare import run as prepare

    prepare(PrepareConfig(dataset="shapes-lt", out=out, seed=config.seed, force=config.force))


def encode_world(prepared: Path, out: Path, config: DemoConfig) -> None:
    """The toy CLIP's text cache of ``prepared`` in ``out``: LIFT's single template "a photo of a {}."
    (world v3's text; the 18-template ensemble reads worse on the toy text tower, docs/world.md)."""
    from sage_cli.encode_text import EncodeTextConfig
    from sage_cli.encode_text import run as encode
    from sage_cli.world import TOY_MODEL, TOY_WEIGHTS

    if not TOY_WEIGHTS.is_file():
        raise SageError(f"{TOY_WEIGHTS}: the shipped toy CLIP weights are missing; reinstall sage")
    encode(EncodeTextConfig(prepared=prepared, out=out, model=TOY_MODEL, pretrained=str(TOY_WEIGHTS),
                            templates="single", device=config.device, force=config.force))


def _train(method: str, prepared: Path, text: Path, config: DemoConfig, hooks: Any) -> Path:
    from sage_cli.train import build_train_config
    from sage_cli.train import run as train

    out = config.out / "runs" / method
    options = {
        "prepared": prepared, "text_cache": text, "out": out, "method": method,
        "epochs": config.epochs, "batch_size": config.batch_size, "lr": config.lr,
        "seed": config.seed, "max_steps": config.max_steps, "device": config.device,
        "num_workers": config.num_workers, "eval_every": 0, "force": config.force, "augment": config.augment,
    }
    if method == "linear" and not config.augment:
        # the head alone on the frozen tower's features, computed once (not once per epoch): a cache
        # location, not an input of the run (its record and weights are those of the uncached run)
        options["feature_cache"] = config.out / "features"
    train(build_train_config(options), hooks)
    return out


def _report(runs: list[Path], prepared: Path, text: Path, out: Path, config: DemoConfig) -> dict[str, Any]:
    from sage_cli.report import ReportConfig
    from sage_cli.report import run as report

    result = report(ReportConfig(out=out, runs=tuple(runs), zero_shot=prepared, text_cache=text,
                                 device=config.device, num_workers=config.num_workers, force=config.force))
    return result.report
