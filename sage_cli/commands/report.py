"""`sage report`: evaluate runs (and the zero-shot baseline) and write the comparison."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from sage_cli.commands._common import device_option, handle_errors
from sage_cli.console import console, escape, print_result

TteMode = Literal["five-crop", "ten-crop", "flip"]  # sage_cli.report.tte.TTE_MODES (a test checks them)


@handle_errors
def command(
    runs: list[Path] = typer.Argument(None, metavar="RUN_DIR", help="Run directories written by sage train.",
                                      show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for report.json/.md/.html and per_class.parquet."),
    zero_shot: Path | None = typer.Option(None, "--zero-shot", help="Prepared dataset: add the frozen CLIP zero-shot row."),
    text_cache: Path | None = typer.Option(None, "--text-cache", help="Text cache for --zero-shot (sage encode-text); "
                                           "for runs, where their text cache now is (checked by its hashes)."),
    prepared: Path | None = typer.Option(None, "--prepared", help="Where the runs' prepared dataset now is (checked by "
                                         "its hashes; default: where train.json says, or beside the run)."),
    tte: bool = typer.Option(False, "--tte", help="Test-time ensembling: several views, logits averaged."),
    tte_mode: TteMode = typer.Option("five-crop", "--tte-mode", help="Views with --tte: five-crop (LIFT's default), "
                                 "ten-crop (and their mirrors) or flip (the centre crop and its mirror)."),
    tte_expand: int = typer.Option(24, "--tte-expand", help="Pixels added to the image size before cropping "
                                   "(five-crop, ten-crop; LIFT: 24 for ViT-B/16, 21 for ViT-L/14)."),
    split: Literal["test", "val"] = typer.Option("test", "--split", help="Split to evaluate."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="Checkpoint to evaluate (one RUN_DIR only)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per forward pass."),
    workers: int = typer.Option(4, "--workers", help="DataLoader worker processes (0: load in the main process)."),
    device: str = device_option(),
    force: bool = typer.Option(False, "--force", help="Overwrite a report of other inputs in --out."),
    reference: str | None = typer.Option(None, "--reference", help="Run group (or run) to compare with, paired by "
                                         "seed: mean difference and 95% interval.", show_default=False),
    latex: bool = typer.Option(False, "--latex", help="Also write report.tex (booktabs tables)."),
    save_logits: bool = typer.Option(False, "--save-logits", help="Keep every logit (float16) in "
                                     "RUN_DIR/logits.safetensors for post-hoc analysis."),
    tau: list[float] = typer.Option([], "--tau", help="Post-hoc logit adjustment: add a row per run re-scored "
                                    "with logits - T·log(prior) (repeatable; saves the logits).",
                                    metavar="<T>", show_default=False),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="Draw the figures (report.html's plots, "
                                 "figures/*.pdf and *.png); --no-figures: tables only, faster."),
    frontier: bool = typer.Option(False, "--frontier", help="The head-tail frontier: sweep t in logits - t·log(prior) "
                                  "on the val split; against --reference, few and overall at the reference's many "
                                  "accuracy (val), and the val-chosen t applied to test, paired by seed."),
    label: list[str] = typer.Option([], "--label", help="Name of a run in tables and figures (repeatable: one per "
                                    "RUN_DIR, in order; default: the directory names).", metavar="<name>",
                                    show_default=False),
    title: str | None = typer.Option(None, "--title", help="Title of report.md/.html (default: 'Sage report: "
                                     "DATASET').", metavar="<text>", show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Print report.json to stdout instead of a table."),
) -> None:
    """Top-1/top-5, many/medium/few, prediction share, calibration and plots for one or more runs."""
    from sage_cli.report import ReportConfig, run

    config = ReportConfig(
        out=out, runs=tuple(runs or ()), zero_shot=zero_shot, text_cache=text_cache, prepared=prepared, tte=tte,
        tte_mode=tte_mode, tte_expand=tte_expand, split=split,
        checkpoint=checkpoint, batch_size=batch_size, num_workers=workers, device=device, force=force,
        reference=reference, latex=latex, save_logits=save_logits, tau=tuple(tau or ()), figures=figures,
        frontier=frontier, labels=tuple(label or ()), title=title,
    )
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True, disable=as_json) as bar:
        tasks: dict[str, Any] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        result = run(config, progress=update)
    if as_json:
        typer.echo(json.dumps(result.report, indent=2))  # stdout, machine-readable
        return
    console.print(summary_table(result.report))
    print_result(result_line(out, result.report))
    from sage_cli.report.markdown import shows_groups

    if shows_groups(result.report):
        console.print(groups_table(result.report))
    note = "already held this report; nothing redone" if result.skipped else "written"
    console.print(f"{escape(out)}: report.md, report.html, report.json, per_class.parquet {note}", soft_wrap=True)


def summary_table(report: dict[str, Any]) -> Table:
    """Overall / many / medium / few top-1 (and top-5, ECE) per run, in %."""
    from sage_cli.report.markdown import format_percent

    data = report["dataset"]
    title = f"{escape(report.get('title') or data['dataset'])} {escape(report['split'])} ({data['num_samples']} images){' · TTE' if report['tte'] else ''}"
    table = Table(title=title)
    table.add_column("run")
    for heading in ("overall", "many", "medium", "few", "top-5", "ECE"):
        table.add_column(heading, justify="right")
    for run in report["runs"]:
        m = run["metrics"]
        cached = " [dim](cached)[/]" if run["evaluation"].get("cached") else ""
        table.add_row(escape(run["name"]) + cached, *(format_percent(m[k]) for k in ("top1", "many", "medium", "few", "top5",
                                                                             "ece")))
    table.caption = _weights_caption(report)
    table.caption_justify = "left"
    return table


def _weights_caption(report: dict[str, Any]) -> str | None:
    """Which weights each run was evaluated with: one line when every run used its last step's."""
    from sage_cli.report.markdown import weights_lines

    lines = weights_lines(report)
    runs = [run for run in report["runs"] if run.get("kind") == "run" and run.get("posthoc_tau") is None]
    if lines and all((run.get("weights") or {}).get("keep", "last") == "last" for run in runs):
        return "weights: each run's last step (adapter.safetensors)"
    return "\n".join(f"{escape(name)}: {escape(text)}" for name, text in lines) or None


def groups_table(report: dict[str, Any]) -> Table:
    """Runs of one configuration across seeds: mean ± std (n), and the paired difference to the reference."""
    from sage_cli.report.markdown import format_interval, format_summary

    paired = {p["group"]: p for p in report.get("paired", [])}
    table = Table(title="across seeds: mean ± std" + (f"; Δ vs {escape(report['reference'])} paired by seed, 95% CI"
                                                      if report.get("reference") else ""))
    table.add_column("group")
    table.add_column("n", justify="right")
    for heading in ("overall", "many", "medium", "few"):
        table.add_column(heading, justify="right")
    if paired:
        table.add_column("Δ overall", justify="right")
    for group in report["groups"]:
        m = group["metrics"]
        row = [escape(group["name"]), str(group["n"]), *(format_summary(m[k]) for k in ("top1", "many", "medium", "few"))]
        if paired:
            p = paired.get(group["name"])
            row.append("reference" if p is None else format_interval(p["metrics"]["top1"]))
        table.add_row(*row)
    return table


def result_line(out: Path, report: dict[str, Any]) -> str:
    """``sage -q report``'s one line: each run's overall top-1 (%) and where the report is."""
    runs = ", ".join(f"{r['name']} {100 * r['metrics']['top1']:.1f}" for r in report["runs"])
    return f"{out}: top-1 {runs}"
