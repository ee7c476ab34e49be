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
from typing import Any, Literal, get_type_hints

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from sage_cli.commands._common import explicit_params, handle_errors
from sage_cli.config import coerce_preset, load_yaml_mapping, merge_with_preset
from sage_cli.console import console, err_console, escape, print_result
from sage_cli.methods import ActivationName as Activation
from sage_cli.methods import CompensationName, HeadInitName, HeadName, LossName, MethodName

# Options a preset may not set: where outputs go and how this invocation behaves.
NOT_IN_PRESETS = ("config", "out", "force", "resume", "as_json", "log")

EvalSplit = Literal["val", "test", "train"]
SamplerName = Literal["uniform", "class-aware"]

METHOD, LOSS, ADAPTER, OPTIM, DATA, RUN = "Method", "Loss", "Adapter", "Optimiser", "Data", "Run"


@handle_errors
def command(
    ctx: typer.Context,
    method: MethodName = typer.Option(..., "--method", help="What trains (docs/methods.md).", rich_help_panel=METHOD),
    model: str | None = typer.Option(None, "--model", "-m", help="open_clip model (default: the text cache's).", rich_help_panel=METHOD),
    pretrained: str | None = typer.Option(None, "--pretrained", help="Tag, checkpoint file or none (default: the text cache's).", rich_help_panel=METHOD),
    head: HeadName | None = typer.Option(None, "--head", help="Classifier head (default: the method's, cosine).", rich_help_panel=METHOD),
    head_init: HeadInitName | None = typer.Option(None, "--head-init", help="Initial head weights (default: the method's, text).", rich_help_panel=METHOD),
    head_init_shots: int = typer.Option(10, "--head-init-shots", help="Images per class for --head-init k-shot.", rich_help_panel=METHOD),
    logit_scale: float = typer.Option(25.0, "--logit-scale", help="s of the cosine head (and LDAM's margin scale).", rich_help_panel=METHOD),
    loss: LossName | None = typer.Option(None, "--loss", help="Training loss (default: the method's, la).", rich_help_panel=LOSS),
    compensation: CompensationName | None = typer.Option(None, "--compensation", help="Compensation of the LA family (default: the method's: semantic for sage, none otherwise).", rich_help_panel=LOSS),
    tau: float = typer.Option(1.0, "--tau", help="Scale of log(prior) in the logit adjustment.", rich_help_panel=LOSS),
    lam: float = typer.Option(0.25, "--lam", help="lambda: scale of the compensation factor.", rich_help_panel=LOSS),
    kappa: float = typer.Option(16.0, "--kappa", help="Pseudo-count of the text anchor.", rich_help_panel=LOSS),
    delta_max: float = typer.Option(5.0, "--delta-max", help="Upper clamp of the compensation factor.", rich_help_panel=LOSS),
    ema: float = typer.Option(0.9, "--ema", help="Momentum of the compensation statistics (class means, spread).", rich_help_panel=LOSS),
    focal_gamma: float = typer.Option(2.0, "--focal-gamma", help="gamma of the focal loss.", rich_help_panel=LOSS),
    ldam_margin: float = typer.Option(0.5, "--ldam-margin", help="Largest LDAM margin (on the cosine).", rich_help_panel=LOSS),
    cb_beta: float = typer.Option(0.9999, "--cb-beta", help="beta of the class-balanced loss.", rich_help_panel=LOSS),
    lade_weight: float = typer.Option(0.1, "--lade-weight", help="Weight of LADE's estimator term.", rich_help_panel=LOSS),
    lade_lambda: float = typer.Option(0.1, "--lade-lambda", help="LADE's ReMINE regulariser.", rich_help_panel=LOSS),
    text_align: float = typer.Option(0.0, "--text-align", help="beta of the text-alignment term: the adjusted CE of the frozen text classifier on the image features (LA family; 0: none).", rich_help_panel=LOSS),
    blocks: str | None = typer.Option(None, "--blocks", "--adapter-blocks", help="Vision blocks the PEFT module tunes, e.g. 0-5 or 0,2,4 (default: all).", rich_help_panel=ADAPTER),
    bottleneck: int | None = typer.Option(None, "--bottleneck", help="Adapter width / LoRA rank (default: LIFT's rule).", rich_help_panel=ADAPTER),
    prompt_tokens: int = typer.Option(10, "--prompt-tokens", help="Prompts per prompted block (VPT).", rich_help_panel=ADAPTER),
    guidance: bool | None = typer.Option(None, "--guidance/--no-guidance", help="Text guidance in the SG-Adapters (sage only; default on).", rich_help_panel=ADAPTER, metavar=""),
    guidance_tokens: int | None = typer.Option(None, "--guidance-tokens", help="Guidance tokens M (default: one per class).", rich_help_panel=ADAPTER),
    guidance_topk: int | None = typer.Option(None, "--guidance-topk", help="Route each image's guidance to its top-k tokens of the frozen zero-shot prediction (default: the method's: 5 for sage-topk, all otherwise; 0: all).", rich_help_panel=ADAPTER),
    guidance_gate: float | None = typer.Option(None, "--guidance-gate", help="Bias the guidance attention by each image's frozen zero-shot log-posterior at this scale (default: the method's: 25 for sage-gate, off otherwise; 0: off).", rich_help_panel=ADAPTER),
    activation: Activation = typer.Option("relu", "--activation", help="Adapter activation (sage, lift).", rich_help_panel=ADAPTER),
    attn_heads: int = typer.Option(1, "--attn-heads", help="Heads of the guidance attention (must divide --bottleneck).", rich_help_panel=ADAPTER),
    epochs: int = typer.Option(10, "--epochs", help="Training epochs.", rich_help_panel=OPTIM),
    lr: float = typer.Option(0.01, "--lr", help="Peak learning rate (SGD).", rich_help_panel=OPTIM),
    momentum: float = typer.Option(0.9, "--momentum", help="SGD momentum.", rich_help_panel=OPTIM),
    weight_decay: float = typer.Option(5e-4, "--weight-decay", help="SGD weight decay.", rich_help_panel=OPTIM),
    warmup_epochs: float = typer.Option(1.0, "--warmup-epochs", help="Linear warm-up length in epochs.", rich_help_panel=OPTIM),
    warmup_steps: int | None = typer.Option(None, "--warmup-steps", help="Warm-up length in steps (wins over --warmup-epochs).", rich_help_panel=OPTIM),
    prepared: Path = typer.Option(..., "--prepared", "-p", help="Prepared dataset directory (sage prepare).", rich_help_panel=DATA),
    text_cache: Path = typer.Option(..., "--text-cache", "-t", help="Text cache directory (sage encode-text).", rich_help_panel=DATA),
    image_cache: Path | None = typer.Option(None, "--image-cache", help="Decoded-image cache (sage cache-images): the fast input path.", rich_help_panel=DATA),
    feature_cache: Path | None = typer.Option(None, "--feature-cache", help="Directory of cached frozen features (linear with --no-augment): computed once, then read.", rich_help_panel=DATA),
    batch_size: int = typer.Option(128, "--batch-size", help="Images per optimizer step.", rich_help_panel=DATA),
    micro_batch_size: int | None = typer.Option(None, "--micro-batch-size", help="Images per forward pass (gradient accumulation).", rich_help_panel=DATA),
    num_workers: int = typer.Option(4, "--num-workers", help="DataLoader worker processes.", rich_help_panel=DATA),
    sampler: SamplerName = typer.Option("uniform", "--sampler", help="Training order: uniform (shuffled) or class-aware (balanced).", rich_help_panel=DATA),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="Random crop + flip in training.", rich_help_panel=DATA, metavar=""),
    eval_split: EvalSplit | None = typer.Option(None, "--eval-split", help="Split to validate on (default: val, else test).", rich_help_panel=DATA),
    skip_bad: bool = typer.Option(False, "--skip-bad/--no-skip-bad", help="Skip unreadable images (listed in train.json) instead of stopping.", rich_help_panel=DATA, metavar=""),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory to write.", rich_help_panel=RUN),
    config: Path | None = typer.Option(None, "--config", help="Preset YAML supplying defaults; explicit flags win.", rich_help_panel=RUN),
    seed: int = typer.Option(0, "--seed", help="Seed of the init, the data order and the augmentation.", rich_help_panel=RUN),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Stop after this many optimizer steps (smoke runs).", rich_help_panel=RUN),
    eval_every: int = typer.Option(1, "--eval-every", help="Validate every N epochs (0: only at the end).", rich_help_panel=RUN),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", help="Also checkpoint every N steps (0: each epoch only).", rich_help_panel=RUN),
    log_every: int = typer.Option(10, "--log-every", help="Write train metrics (and, without a terminal, a progress line) every N steps.", rich_help_panel=RUN),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N.", rich_help_panel=RUN),
    force: bool = typer.Option(False, "--force", help="Overwrite another run in --out.", rich_help_panel=RUN, metavar=""),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out from its last checkpoint.", rich_help_panel=RUN, metavar=""),
    log: list[str] = typer.Option([], "--log", help="Also log the metrics to tensorboard, wandb or csv "
                                  "(repeatable; tensorboard and wandb are optional extras).", show_default=False,
                                  rich_help_panel=RUN),
    as_json: bool = typer.Option(False, "--json", help="Print train.json to stdout instead of a summary.", rich_help_panel=RUN, metavar=""),
) -> None:
    """Train a PEFT method (LIFT's table: sage, lift, lora, vpt, adapter, ssf, bitfit, ...) on a frozen CLIP.

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
        with progress_bar(quiet=as_json or not main) as bar, with_tracking(log, out, train_config, bar, main) as hooks:
            result = run(train_config, hooks)
    except TrainingInterrupted as exc:
        if main:
            err_console.print(f"[yellow]{escape(exc)}[/]\nresume with:\n  {escape(resume_command(sys.argv))}",
                              soft_wrap=True, highlight=False)
        raise typer.Exit(130) from None
    if not main:
        return
    if as_json:
        typer.echo(json.dumps(result.record, indent=2))
    elif result.skipped:
        console.print(f"{escape(out)} already holds this run; nothing to do (pass --force to redo it)", soft_wrap=True)
        print_result(result_line(out, result.record))
    else:
        console.print(summary_table(result.record))
        print_result(result_line(out, result.record))


@contextmanager
def with_tracking(names: list[str], out: Path, config: Any, hooks: Any, main: bool) -> Iterator[Any]:
    """``hooks`` that also feed the ``--log`` trackers (rank 0 only; none asked for: ``hooks`` as they are)."""
    if not names or not main:
        yield hooks
        return
    from sage_cli.train.tracking import check_trackers, tracking_hooks

    check_trackers(names)  # a missing package is refused before anything is written
    with tracking_hooks(names, out, config.to_dict(), hooks) as tracked:
        yield tracked


def resolve_options(ctx: typer.Context, preset_path: Path | None) -> dict[str, Any]:
    """Explicit flags over the preset over the built-in defaults."""
    explicit = {name: ctx.params[name] for name in explicit_params(ctx)}
    defaults = {k: v for k, v in ctx.params.items() if k not in NOT_IN_PRESETS}
    preset = load_yaml_mapping(preset_path) if preset_path is not None else None
    if preset is not None:
        preset = coerce_preset(preset, option_types(), preset_path)
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


def option_types() -> dict[str, Any]:
    """Every option's type (``int``, ``float | None``, ``Literal[...]``), from this command's signature."""
    return {name: hint for name, hint in get_type_hints(command).items() if name not in ("ctx", "return")}


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
    leaves out the start summary and the eval lines, keeping only the bar. Without a terminal (a
    SLURM log, ``> log``) the bar never shows, so each logging step (``--log-every``) prints a
    plain line instead (with ``summary``).
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
            console.print(escape(start_summary(info)), soft_wrap=True)
        fields = {"total": info["total_steps"], "completed": info["start_step"], "epoch": 1, "loss": "-", "speed": "-"}
        if task:
            bar.reset(task[0], **fields)
        else:
            task.append(bar.add_task("train", **fields))

    plain = summary and not quiet and not console.is_terminal

    def on_step(step: StepInfo) -> None:
        fields: dict[str, Any] = {"completed": step.step, "epoch": step.epoch + 1}
        if step.loss is not None:
            fields.update(loss=f"{step.loss:.4f}", speed=f"{step.images_per_s:.0f}")
            if plain:
                console.print(step_line(step), soft_wrap=True, highlight=False)
        bar.update(task[0], **fields)

    def on_eval(entry: dict[str, Any]) -> None:
        bar.console.print(f"eval step {entry['step']}: top-1 {_pct(entry['top1'])} ({escape(entry['split'])}; "
                          f"many {_pct(entry['many'])}, medium {_pct(entry['medium'])}, few {_pct(entry['few'])})")

    with bar:
        yield TrainHooks(on_start=on_start, on_step=on_step, on_eval=on_eval if summary and not quiet else None)


def step_line(step: Any) -> str:
    """The plain line of a logging step: ``step 20/90 (epoch 2): loss 1.2345, lr 0.00933, 412 images/s``."""
    lr = "-" if step.lr is None else f"{step.lr:.3g}"
    speed = "-" if step.images_per_s is None else f"{step.images_per_s:.0f}"
    return (f"step {step.step}/{step.total_steps} (epoch {step.epoch + 1}): loss {step.loss:.4f}, lr {lr}, "
            f"{speed} images/s")


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
    table = Table(title=f"sage train: {escape(record['method'])} on {escape(record['model']['model'])}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("trainable parameters", f"{record['trainable_params']:,}")
    table.add_row("steps (epochs completed)", f"{record['steps']} ({record['epochs_completed']})")
    table.add_row("speed", f"{record['images_per_s']:.1f} images/s on {escape(record['device'])} ({record['precision']})")
    table.add_row("peak memory", f"{record['peak_memory']['bytes'] / 2**20:.0f} MiB ({record['peak_memory']['kind']})")
    table.add_row("wall time", f"{record['wall_time_s']:.1f} s")
    final = record.get("final_eval")
    if final:
        table.add_row(f"top-1 ({escape(final['split'])})", _pct(final["top1"]))
        for group in ("many", "medium", "few"):
            table.add_row(f"  {group}", _pct(final[group]))
    return table


def result_line(out: Path, record: dict[str, Any]) -> str:
    """``sage -q train``'s one line: the final evaluation's top-1 (%) overall and per group."""
    final = record.get("final_eval") or {}
    if final.get("top1") is None:
        return f"{out}: {record.get('steps', 0)} steps, no evaluation"
    groups = ", ".join(f"{g} {'–' if final.get(g) is None else f'{100 * final[g]:.1f}'}" for g in ("many", "medium", "few"))
    return f"{out}: {final.get('split', 'val')} top-1 {100 * final['top1']:.1f} ({groups}), {record.get('steps', 0)} steps"
