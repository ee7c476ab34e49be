"""The report stage: evaluate runs (and the zero-shot baseline) and write the comparison.

Public API: :class:`ReportConfig`, :func:`run` -> :class:`ReportResult`. Outputs in ``out``:
report.json (the record, with every figure), per_class.parquet, report.md and report.html.
Predictions are cached per run (``RUN_DIR/predictions.parquet``) and reused when the checkpoint,
the prepared test set and the TTE flag are those they were made from.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from sage_cli import artifacts
from sage_cli.artifacts import PER_CLASS, REPORT_RECORD
from sage_cli.config import check_batch_size
from sage_cli.errors import SageError, explain_write_errors
from sage_cli.locks import lock_output_dir, try_lock_output_dir
from sage_cli.report import build, frontier, html, markdown, seeds, tex
from sage_cli.report.evaluate import evaluate_classifier, load_cached_predictions, save_predictions
from sage_cli.report.figures import render_figures
from sage_cli.report.loader import build_eval_loader, build_eval_transform
from sage_cli.report.logits import (
    LOGITS,
    compute_adjusted_predictions,
    compute_class_prior,
    load_logits,
    save_logits,
)
from sage_cli.report.predictions import Predictions
from sage_cli.report.sources import (
    ZERO_SHOT,
    Source,
    check_same_test_set,
    load_run_source,
    load_zero_shot_source,
)
from sage_cli.report.tte import TTE_MARGIN, TTE_MODES, build_tte_transform

logger = logging.getLogger(__name__)

STAGE = "report"
LATEX = "report.tex"
FIGURES = "figures"
OUTPUTS = (REPORT_RECORD, PER_CLASS.filename, "report.md", "report.html")
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ReportConfig:
    """What to evaluate and where to write the report."""

    out: Path
    runs: tuple[Path, ...] = ()
    zero_shot: Path | None = None  # a prepared dataset dir: add the frozen CLIP zero-shot row
    text_cache: Path | None = None  # the zero-shot head's text cache; for runs, where theirs now is
    prepared: Path | None = None  # where the runs' prepared dataset now is (found by its hashes otherwise)
    tte: bool = False
    tte_mode: str = "five-crop"  # one of TTE_MODES (with tte)
    tte_expand: int = TTE_MARGIN  # px added before cropping (five-crop, ten-crop), LIFT's ``expand``
    split: str = "test"
    checkpoint: Path | None = None  # instead of the run's kept weights (one run only)
    batch_size: int = 64
    num_workers: int = 0
    device: str = "auto"
    force: bool = False
    reference: str | None = None  # a run group (or run) name: paired differences by seed against it
    latex: bool = False  # also write report.tex (booktabs tables)
    save_logits: bool = False  # keep every logit (float16) in RUN_DIR/logits.safetensors
    tau: tuple[float, ...] = ()  # post-hoc logit adjustment: one extra row per run and tau (needs logits)
    figures: bool = True  # False: tables only (no figures/ folder, no plots in the page)
    frontier: bool = False  # the head-tail frontier: a post-hoc sweep on val logits (report/frontier.py)
    labels: tuple[str, ...] = ()  # names of the runs in tables and figures, one per run in order (default: dir names)
    title: str | None = None  # the pages' title (default: "Sage report: DATASET")

    def __post_init__(self) -> None:
        object.__setattr__(self, "runs", tuple(Path(r) for r in self.runs))
        if not self.runs and self.zero_shot is None:
            raise SageError("nothing to report: pass RUN_DIR(s) and/or --zero-shot PREPARED_DIR")
        if self.zero_shot is not None and self.text_cache is None:
            raise SageError("--zero-shot PREPARED_DIR and --text-cache TEXT_DIR go together")
        if self.text_cache is not None and self.zero_shot is None and not self.runs:
            raise SageError("--text-cache needs --zero-shot PREPARED_DIR or RUN_DIR(s)")
        if self.tte_mode not in TTE_MODES:
            raise SageError(f"--tte-mode must be one of {', '.join(TTE_MODES)}; got {self.tte_mode!r}")
        if not 0 <= self.tte_expand <= 1024:
            raise SageError(f"--tte-expand must be between 0 and 1024 px; got {self.tte_expand}")
        if self.split not in ("test", "val"):
            raise SageError(f"--split must be test or val; got {self.split!r}")
        if self.checkpoint is not None and len(self.runs) != 1:
            raise SageError(f"--checkpoint applies to exactly one RUN_DIR; got {len(self.runs)}")
        check_batch_size("--batch-size", self.batch_size)
        if self.num_workers < 0:
            raise SageError(f"--workers must be >= 0; got {self.num_workers}")
        self._check_labels()
        object.__setattr__(self, "tau", tuple(float(t) for t in self.tau))
        if len(set(self.tau)) != len(self.tau):
            raise SageError(f"--tau values must differ; got {', '.join(f'{t:g}' for t in self.tau)}")

    def _check_labels(self) -> None:
        object.__setattr__(self, "labels", tuple(str(label).strip() for label in self.labels))
        if self.labels and len(self.labels) != len(self.runs):
            raise SageError(f"--label: got {len(self.labels)} for {len(self.runs)} RUN_DIR(s); give one per "
                            "RUN_DIR, in order")
        if any(not label for label in self.labels):
            raise SageError("--label: a label is empty")
        taken = [*self.labels, *(("zero-shot",) if self.zero_shot is not None else ())]
        twice = sorted({label for label in taken if taken.count(label) > 1})
        if twice:
            raise SageError(f"--label: {twice[0]!r} names two rows; labels must differ (and differ from zero-shot)")
        if self.title is not None and not self.title.strip():
            raise SageError("--title is empty")

    @property
    def tte_protocol(self) -> dict[str, Any]:
        """What decides the test-time views, as recorded: ``tte`` and, off LIFT's default protocol
        (five crops, 24 px), the mode and expand (so caches written before the modes stay valid)."""
        protocol: dict[str, Any] = {"tte": self.tte}
        if self.tte and (self.tte_mode, self.tte_expand) != ("five-crop", TTE_MARGIN):
            protocol.update(tte_mode=self.tte_mode, tte_expand=self.tte_expand)
        return protocol

    @property
    def needs_logits(self) -> bool:
        return self.save_logits or bool(self.tau) or self.frontier


@dataclass(frozen=True)
class ReportResult:
    out: Path
    skipped: bool  # True when ``out`` already held this exact report
    report: dict[str, Any]
    evaluated: tuple[str, ...] = ()  # runs evaluated now (the others came from their cache)


def run(config: ReportConfig, progress: Progress | None = None) -> ReportResult:
    """Evaluate every source of ``config`` and write the report into ``config.out``."""
    with lock_output_dir(config.out, STAGE):
        return _run_locked(config, progress)


def _run_locked(config: ReportConfig, progress: Progress | None) -> ReportResult:
    sources = load_sources(config)
    check_same_test_set(sources)
    inputs = {"sources": [{"name": s.name, **s.identity} for s in sources],
              "split": config.split, **config.tte_protocol, **_output_options(config)}
    fingerprint = artifacts.sha256_json(inputs)
    out = Path(config.out)
    check_reference(config.reference, sources, config.tau)
    required = OUTPUTS + ((LATEX,) if config.latex else ()) + ((FIGURES,) if config.figures else ())
    if artifacts.guard_output_dir(out, REPORT_RECORD, fingerprint, OUTPUTS + (LATEX, FIGURES), config.force,
                                  required):
        logger.info("%s already holds this report", out)
        return ReportResult(out, True, artifacts.read_record(out, REPORT_RECORD))
    from sage_cli.backbone import resolve_device

    device = resolve_device(config.device)
    entries, evaluated, predictions = evaluate_sources(sources, config, device, progress)
    groups = seeds.assign_groups(entries)
    extra = {}
    if config.frontier:
        extra["frontier"] = build_frontier(sources, predictions, entries, groups, config, device, progress)
    report = artifacts.build_record(
        STAGE, inputs, split=config.split, **config.tte_protocol,
        dataset=build.build_dataset_entry(sources[0].test_set),
        runs=entries, deltas=build.compute_deltas(entries),
        groups=seeds.compute_group_rows(groups, entries), reference=config.reference,
        paired=seeds.compute_paired_rows(groups, entries, config.reference) if config.reference else [],
        title=config.title, **extra,
    )
    with explain_write_errors(out, "report"):
        report = write_outputs(out, report, latex=config.latex, figures=config.figures)
    return ReportResult(out, False, report, tuple(evaluated))


def evaluate_sources(
    sources: list[Source], config: ReportConfig, device: torch.device, progress: Progress | None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Each source's report entry (and, with ``--tau``, one post-hoc adjusted entry per tau after it),
    the names evaluated now, and each source's predictions by name."""
    entries, evaluated, by_name = [], [], {}
    for source in sources:
        predictions, evaluation = predict(source, config, device, progress)
        by_name[source.name] = predictions
        if not evaluation["cached"]:
            evaluated.append(source.name)
        build.check_predictions_fit(predictions, source.test_set, source.name)
        entries.append(build.build_run_entry(source, build.compute_run_metrics(predictions, source.test_set),
                                             evaluation))
        prior = compute_class_prior(source.test_set.classes["train_count"].to_numpy())
        for tau in config.tau:
            adjusted = compute_adjusted_predictions(predictions.logits, predictions.sample_ids, predictions.labels,
                                                    prior, tau)
            entries.append(build.build_run_entry(
                replace(source, name=f"{source.name} τ={tau:g}"),
                build.compute_run_metrics(adjusted, source.test_set),
                {**evaluation, "posthoc_tau": tau}, tau=tau))
    return entries, evaluated, by_name


VAL_CACHE = "predictions-val"  # beside a source's cache: its val predictions for the frontier


def build_frontier(
    sources: list[Source], predictions: dict[str, Predictions], entries: list[dict[str, Any]],
    groups: list[dict[str, Any]], config: ReportConfig, device: torch.device, progress: Progress | None,
) -> dict[str, Any]:
    """report.json's ``frontier``: each source's val logits (evaluated, or from their own cache in
    ``VAL_CACHE``) and, for a test report, its test logits; see :mod:`sage_cli.report.frontier`."""
    val_config = replace(config, split="val")
    try:
        val_sources = {s.name: s for s in load_sources(val_config)} if config.split != "val" else {}
    except SageError as exc:
        raise SageError(f"--frontier sweeps the val split: {exc}") from None
    logits: dict[str, dict[str, Any]] = {}
    for source in sources:
        test = predictions[source.name]
        if config.split == "val":
            val = test
        else:
            val_source = val_sources[source.name]
            val, _ = predict(replace(val_source, cache_dir=Path(val_source.cache_dir) / VAL_CACHE), val_config,
                             device, progress)
            build.check_predictions_fit(val, val_source.test_set, source.name)
        logits[source.name] = {
            "val": {"logits": val.logits, "labels": val.labels},
            "test": None if config.split == "val" else {"logits": test.logits, "labels": test.labels},
        }
    classes = sources[0].test_set.classes
    reference = seeds.find_reference(groups, config.reference) if config.reference else None
    return frontier.build_frontier_section(entries, groups, logits,
                                           compute_class_prior(classes["train_count"].to_numpy()),
                                           classes["group"].tolist(), reference)


def check_reference(reference: str | None, sources: list[Source], taus: tuple[float, ...] = ()) -> None:
    """Refuse a ``--reference`` that names no run and no run directory, before any evaluation."""
    if reference is None:
        return
    names = {s.name for s in sources} | {s.location.name for s in sources if s.kind == "run"}
    known = names | {f"{name} τ={tau:g}" for name in names for tau in taus}
    if reference not in known:
        raise SageError(f"--reference {reference}: names no run of this report; the runs are: "
                        f"{', '.join(s.name for s in sources)}")


def _output_options(config: ReportConfig) -> dict[str, Any]:
    """The options that change what is written (part of the report's fingerprint when set)."""
    options = {"reference": config.reference, "latex": config.latex or None, "tau": list(config.tau) or None,
               "figures": None if config.figures else False, "frontier": config.frontier or None,
               "title": config.title}
    return {k: v for k, v in options.items() if v is not None}


def load_sources(config: ReportConfig) -> list[Source]:
    """The zero-shot baseline first (when asked for), then the runs in the order given."""
    sources = []
    if config.zero_shot is not None:
        cache_dir = Path(config.out) / ZERO_SHOT
        sources.append(load_zero_shot_source(Path(config.zero_shot), Path(config.text_cache), config.split, cache_dir))
    runs = [load_run_source(r, config.split, config.checkpoint, config.prepared, config.text_cache)
            for r in config.runs]
    if config.labels:  # checked distinct: they are the names
        return sources + [replace(source, name=label) for source, label in zip(runs, config.labels)]
    return _with_unique_names(sources + runs)


def _with_unique_names(sources: list[Source]) -> list[Source]:
    """Name runs by directory; where two share a name, prefix the parent directory."""
    names = [s.name for s in sources]
    out = []
    for source in sources:
        name = source.name
        if names.count(name) > 1 and source.kind == "run":
            name = f"{source.location.resolve().parent.name}/{name}"
        out.append(replace(source, name=name))
    if len({s.name for s in out}) != len(out):
        raise SageError(f"the same run is listed twice: {', '.join(s.name for s in out)}")
    return out


def predict(
    source: Source, config: ReportConfig, device: torch.device, progress: Progress | None
) -> tuple[Predictions, dict[str, Any]]:
    """The source's predictions: from its cache when the fingerprint matches, else evaluated now."""
    cache_inputs = {**source.identity, "split": config.split, **config.tte_protocol}
    fingerprint = artifacts.sha256_json(cache_inputs)
    cached = load_cached_predictions(source.cache_dir, fingerprint)
    saved = load_logits(source.cache_dir, fingerprint) if cached is not None and config.needs_logits else None
    if cached is not None and (saved is not None or not config.needs_logits):
        predictions, record = cached
        logger.info("%s: reusing cached predictions in %s", source.name, source.cache_dir)
        if saved is not None:
            predictions = replace(predictions, logits=saved[0])
        return predictions, {**record.get("evaluation", {}), "cached": True}
    classifier, backbone = source.build(device)
    transform = (build_tte_transform(backbone, config.tte_mode, config.tte_expand) if config.tte
                 else build_eval_transform(backbone))
    loader = build_eval_loader(source.test_set, transform, config.batch_size, config.num_workers, device)
    predictions, stats = evaluate_classifier(classifier, loader, device, len(source.test_set.samples), progress,
                                             keep_logits=config.needs_logits, precision=source.precision)
    evaluation = {"seconds": round(stats.seconds, 3), "images_per_second": round(stats.images_per_second, 1),
                  "device": stats.device, "precision": stats.precision, "batch_size": config.batch_size,
                  **config.tte_protocol, "image_size": backbone.get("image_size")}
    record = artifacts.build_record("predictions", cache_inputs, evaluation=evaluation)
    save_cache(source, config, predictions, record, fingerprint)
    return predictions, {**evaluation, "cached": False}


def save_cache(source: Source, config: ReportConfig, predictions: Predictions, record: dict[str, Any],
               fingerprint: str) -> None:
    """Write the source's predictions cache while holding its directory's lock (one writer at a
    time; a directory in use, by training or another report, is left alone: nothing is cached)."""
    cache_dir = source.cache_dir
    held = cache_dir.resolve() == Path(config.out).resolve()  # the report's own --out: locked already
    with try_lock_output_dir(cache_dir, STAGE, already_held=held) as locked:
        if not locked:
            logger.warning("%s: in use by another sage process; its predictions cache is not updated", cache_dir)
            return
        with explain_write_errors(cache_dir, "predictions cache"):
            also = None
            if predictions.logits is not None:  # before the record: a record never vouches for missing logits
                also = {LOGITS: save_logits(cache_dir, predictions.logits, predictions, fingerprint)}
            save_predictions(cache_dir, predictions, record, also)


def write_outputs(out: Path, report: dict[str, Any], latex: bool = False, figures: bool = True) -> dict[str, Any]:
    """Tables, figures and pages first, report.json (the record, with their sha256) last; returns the record."""
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_RECORD).unlink(missing_ok=True)
    artifacts.write_table(out, PER_CLASS, build.build_per_class_table(report))
    artifacts.write_bytes_atomic(out / "report.md", markdown.render_markdown(report).encode())
    # figures/NAME.pdf and .png, and the page's inline SVG
    plots = render_figures(report, out / FIGURES) if figures else {}
    for stale in (out / FIGURES).glob("*"):  # figures of an earlier report (--force) that this one has not
        if stale.suffix in (".pdf", ".png") and stale.stem not in plots:
            stale.unlink()
    artifacts.write_bytes_atomic(out / "report.html", html.render_html(report, plots).encode())
    if latex:
        artifacts.write_bytes_atomic(out / LATEX, tex.render_latex(report).encode())
    report = artifacts.seal_record(out, report, OUTPUTS[1:] + ((LATEX,) if latex else ()))
    artifacts.write_record(out, REPORT_RECORD, report)
    return report


__all__ = ["ReportConfig", "ReportResult", "run"]
