"""`sage pretrain-toy`: contrastively pretrain the toy CLIP on a pretraining world of the shapes world."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from sage_cli.commands._common import handle_errors
from sage_cli.console import console, escape

World = Literal["clean", "open"]  # sage_cli.world.pretrain.WORLDS (a test checks them)


@handle_errors
def command(
    out: Path = typer.Option(..., "--out", "-o", help="Output directory for sage_toy.safetensors and pretrain.json."),
    steps: int = typer.Option(4000, "--steps", help="AdamW steps (batch 128 each)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the init and of the image stream."),
    batch_size: int = typer.Option(128, "--batch-size", help="Image-caption pairs per step."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate (cosine schedule)."),
    device: str = typer.Option("cpu", "--device", help="Torch device, e.g. cpu or cuda."),
    threads: int = typer.Option(2, "--threads", help="Torch CPU threads (fixed for repeatability)."),
    eval_per_class: int = typer.Option(20, "--eval-per-class", help="Held-out images per class for zero-shot."),
    world: World = typer.Option("clean", "--world", help="Pretraining world: clean (world v1) or open (v2: varied "
                              "backgrounds, attribute captions)."),
    init: Path | None = typer.Option(None, "--init", help="Start from these sage-toy weights (default: random init)."),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", help="Save a resumable checkpoint every N steps "
                                         "(0: never); a re-run resumes from it."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing run in --out."),
) -> None:
    """Pretrain the toy open_clip model (sage-toy) contrastively on balanced shapes of one world."""
    from sage_cli.world.pretrain import PretrainConfig, run

    config = PretrainConfig(
        out=out, steps=steps, seed=seed, batch_size=batch_size, lr=lr, device=device, threads=threads,
        eval_per_class=eval_per_class, force=force, world=world, init=init, checkpoint_every=checkpoint_every,
    )
    with Progress(
        TextColumn("pretrain"), BarColumn(), TextColumn("{task.completed}/{task.total} loss {task.fields[loss]}"),
        TimeRemainingColumn(), console=console, transient=True,
    ) as bar:
        task = bar.add_task("pretrain", total=steps, loss="-")
        result = run(config, progress=lambda step, loss: bar.update(task, completed=step, loss=f"{loss:.3f}"))
    if result.skipped:
        console.print(f"{escape(out)} already holds this run; nothing to do (pass --force to redo it)")
        return
    table = Table(title=f"sage-toy after {steps} steps ({result.seconds:.0f} s)")
    table.add_column("domain")
    table.add_column("zero-shot top-1 %", justify="right")
    for domain, accuracy in result.zero_shot.items():
        table.add_row(escape(domain), f"{accuracy:.1f}")
    console.print(table)
    console.print(f"weights: {escape(result.weights)}", soft_wrap=True)
