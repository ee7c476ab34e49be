"""summary.md: the run's figures in the shape of README.md's tables (to paste), then every step."""

from __future__ import annotations

from typing import Any


def render_markdown(summary: dict[str, Any]) -> str:
    """The figure tables, the input table, the other figures, the steps, from ``summary``."""
    records = {s["name"]: s for s in summary["steps"]}
    plan = summary["plan"]
    lines = [f"# One-shot GPU check: {summary['mode']}, {summary['state']}", "", describe_machine(summary), ""]
    lines += model_table(records, plan) + [""] + input_table(records, plan) + [""] + other_table(records, plan)
    lines += ["", "## Steps", "", "| step | status | wall s | expected s | error |", "|---|---|---:|---:|---|"]
    for step in summary["steps"]:
        expected = "" if step.get("estimate_s") is None else f"{step['estimate_s']:.0f}"
        error = (step.get("error") or "").replace("|", "/")
        lines.append(f"| {step['name']} | {step['status']} | {step['wall_s']:.1f} | {expected} | {error} |")
    counts = summary["counts"]
    lines += ["", f"{counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped; "
              f"{summary['elapsed_s']} s; started {summary['started']}."]
    return "\n".join(lines) + "\n"


def describe_machine(summary: dict[str, Any]) -> str:
    env = summary.get("environment") or {}
    gpu = env.get("gpu") or {}
    smi = env.get("nvidia_smi") if isinstance(env.get("nvidia_smi"), dict) else {}
    parts = [gpu.get("name") or env.get("device", "?"), f"driver {smi.get('driver_version', '?')}" if smi else None,
             f"torch {env.get('torch', '?')}", f"CUDA {env['torch_cuda']}" if env.get("torch_cuda") else None,
             f"{env.get('cpus_usable', '?')} CPUs", f"/dev/shm {(env.get('dev_shm_gb') or {}).get('total', '?')} GB",
             f"Python {env.get('python', '?')}"]
    return "Machine: " + ", ".join(p for p in parts if p) + "."


def figure(records: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The record of step ``name`` if it succeeded, else None."""
    step = records.get(name)
    return step["record"] if step and step["status"] == "ok" else None


def cell(records: dict[str, Any], name: str, show: Any) -> str:
    """``show(record)`` of step ``name``, or what happened to it (failed, skipped, not run)."""
    step = records.get(name)
    if step is None:
        return "not run"
    if step["status"] != "ok":
        return step["status"]
    return show(step["record"])


def rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def gigabytes(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("bytes")
    return "—" if value is None else f"{value / 1e9:.1f} GB"


def model_table(records: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    columns = [(m, c) for c in plan["classes"] for m in plan["methods"]]
    header = "| figure | " + " | ".join(f"{m}, {c:,}" for m, c in columns) + " |"
    rows = [header, "|---|" + "---:|" * len(columns)]

    def row(label: str, name: Any, show: Any) -> str:
        return f"| {label} | " + " | ".join(cell(records, name(m, c), show) for m, c in columns) + " |"

    rows.append(row("model step, images/s (MFU)", lambda m, c: f"model_{m}_c{c}",
                    lambda r: f"{rate(r['images_per_s'])} ({100 * r['mfu']:.1f}%)"))
    rows.append(row("model step, `--compile`, images/s (MFU); warm-up s", lambda m, c: f"model_{m}_c{c}_compile",
                    lambda r: f"{rate(r['images_per_s'])} ({100 * r['mfu']:.1f}%); {r['warmup_s']:.0f} s"))
    rows.append(row("`sage train`, plain input, images/s", lambda m, c: f"train_{m}_c{c}_plain",
                    lambda r: rate(r["images_per_s"])))
    rows.append(row("`sage train`, `--image-cache`, images/s", lambda m, c: f"train_{m}_c{c}_fast",
                    lambda r: rate(r["images_per_s"])))
    rows.append(row("peak memory", lambda m, c: f"model_{m}_c{c}", lambda r: gigabytes(r["peak_memory_bytes"])))
    rows.append(row("guidance tokens M", lambda m, c: f"model_{m}_c{c}",
                    lambda r: "—" if r["guidance_tokens"] is None else f"{r['guidance_tokens']:,}"))
    return rows


def input_table(records: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    rows = [f"| input, DataLoader alone (batch {plan['batch']}), images/s | plain (PIL decode) | `--image-cache` "
            "| cached / plain |", "|---|---:|---:|---:|"]
    for w in plan["input_workers"]:
        plain, cached = figure(records, f"input_plain_w{w}"), figure(records, f"input_cached_w{w}")
        ratio = f"{cached['images_per_s'] / plain['images_per_s']:.1f}x" if plain and cached else "—"
        rows.append(f"| {w} workers | {cell(records, f'input_plain_w{w}', lambda r: rate(r['images_per_s']))} | "
                    f"{cell(records, f'input_cached_w{w}', lambda r: rate(r['images_per_s']))} | {ratio} |")
    return rows


def other_table(records: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    last = plan["classes"][-1]
    tte = " / ".join(cell(records, f"report_tte_{x}", lambda r: rate(r["images_per_s"])) for x in ("off", "on"))
    sdpa = figure(records, "sdpa_guidance")
    chosen = " / ".join(sdpa["chosen"].get(f"c{c}", "?") for c in plan["classes"]) if sdpa else cell(
        records, "sdpa_guidance", str)
    classes = " / ".join(f"{c:,}" for c in plan["classes"])
    grouping = " / ".join(describe_grouping(sdpa["shapes"].get(f"c{c}", {})) for c in plan["classes"]) if sdpa else (
        cell(records, "sdpa_guidance", str))
    return ["| figure | value |", "|---|---|",
            f"| encode-text, {last:,} x 10 texts, texts/s | "
            f"{cell(records, f'encode_text_c{last}', lambda r: rate(r['texts_per_s']))} |",
            f"| report, zero-shot, images/s, TTE off / on | {tte} |",
            f"| guidance attention, SDPA backend torch picks at {classes} classes | {chosen} |",
            f"| guidance attention, forward + backward ms, grouped (G) / flattened, at {classes} classes | {grouping} |",
            f"| `gpu` tests | {cell(records, 'gpu_tests', lambda r: r['summary'])} |"]


def describe_grouping(shape: dict[str, Any]) -> str:
    """``1.2 (G=32) / 9.8``: the grouped and the flattened guidance attention's ms (torch's pick)."""
    flat = shape.get("flattened") or {}
    if "default_ms_forward_backward" not in shape or "default_ms_forward_backward" not in flat:
        return "?"
    return f"{shape['default_ms_forward_backward']:.2f} (G={shape['groups']}) / {flat['default_ms_forward_backward']:.2f}"
