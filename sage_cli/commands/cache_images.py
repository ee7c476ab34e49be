"""`sage cache-images`: decode a prepared dataset's images once into a memory-mapped uint8 cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from sage_cli.commands._common import handle_errors
from sage_cli.console import console, escape


@handle_errors
def command(
    prepared: Path = typer.Option(..., "--prepared", "-p", help="Prepared dataset directory (from sage prepare)."),
    model: str = typer.Option(..., "--model", "-m", help="open_clip model whose eval crop the cache stores."),
    pretrained: str = typer.Option(..., "--pretrained", help="open_clip tag, checkpoint file or none (its preprocessing)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory for the image cache."),
    short_side: int = typer.Option(320, "--short-side", help="Train view: shrink images to this shorter side (px), never enlarge."),
    workers: int = typer.Option(0, "--workers", help="Decoding processes (0: this one)."),
    eval_resize: str = typer.Option("clip", "--eval-resize", help="Eval view's resize: lift (size * 8 // 7, then the "
                                    "crop) or clip (open_clip's); as the runs that read the cache."),
    interpolation: str = typer.Option("model", "--interpolation", help="model (its own, bicubic for CLIP), bilinear "
                                      "(LIFT's) or bicubic; as the runs that read the cache."),
    force: bool = typer.Option(False, "--force", help="Overwrite a cache of other inputs in --out."),
    as_json: bool = typer.Option(False, "--json", help="Print image_cache.json to stdout instead of a summary."),
) -> None:
    """Decode every image once (train view: shrunk; eval view: the model's eval crop) for fast training."""
    from sage_cli.image_cache import CacheImagesConfig, run

    config = CacheImagesConfig(prepared=prepared, out=out, model=model, pretrained=pretrained,
                               short_side=short_side, workers=workers, force=force, eval_resize=eval_resize,
                               interpolation=interpolation)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True, disable=as_json) as bar:
        tasks: dict[str, Any] = {}

        def update(view: str, done: int, total: int) -> None:
            if view not in tasks:
                tasks[view] = bar.add_task(f"{view} view", total=total)
            bar.update(tasks[view], completed=done)

        result = run(config, progress=update)
    if as_json:
        typer.echo(json.dumps(result.record, indent=2))
        return
    if result.skipped:
        console.print(f"{escape(out)} already holds this image cache; nothing to do (pass --force to redo it)", soft_wrap=True)
        return
    images, sizes = result.record["images"], result.record["bytes"]
    console.print(f"image cache in {escape(out)}: train view {images['train']} images ({sizes['train'] / 1e9:.2f} GB), "
                  f"eval view {images['eval']} images ({sizes['eval'] / 1e9:.2f} GB)", soft_wrap=True)
