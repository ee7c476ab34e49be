"""`sage train`: fine-tune adapters + head of a frozen CLIP on a prepared long-tailed dataset."""

from __future__ import annotations

import inspect
import json
import os
import shlex
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from sage_cli.commands._common import explicit_params, handle_errors
from sage_cli.config import load_yaml_mapping, merge_with_preset
from sage_cli.console import console, err_console

# Options a preset may not set: where outputs go and how this invocation behaves.
NOT_IN_PRESETS = ("config", "out", "force", "resume", "as_json")


@handle_errors
def command(
    ctx: typer.Context,
    prepared: Path = typer.Option(..., "--prepared", "-p", help="Prepared dataset directory (sage prepare)."),
    text_cache: Path = typer.Option(..., "--text-cache", "-t", help="Text cache directory (sage encode-text)."),
    image_cache: Path | None = typer.Option(None, "--image-cache", help="Decoded-image cache (sage cache-images): the fast input path."),
    feature_cache: Path | None = typer.Option(None, "--feature-cache", help="Directory of cached frozen features (linear with --no-augment): computed once, then read."),
    method: str = typer.Option(..., "--method", help="sage, lift or linear."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory to write."),
    config: Path | None = typer.Option(None, "--config", help="Preset YAML supplying defaults; explicit flags win."),
    model: str | None = typer.Option(None, "--model", "-m", help="open_clip model (default: the text cache's)."),
    pretrained: str | None = typer.Option(None, "--pretrained", help="Tag, checkpoint file or none (default: the text cache's)."),
    guidance: bool | None = typer.Option(None, "--guidance/--no-guidance", help="Text guidance in the adapters (sage only; default on)."),
    compensation: str | None = typer.Option(None, "--compensation", help="semantic, count or none (default: semantic for sage, none for lift/linear)."),
    tau: float = typer.Option(1.0, "--tau", help="Scale of log(prior) in the logit adjustment."),
    lam: float = typer.Option(0.25, "--lam", help="lambda: scale of the compensation factor."),
    kappa: float = typer.Option(16.0, "--kappa", help="Pseudo-count of the text anchor."),
    delta_max: float = typer.Option(5.0, "--delta-max", help="Upper clamp of the compensation factor."),
    bottleneck: int | None = typer.Option(None, "--bottleneck", help="Adapter width (default: LIFT's rule)."),
    blocks: str | None = typer.Option(None, "--blocks", "--adapter-blocks", help="Blocks with adapters, e.g. 0-5 or 0,2,4 (default: all)."),
    guidance_tokens: int | None = typer.Option(None, "--guidance-tokens", help="Guidance tokens M (default: one per class)."),
    activation: str = typer.Option("relu", "--activation", help="Adapter activation: relu or gelu."),
    attn_heads: int = typer.Option(1, "--attn-heads", help="Heads of the guidance attention (must divide --bottleneck)."),
    logit_scale: float = typer.Option(25.0, "--logit-scale", help="s of the cosine head."),
    ema: float = typer.Option(0.9, "--ema", help="Momentum of the compensation statistics (class means, spread)."),
    epochs: int = typer.Option(10, "--epochs", help="Training epochs."),
    lr: float = typer.Option(0.01, "--lr", help="Peak learning rate (SGD)."),
    momentum: float = typer.Option(0.9, "--momentum", help="SGD momentum."),
    weight_decay: float = typer.Option(5e-4, "--weight-decay", help="SGD weight decay."),
    warmup_epochs: float = typer.Option(1.0, "--warmup-epochs", help="Linear warm-up length in epochs."),
    warmup_steps: int | None = typer.Option(None, "--warmup-steps", help="Warm-up length in steps (wins over --warmup-epochs)."),
    batch_size: int = typer.Option(128, "--batch-size", help="Images per optimizer step."),
    micro_batch_size: int | None = typer.Option(None, "--micro-batch-size", help="Images per forward pass (gradient accumulation)."),
    num_workers: int = typer.Option(4, "--num-workers", help="DataLoader worker processes."),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="Random crop + flip in training."),
    eval_split: str | None = typer.Option(None, "--eval-split", help="Split to validate on (default: val, else test)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip unreadable images (listed in train.json) instead of stopping."),
    seed: int = typer.Option(0, "--seed", help="Seed of the init, the data order and the augmentation."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Stop after this many optimizer steps (smoke runs)."),
    eval_every: int = typer.Option(1, "--eval-every", help="Validate every N epochs (0: only at the end)."),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", help="Also checkpoint every N steps (0: each epoch only)."),
    log_every: int = typer.Option(10, "--log-every", help="Write train metrics every N steps."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    force: bool = typer.Option(False, "--force", help="Overwrite another run in --out."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out from its last checkpoint."),
    as_json: bool = typer.Option(False, "--json", help="Print train.json to stdout instead of a summary."),
) -> None:
    """Train SG-Adapter (sage), AdaptFormer (lift) or a linear head on a frozen CLIP.

    Under torchrun (``torchrun --nproc-per-node N -m sage_cli train ...``) it trains data-parallel;
    only rank 0 prints and writes.
    """
    from sage_cli.train import build_train_config, run
    from sage_cli.train.distributed import is_main_process
    from sage_cli.train.faults import TrainingInterrupted

    options = resolve_options(ctx, config)
    train_config = build_train_config(options)
    main = is_main_process()
    try:
        with progress_bar(quiet=as_json or not main) as hooks:
            result = run(train_config, hooks)
    except TrainingInterrupted as exc:
        if main:
            err_console.print(f"[yellow]{exc}[/]\nresume with:\n  {resume_command(sys.argv)}",
                              soft_wrap=True, highlight=False)
        raise typer.Exit(130) from None
    if not main:
        return
    if as_json:
        typer.echo(json.dumps(result.record, indent=2))
    elif result.skipped:
        console.print(f"{out} already holds this run; nothing to do (pass --force to redo it)", soft_wrap=True)
    else:
        console.print(summary_table(result.record))


def resolve_options(ctx: typer.Context, preset_path: Path | None) -> dict[str, Any]:
    """Explicit flags over the preset over the built-in defaults."""
    explicit = {name: ctx.params[name] for name in explicit_params(ctx)}
    defaults = {k: v for k, v in ctx.params.items() if k not in NOT_IN_PRESETS}
    preset = load_yaml_mapping(preset_path) if preset_path is not None else None
    merged = merge_with_preset(explicit, defaults, preset, preset_path)
    for name in ("out", "force", "resume"):
        merged[name] = ctx.params[name]
    return merged


def resume_command(argv: Sequence[str], under_torchrun: bool | None = None) -> str:
    """The command line that continues this run: the same arguments, ``--force`` dropped, ``--resume`` added."""
    if under_torchrun is None:
        under_torchrun = "TORCHELASTIC_RUN_ID" in os.environ
    program = Path(argv[0]).name if argv else "sage"
    if under_torchrun:
        prefix = "torchrun [the same torchrun options] -m sage_cli"
    elif program in ("__main__.py", "sage_cli"):
        prefix = "python -m sage_cli"
    else:
        prefix = shlex.quote(program)
    args = [a for a in argv[1:] if a not in ("--force", "--resume")]
    return " ".join([prefix, *(shlex.quote(a) for a in args), "--resume"])


def option_defaults() -> dict[str, Any]:
    """Every option's built-in default (None for required ones), from this command's signature."""
    defaults = {}
    for name, param in inspect.signature(command).parameters.items():
        info = param.default
        if isinstance(info, typer.models.OptionInfo):
            defaults[name] = None if info.default is ... else info.default
    return defaults


@contextmanager
def progress_bar(quiet: bool, summary: bool = True) -> Iterator[Any]:
    """TrainHooks that drive a Rich progress bar (loss, images/s) and print the start summary.

    One bar serves several runs in a row (the demo): each run's start resets it. ``summary`` False
    leaves out the start summary and the eval lines, keeping only the bar.
    """
    from sage_cli.train import StepInfo, TrainHooks

    bar = Progress(
        TextColumn("[bold]train[/] epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  {task.fields[speed]} img/s"), TimeRemainingColumn(),
        console=console, transient=True, disable=quiet or console.quiet,
    )
    task: list[int] = []

    def on_start(info: dict[str, Any]) -> None:
        if summary and not quiet:
            console.print(start_summary(info), soft_wrap=True)
        fields = {"total": info["total_steps"], "completed": info["start_step"], "epoch": 1, "loss": "-", "speed": "-"}
        if task:
            bar.reset(task[0], **fields)
        else:
            task.append(bar.add_task("train", **fields))

    def on_step(step: StepInfo) -> None:
        fields: dict[str, Any] = {"completed": step.step, "epoch": step.epoch + 1}
        if step.loss is not None:
            fields.update(loss=f"{step.loss:.4f}", speed=f"{step.images_per_s:.0f}")
        bar.update(task[0], **fields)

    def on_eval(entry: dict[str, Any]) -> None:
        bar.console.print(f"eval step {entry['step']}: top-1 {_pct(entry['top1'])} ({entry['split']}; "
                          f"many {_pct(entry['many'])}, medium {_pct(entry['medium'])}, few {_pct(entry['few'])})")

    with bar:
        yield TrainHooks(on_start=on_start, on_step=on_step, on_eval=on_eval if summary and not quiet else None)


def start_summary(info: dict[str, Any]) -> str:
    pre = info["preprocessing"]
    lines = [
        f"trainable parameters: {info['trainable_params']:,} of {info['total_params']:,} "
        f"({info['classifier']['method']}, {info['device']})",
        f"preprocessing: {pre['interpolation']} interpolation; train: {pre['train']}; eval: {pre['eval']}",
        f"{info['train_images']} training images, {info['steps_per_epoch']} steps per epoch, "
        f"{info['total_steps']} steps in all",
    ]
    if info.get("resumed_from"):
        lines.append(f"resuming from {info['resumed_from']} (step {info['start_step']})")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def summary_table(record: dict[str, Any]) -> Table:
    table = Table(title=f"sage train: {record['method']} on {record['model']['model']}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("trainable parameters", f"{record['trainable_params']:,}")
    table.add_row("steps (epochs completed)", f"{record['steps']} ({record['epochs_completed']})")
    table.add_row("speed", f"{record['images_per_s']:.1f} images/s on {record['device']} ({record['precision']})")
    table.add_row("peak memory", f"{record['peak_memory']['bytes'] / 2**20:.0f} MiB ({record['peak_memory']['kind']})")
    table.add_row("wall time", f"{record['wall_time_s']:.1f} s")
    final = record.get("final_eval")
    if final:
        table.add_row(f"top-1 ({final['split']})", _pct(final["top1"]))
        for group in ("many", "medium", "few"):
            table.add_row(f"  {group}", _pct(final[group]))
    return table
