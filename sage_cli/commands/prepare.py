"""`sage prepare`: long-tailed manifests and class priors."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from sage_cli.commands._common import handle_errors
from sage_cli.console import console


@handle_errors
def command(
    dataset: str = typer.Argument(..., help="synthetic or shapes-lt."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for manifest.parquet, classes.parquet, prepare.json."),
    root: Path | None = typer.Option(None, "--root", help="Dataset root (not used by generated datasets)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated images."),
    imbalance_ratio: float | None = typer.Option(None, "--imbalance-ratio", help="Largest / smallest class count."),
    many_threshold: int = typer.Option(100, "--many-threshold", help="many: more training images than this."),
    few_threshold: int = typer.Option(20, "--few-threshold", help="few: fewer training images than this."),
    force: bool = typer.Option(False, "--force", help="Overwrite a preparation of other inputs in --out."),
    as_json: bool = typer.Option(False, "--json", help="Print prepare.json to stdout instead of a summary."),
) -> None:
    """Write the manifest, class table (counts, priors, many/medium/few) and record of a dataset."""
    from sage_cli.prepare import PrepareConfig, run

    result = run(PrepareConfig(dataset=dataset, out=out, root=root, seed=seed, imbalance_ratio=imbalance_ratio,
                               many_threshold=many_threshold, few_threshold=few_threshold, force=force))
    record = result.record
    if as_json:
        typer.echo(json.dumps(record, indent=2))
        return
    if result.skipped:
        console.print(f"{out} already holds this preparation; nothing to do", soft_wrap=True)
    table = Table(title=f"{record['dataset']}: {record['num_classes']} classes")
    for col in ("train", "val", "test", "max", "min", "imbalance", "many/medium/few"):
        table.add_column(col, justify="right")
    g = record["group_counts"]
    table.add_row(*(str(record["counts"][s]) for s in ("train", "val", "test")), str(record["max_count"]),
                  str(record["min_count"]), f"{record['max_count'] / record['min_count']:.0f}",
                  f"{g['many']}/{g['medium']}/{g['few']}")
    console.print(table)
