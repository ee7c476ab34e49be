"""`sage encode-text`: encode every class's texts once with the frozen CLIP text tower."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from sage_cli.commands._common import device_option, handle_errors
from sage_cli.console import console, escape, print_result
from sage_cli.errors import SageError


@handle_errors
def command(
    prepared: Path = typer.Option(..., "--prepared", "-p", help="Prepared dataset directory (from sage prepare)."),
    model: str = typer.Option(..., "--model", "-m", help="open_clip model name, e.g. ViT-B-16, sage-tiny or "
                               "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K."),
    pretrained: str = typer.Option(..., "--pretrained", help="open_clip tag (e.g. openai), a checkpoint file, "
                                   "none, or hub (an hf-hub: model's own weights)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory for the text cache."),
    templates: str = typer.Option("ensemble", "--templates", help="single, ensemble, none, or a file of templates with {}."),
    descriptions: Path | None = typer.Option(None, "--descriptions", help="JSON {class: [sentences]} or CSV class,description."),
    generate: bool = typer.Option(False, "--generate", help="Ask a chat model for descriptions (OpenAI-compatible)."),
    llm_url: str | None = typer.Option(None, "--llm-url", help="Chat endpoint base URL, e.g. http://127.0.0.1:8080/v1."),
    llm_model: str | None = typer.Option(None, "--llm-model", help="Model name the endpoint serves."),
    llm_n: int = typer.Option(5, "--llm-n", help="Descriptions to ask for per class."),
    llm_cache: Path | None = typer.Option(None, "--llm-cache", help="Answer cache (JSON lines); default OUT/llm_answers.jsonl."),
    llm_timeout: float = typer.Option(60.0, "--llm-timeout", help="Seconds one attempt of a chat request may take in all (a deadline; retried)."),
    llm_concurrency: int = typer.Option(4, "--llm-concurrency", help="Chat requests in flight at once."),
    llm_retries: int = typer.Option(4, "--llm-retries", help="Retries of a request after a connection fault or a busy server."),
    batch_size: int = typer.Option(256, "--batch-size", help="Texts per forward pass."),
    device: str = device_option(),
    force: bool = typer.Option(False, "--force", help="Overwrite a cache of other inputs in --out."),
    as_json: bool = typer.Option(False, "--json", help="Print encode.json to stdout instead of a table."),
) -> None:
    """Encode class names, descriptions and generated descriptions into a text cache."""
    from sage_cli.encode_text import EncodeTextConfig, run

    llm = _llm_config(out, llm_url, llm_model, llm_n, llm_cache,
                      timeout=llm_timeout, concurrency=llm_concurrency, retries=llm_retries) if generate else None
    config = EncodeTextConfig(
        prepared=prepared, out=out, model=model, pretrained=pretrained, templates=templates,
        descriptions=descriptions, generate=llm, batch_size=batch_size, device=device, force=force,
    )
    with _progress(as_json) as bar:
        tasks: dict[str, Any] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done)

        result = run(config, progress=update)
    if as_json:
        typer.echo(json.dumps(result.record, indent=2))  # stdout, machine-readable
        return
    if result.skipped and result.llm_fallback:
        console.print(f"{escape(out)}: asked again for the {len(result.llm_fallback)} class(es) that fell back; "
                      "still no usable chat answer for them, the text cache is unchanged", soft_wrap=True)
        return
    if result.skipped:
        console.print(f"{escape(out)} already holds this text cache; nothing to do (pass --force to redo it)", soft_wrap=True)
        return
    console.print(_summary(result.record, result.fallback_classes, result.llm_requests))
    if result.llm_fallback:
        console.print(_fallback_line(result.llm_fallback, result.record["counts"]["classes"]), soft_wrap=True)
    counts = result.record["counts"]
    print_result(f"{out}: {counts['classes']} classes, {counts['texts']} texts, {result.record['model']}")


def _fallback_line(fallback: dict[str, str], classes: int) -> str:
    """"2 of 3 classes fell back to templates (no usable chat answer: an empty answer x2); ..."."""
    reasons = Counter(fallback.values()).most_common()
    why = "; ".join(f"{reason} x{count}" for reason, count in reasons[:3]) + ("; ..." if len(reasons) > 3 else "")
    return (f"{len(fallback)} of {classes} classes fell back to templates (no usable chat answer: {escape(why)}); "
            "re-run the same command to ask for them again")


def _llm_config(out: Path, url: str | None, model: str | None, n: int, cache: Path | None, **patience: Any) -> Any:
    from sage_cli.encode_text import LLMConfig

    if not url or not model:
        raise SageError("--generate needs --llm-url and --llm-model")
    return LLMConfig(url=url, model=model, n=n, cache=cache or out / "llm_answers.jsonl",
                     api_key=os.environ.get("SAGE_LLM_API_KEY"), **patience)


def _progress(quiet: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console, transient=True, disable=quiet)


def _summary(record: dict[str, Any], fallback: tuple[str, ...], requests: int) -> Table:
    counts = record["counts"]
    table = Table(title=f"text cache: {escape(record['model'])} ({escape(record['pretrained'])})", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("classes", str(counts["classes"]))
    table.add_row("texts (template / description)",
                  f"{counts['texts']} ({counts['template_texts']} / {counts['description_texts']})")
    table.add_row("templates", f"{escape(record['templates']['name'])} ({len(record['templates']['templates'])})")
    table.add_row("embedding size", str(record["embedding_dim"]))
    if record.get("generate"):
        table.add_row("chat requests sent", str(requests))
    if fallback:
        shown = ", ".join(escape(name) for name in fallback[:5]) + (" ..." if len(fallback) > 5 else "")
        table.add_row("classes on templates only", f"{len(fallback)}: {shown}")
    table.add_row("speed", f"{record['texts_per_second']:.0f} texts/s on {escape(record['device'])}")
    return table
