"""`sage prepare`: long-tailed manifests and class priors."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import typer
from rich.progress import Progress
from rich.table import Table

from sage_cli.commands._common import handle_errors
from sage_cli.console import console, escape, print_result

Domain = Literal["fine", "moderate", "hard", "v3"]  # sage_cli.world.shapes_lt.SHAPES_LT_DOMAINS (a test checks them)


@handle_errors
def command(
    dataset: str = typer.Argument(..., help="imagenet-lt, places-lt, inat2018, cifar100-lt, folder, csv, "
                                  "synthetic or shapes-lt (layouts: docs/datasets.md)."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for manifest.parquet, classes.parquet, prepare.json."),
    root: Path | None = typer.Option(None, "--root", help="Dataset root (the CSV file for csv; unused by generated sets)."),
    classnames: Path | None = typer.Option(None, "--classnames", help="Class names: '<wnid> <name>' or one name per line, in label order."),
    verify: Literal["exists", "decode"] = typer.Option("exists", "--verify", help="exists: every listed image is a file; decode: also decode each."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Drop missing/undecodable images (listed in OUT/dropped.csv) instead of failing."),
    imbalance_ratio: float | None = typer.Option(None, "--imbalance-ratio", help="Largest / smallest class count (cifar100-lt, shapes-lt: 100, shapes-lt --domain v3: 50; any value > 1; shapes-lt also 1: balanced)."),
    max_count: int | None = typer.Option(None, "--max-count", help="shapes-lt: training images of the most frequent class (default 300; --domain v3: 200)."),
    variant: int = typer.Option(0, "--variant", help="shapes-lt: world variant, the seed of which classes are frequent (apart from --seed)."),
    domain: Domain | None = typer.Option(None, "--domain", help="shapes-lt: v3 (world v3, the default: looks per class that the descriptions name, ImageNet-LT group sizes; docs/world.md), fine (world v2: mild textures, class shades), moderate (world v2, stronger textures) or hard (world v1's shifted domain)."),
    groups_from: Literal["ir100", "own"] | None = typer.Option(None, "--groups-from", help="cifar100-lt groups: ir100 (default, LIFT's 35/35/30) or own (this ratio's counts).", show_default=False),
    label_order: Literal["species", "category-id"] | None = typer.Option(None, "--label-order", help="inat2018 labels: species (default, LIFT's: the index of the species name in the sorted names) or category-id (the ids as written).", show_default=False),
    many_threshold: int = typer.Option(100, "--many-threshold", help="many: more training images than this."),
    few_threshold: int = typer.Option(20, "--few-threshold", help="few: fewer training images than this."),
    workers: int | None = typer.Option(None, "--workers", help="Threads for image checks and PNG writes (default: automatic)."),
    allow_outside_root: bool = typer.Option(False, "--allow-outside-root", help="Accept listed image paths that "
                                            "resolve outside the root (.., absolute paths, symlinks out)."),
    val_fraction: float | None = typer.Option(None, "--val-fraction", help="folder/csv without splits: val images per class, as a fraction (default 0.1; at least 1 where the class can spare it).", show_default=False),
    test_fraction: float | None = typer.Option(None, "--test-fraction", help="folder/csv without splits: test images per class, as a fraction (default 0.2).", show_default=False),
    val_per_class: int | None = typer.Option(None, "--val-per-class", help="folder/csv without splits: val images per class, as a count (instead of --val-fraction).", show_default=False),
    test_per_class: int | None = typer.Option(None, "--test-per-class", help="folder/csv without splits: test images per class, as a count (instead of --test-fraction).", show_default=False),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated images and of the split of a folder/csv without splits."),
    force: bool = typer.Option(False, "--force", help="Overwrite a preparation of other inputs in --out."),
    as_json: bool = typer.Option(False, "--json", help="Print prepare.json to stdout instead of a summary."),
) -> None:
    """Write the manifest, class table (counts, priors, many/medium/few) and record of a dataset."""
    from sage_cli.prepare import PrepareConfig, run
    from sage_cli.prepare.stratify import SplitSpec

    config = PrepareConfig(dataset=dataset, out=out, root=root, seed=seed, imbalance_ratio=imbalance_ratio,
                           many_threshold=many_threshold, few_threshold=few_threshold, force=force,
                           classnames=classnames, verify=verify, skip_bad=skip_bad, groups_from=groups_from,
                           label_order=label_order,
                           workers=workers, max_count=max_count, variant=variant, domain=domain,
                           allow_outside_root=allow_outside_root,
                           split=SplitSpec(val_fraction, test_fraction, val_per_class, test_per_class))
    with _progress(f"checking images ({verify})", quiet=as_json) as progress:
        result = run(config, progress=progress)
    if as_json:
        typer.echo(json.dumps(result.record, indent=2))
        return
    if result.skipped:
        console.print(f"{escape(out)} already holds this preparation; nothing to do", soft_wrap=True)
    console.print(_summary(result.record))
    record = result.record
    if record.get("layout"):
        console.print(escape(_describe_layout(record)), soft_wrap=True)
    print_result(f"{out}: {record['num_classes']} classes, " + " / ".join(
        f"{record['counts'][s]} {s}" for s in ("train", "val", "test")) + " images")


@contextlib.contextmanager
def _progress(label: str, quiet: bool) -> Iterator[Any]:
    """A Rich progress bar fed by ``(done, total)`` callbacks; silent under --json / --quiet."""
    with Progress(console=console, transient=True, disable=quiet or console.quiet or not console.is_terminal) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _describe_layout(record: dict[str, Any]) -> str:
    """``layout: ROOT/<class>/<image>; split here: stratified, seed 0, val_fraction 0.1, ...``."""
    split = record.get("split")
    if not split:
        return f"layout: {record['layout']} (its own splits)"
    return f"layout: {record['layout']}; split here: stratified, " + ", ".join(
        f"{k.replace('_', ' ')} {v}" for k, v in split.items())


def _summary(record: dict[str, Any]) -> Table:
    """Images per split, class counts, imbalance and classes per group."""
    table = Table(title=f"{escape(record['dataset'])}: {record['num_classes']} classes")
    for col in ("train", "val", "test", "max", "min", "imbalance", "many/medium/few"):
        table.add_column(col, justify="right")
    g = record["group_counts"]
    table.add_row(*(f"{record['counts'][s]:,}" for s in ("train", "val", "test")), f"{record['max_count']:,}",
                  f"{record['min_count']:,}", f"{record['max_count'] / record['min_count']:.0f}",
                  f"{g['many']}/{g['medium']}/{g['few']}")
    notes = []
    if record.get("groups_from"):
        notes.append("groups from the IR-100 counts (LIFT's convention)" if record["groups_from"] == "ir100"
                     else "groups from this ratio's own counts")
    if record.get("dropped"):
        notes.append(f"{record['dropped']:,} bad image(s) dropped (dropped.csv)")
    if record.get("warnings"):
        notes.append(f"{len(record['warnings'])} warning(s) in prepare.json")
    table.caption = "; ".join(notes) or None
    return table
