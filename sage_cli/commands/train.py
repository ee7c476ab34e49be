"""`sage train`: fine-tune adapters + head of a frozen CLIP on a prepared long-tailed dataset."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import shlex
import sys
import types
import typing
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from sage_cli.commands._common import explicit_params, handle_errors
from sage_cli.config import Option
from sage_cli.console import console, err_console, escape, print_result
from sage_cli.methods import METHODS, TRAIN_METHODS, load_preset
from sage_cli.schema import ADAPTER, METHOD, RUN, Leaf, flat_fields, flatten

TRACKERS = ("tensorboard", "wandb", "csv")  # sage_cli.train.tracking.TRACKERS (a test checks them)
# Options of this command that are no train option: they say how to run it, not what trains.
NOT_IN_PRESETS = ("config", "from_run", "print_config", "out", "force", "resume", "as_json", "log")
GUIDANCE = Option(help="Text guidance in the SG-Adapters (the guided methods: sage, sage-*).", panel=ADAPTER,
                  key="guidance")


def train(
    ctx: typer.Context,
    config: str | None = typer.Option(None, "--config", help="Preset supplying values (a shipped one by name, e.g. "
                                      "imagenet-lt, or a YAML file); explicit flags win.", rich_help_panel=RUN),
    from_run: Path | None = typer.Option(None, "--from", help="Relaunch the run in this directory with its own "
                                         "config; flags given change it.", rich_help_panel=RUN),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config (train.json's "
                                      "schema) and exit.", rich_help_panel=RUN),
    log: list[str] = typer.Option([], "--log", help="Also log the metrics to tensorboard, wandb or csv "
                                  "(repeatable; tensorboard and wandb are optional extras).", show_default=False,
                                  metavar=f"<{'|'.join(TRACKERS)}>", rich_help_panel=RUN),
    as_json: bool = typer.Option(False, "--json", help="Print train.json to stdout instead of a summary.",
                                 rich_help_panel=RUN),
    **options: Any,
) -> None:
    """Train a PEFT method (LIFT's table: sage, lift, lora, vpt, adapter, ssf, bitfit, ...) on a frozen CLIP.

    Under torchrun (``torchrun --nproc-per-node N -m sage_cli train ...``) it trains data-parallel;
    only rank 0 prints and writes.
    """
    from sage_cli.train import build_train_config, run
    from sage_cli.train.distributed import is_main_process
    from sage_cli.train.faults import TrainingInterrupted

    train_config = build_train_config(resolve_options(ctx, config, from_run))
    if print_config:
        typer.echo(json.dumps(train_config.to_dict(), indent=2))
        return
    out = train_config.run.out
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


# --------------------------------------------------------------------------------------------
# The train options, made from the schema's field metadata


def method_values(key: str) -> set[Any]:
    """The values the trainable methods give option ``key`` (empty when none of them has it)."""
    values = set()
    for name in TRAIN_METHODS:
        flat = flatten(METHODS[name].model) | flatten(METHODS[name].loss)
        if key in flat:
            values.add(repr(flat[key]))
    return values


def cli_type(leaf: Leaf | None, meta: Option) -> Any:
    """The type ``sage train`` parses an option's text to (``Literal`` for choices, ``str`` for a parsed field)."""
    if meta.choices is not None:
        return Literal[meta.choices]  # type: ignore[valid-type]
    if meta.parse is not None:
        return str
    annotation = bool if leaf is None else leaf.annotation
    inner = [a for a in typing.get_args(annotation) if a is not type(None)]
    return inner[0] if inner and typing.get_origin(annotation) in (typing.Union, types.UnionType) else annotation


def option_parameter(key: str, leaf: Leaf | None, meta: Option) -> inspect.Parameter:
    """One ``sage train`` option: its flags, help and panel from ``meta``; its default if every method shares it."""
    kind = cli_type(leaf, meta)
    flag = "--" + key.replace("_", "-")
    decls = [f"{flag}/--no-{flag[2:]}" if kind is bool and key not in ("force", "resume") else flag, *meta.aliases]
    decls += [meta.short] if meta.short else []
    default = None if leaf is None else leaf.field.default
    values = method_values(key)
    # the methods' own value(s), when they differ among them or from the field's default (--head-feature)
    per_method = leaf is None or len(values) > 1 or bool(values and values != {repr(default)})
    if per_method or default is dataclasses.MISSING:
        default = None
    help_text = meta.help + (" Default: the method's (docs/methods.md)." if per_method else "")
    info = typer.Option(default, *decls, help=help_text, rich_help_panel=meta.panel,
                        metavar=meta.metavar, show_default=not per_method)
    annotation = kind | None if default is None else kind
    return inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation)


def train_parameters() -> list[inspect.Parameter]:
    """Every option of the schema that the command line offers, in panel order, ``--method`` first."""
    method = inspect.Parameter("method", inspect.Parameter.KEYWORD_ONLY, annotation=Literal[TRAIN_METHODS] | None,
                               default=typer.Option(None, "--method", help="What trains (docs/methods.md).",
                                                    rich_help_panel=METHOD))
    params = [method]
    for key, leaf in flat_fields().items():
        if leaf.option.cli:
            params.append(option_parameter(key, leaf, leaf.option))
        if key == "prompt_tokens":
            params.append(option_parameter("guidance", None, GUIDANCE))
    return params


def _command_signature() -> inspect.Signature:
    ctx, *fixed = [p for name, p in inspect.signature(train).parameters.items() if name != "options"]
    keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in fixed]
    return inspect.Signature([ctx, *train_parameters(), *keyword], return_annotation=None)


train.__signature__ = _command_signature()  # type: ignore[attr-defined]
train.__annotations__ = {p.name: p.annotation for p in train.__signature__.parameters.values()}  # type: ignore[attr-defined]
command = handle_errors(train)


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


def resolve_options(ctx: typer.Context, preset: str | None, from_run: Path | None) -> dict[str, Any]:
    """The run's flat options: explicit flags over the preset over the run relaunched (``--from``).

    What is given nowhere is the method's (:func:`sage_cli.methods.resolve`).
    """
    options: dict[str, Any] = {}
    if from_run is not None:
        from sage_cli import artifacts
        from sage_cli.train import read_config

        record = artifacts.read_record(from_run, artifacts.TRAIN_RECORD)
        options = {k: v for k, v in read_config(record, from_run / artifacts.TRAIN_RECORD).flat().items()
                   if k not in ("force", "resume")}
    if preset is not None:
        options.update(load_preset(preset))
    options.update({name: ctx.params[name] for name in explicit_params(ctx) if name not in NOT_IN_PRESETS})
    for name in ("out", "force", "resume"):
        if name in explicit_params(ctx):
            options[name] = ctx.params[name]
    return options


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
    """Every train option's type on the command line (``int``, ``float | None``, ``Literal[...]``)."""
    return {p.name: p.annotation for p in train_parameters()}


def option_defaults() -> dict[str, Any]:
    """Every train option's default on the command line (None: required, or the method's)."""
    return {p.name: p.default.default for p in train_parameters()}


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
    stop = record.get("early_stop")
    if stop:
        table.add_row("stopped early", f"step {stop['step']} of {stop['planned_steps']} (patience {stop['patience']})")
    if (record.get("kept") or {}).get("keep") == "best":
        from sage_cli.report.markdown import format_weights

        table.add_row("kept", escape(format_weights(record["kept"])))
    return table


def result_line(out: Path, record: dict[str, Any]) -> str:
    """``sage -q train``'s one line: the final evaluation's top-1 (%) overall and per group."""
    final = record.get("final_eval") or {}
    if final.get("top1") is None:
        return f"{out}: {record.get('steps', 0)} steps, no evaluation"
    groups = ", ".join(f"{g} {'–' if final.get(g) is None else f'{100 * final[g]:.1f}'}" for g in ("many", "medium", "few"))
    return f"{out}: {final.get('split', 'val')} top-1 {100 * final['top1']:.1f} ({groups}), {record.get('steps', 0)} steps"
