"""`sage export`: a trained run as a TorchScript, ONNX or open_clip model directory."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from sage_cli.commands._common import handle_errors
from sage_cli.console import console, escape, print_result


@handle_errors
def command(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="Run directory written by sage train.",
                                   show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for the model file and export.json.",
                             show_default=False),
    export_format: Literal["torchscript", "onnx", "open_clip"] = typer.Option(
        "torchscript", "--format", "-f", help="torchscript: the traced classifier; onnx: an ONNX graph (needs "
        "the onnx extra); open_clip: CLIP weights with the adapters merged (LoRA, SSF, BitFit, LN, full) and "
        "the head."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="Checkpoint to export instead of "
                                           "RUN_DIR/adapter.safetensors.", show_default=False),
    text_cache: Path | None = typer.Option(None, "--text-cache", help="Where the run's text cache now is (checked "
                                           "by its hashes).", show_default=False),
    force: bool = typer.Option(False, "--force", help="Overwrite an export of another run or format in --out."),
) -> None:
    """Export a run's classifier with its preprocessing and class names, checked against the run."""
    from sage_cli.export import ExportConfig, run

    config = ExportConfig(run=run_dir, out=out, format=export_format, checkpoint=checkpoint, text_cache=text_cache,
                          force=force)
    with console.status(f"exporting {escape(run_dir)} as {export_format}"):
        result = run(config)
    record = result.record
    if result.skipped:
        console.print(f"{escape(out)}: already holds this export; nothing redone", soft_wrap=True)
    else:
        check = record["check"]
        console.print(f"checked on {check['images']} random images: max |logit difference| "
                      f"{check['max_abs_logit_diff']:.2g} (tolerance {check['tolerance']:.2g})", soft_wrap=True)
    line = (f"{out / record['model_file']}: {record['format']}, {len(record['class_names'])} classes, "
            f"input {'x'.join(str(d) for d in record['input']['shape'][1:])}")
    console.print(escape(line), soft_wrap=True)
    print_result(line)
