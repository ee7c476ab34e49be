"""`sage predict`: classify image files with a trained run or its export; top-k class names and scores."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from sage_cli.commands._common import device_option, handle_errors
from sage_cli.console import console, escape, print_result


@handle_errors
def command(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR|EXPORT_DIR", help="Run directory written by sage "
                                   "train, or an export directory written by sage export.", show_default=False),
    images: list[Path] = typer.Argument(None, metavar="IMAGE|DIR", help="Image files, or directories searched "
                                        "for images.", show_default=False),
    top_k: int = typer.Option(5, "--top-k", "-k", help="Classes to list per image."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per forward pass."),
    workers: int = typer.Option(0, "--workers", help="DataLoader worker processes (0: load in the main process)."),
    device: str = device_option(),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="Checkpoint to use instead of "
                                           "the run's kept weights (train.json's kept).", show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Print the predictions as JSON to stdout."),
) -> None:
    """Top-k classes with softmax scores for each image, with the run's own preprocessing."""
    from sage_cli.predict import PredictConfig, run
    from sage_cli.report.markdown import format_weights

    config = PredictConfig(run=run_dir, images=tuple(images or ()), top_k=top_k, batch_size=batch_size,
                           num_workers=workers, device=device, checkpoint=checkpoint)
    with Progress(TextColumn("classifying"), BarColumn(), MofNCompleteColumn(), console=console, transient=True,
                  disable=as_json) as bar:
        task = bar.add_task("classifying", total=None)
        result = run(config, progress=lambda done, total: bar.update(task, completed=done, total=total))
    if as_json:
        typer.echo(json.dumps(result.predictions, indent=2))  # stdout, machine-readable
        return
    console.print(predictions_table(result.predictions))
    console.print(f"weights: {format_weights(result.weights)}", markup=False, highlight=False)
    for entry in result.predictions:
        best = entry["top"][0]
        print_result(f"{entry['image']}\t{best['name']}\t{best['score']:.4f}")


def predictions_table(predictions: list[dict]) -> Table:
    """One row per image: the image, then each of the top-k classes with its score."""
    table = Table(title=f"{len(predictions)} image{'s' if len(predictions) != 1 else ''}")
    table.add_column("image", overflow="fold")
    k = max(len(p["top"]) for p in predictions)
    for i in range(k):
        table.add_column(f"#{i + 1}")
    for entry in predictions:
        table.add_row(escape(entry["image"]), *(f"{escape(c['name'])} [dim]{c['score']:.3f}[/]" for c in entry["top"]))
    return table
