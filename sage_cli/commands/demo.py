"""`sage demo`: prepare -> encode-text -> train (linear, lift, sage) -> report on the shapes world."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from sage_cli.commands._common import device_option, handle_errors
from sage_cli.console import console, print_result
from sage_cli.methods import DEMO_METHODS


@handle_errors
def command(
    out: Path = typer.Option(Path("sage-demo"), "--out", "-o", help="Directory for every artifact of the demo."),
    methods: str = typer.Option(",".join(DEMO_METHODS), "--methods", help=f"Comma-separated: {', '.join(DEMO_METHODS)}."),
    epochs: int = typer.Option(8, "--epochs", help="Training epochs per method."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per optimizer step."),
    seed: int = typer.Option(0, "--seed", help="Seed of the data and of training."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Cap optimizer steps per method (smoke runs)."),
    device: str = device_option(),
    force: bool = typer.Option(False, "--force", help="Redo every stage, overwriting --out."),
) -> None:
    """Run the whole pipeline on the embedded Shapes-LT world and print the many/medium/few table."""
    from sage_cli.commands.report import result_line, summary_table
    from sage_cli.commands.train import progress_bar
    from sage_cli.demo import DemoConfig, run

    config = DemoConfig(out=out, methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
                        epochs=epochs, batch_size=batch_size, seed=seed, max_steps=max_steps,
                        device=device, force=force)
    started = time.perf_counter()

    def on_stage(name: str, detail: str) -> None:
        console.rule(f"[bold]{name}[/] · {detail}", align="left")

    with progress_bar(quiet=False, summary=False) as hooks:  # --quiet hides it (console.quiet)
        result = run(config, on_stage=on_stage, hooks=hooks)
    console.print(summary_table(result.report))
    print_result(result_line(result.report_dir, result.report))
    console.print(f"report: {result.report_dir / 'report.html'}  (tables: {result.report_dir / 'report.md'})",
                  soft_wrap=True)
    console.print(f"demo finished in {time.perf_counter() - started:.0f} s", style="dim")
