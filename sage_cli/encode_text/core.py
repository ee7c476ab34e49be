"""``run``: gather each class's texts, encode them once with the frozen text tower, write the cache.

Texts per class come from templates, a descriptions file and/or a chat model, combined. Each text
is encoded and L2-normalised (``text_cache.parquet``); a class's vector is the renormalised mean
of its texts' vectors (``class_embeddings.parquet``). ``encode.json`` is written last and holds the
fingerprint of everything that decides the result, so a re-run with the same inputs does nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
import torch.nn.functional as F

from sage_cli import artifacts
from sage_cli.artifacts import CLASS_EMBEDDINGS, ENCODE_RECORD, TEXT_CACHE
from sage_cli.backbone import (check_model_name, classify_pretrained, compute_weights_sha256, load_clip,
                               resolve_device)
from sage_cli.config import check_batch_size
from sage_cli.encode_text.descriptions import load_descriptions
from sage_cli.encode_text.llm import PROMPT_VERSION, GenerationResult, LLMConfig, generate_descriptions
from sage_cli.encode_text.templates import SINGLE, TemplateSet, load_templates
from sage_cli.errors import SageError, explain_write_errors
from sage_cli.locks import lock_output_dir
from sage_cli.precision import autocast, describe_precision

logger = logging.getLogger(__name__)

STAGE = "encode-text"
OUTPUTS = (TEXT_CACHE.filename, CLASS_EMBEDDINGS.filename)
# progress(phase, done, total): phase is "generate" (chat requests) or "encode" (texts).
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class EncodeTextConfig:
    """Everything ``sage encode-text`` needs; see ``docs/encode_text.md`` for each option."""

    prepared: Path
    out: Path
    model: str
    pretrained: str
    templates: str = "ensemble"  # single | ensemble | none | path of a templates file
    descriptions: Path | None = None
    generate: LLMConfig | None = None
    batch_size: int = 256
    device: str = "auto"
    force: bool = False

    def __post_init__(self) -> None:
        check_batch_size("--batch-size", self.batch_size)
        if self.templates.strip().lower() == "none" and not (self.descriptions or self.generate):
            raise SageError("--templates none: needs --descriptions or --generate, else a class has no text")


@dataclass(frozen=True)
class PreparedClasses:
    """The class table of a prepared dataset and the hashes that identify it."""

    directory: Path
    names: tuple[str, ...]  # index = class_id
    classes_sha256: str
    prepared_fingerprint: str


@dataclass(frozen=True)
class ClassTexts:
    """One row per text: parallel lists, grouped by class in class-id order."""

    class_ids: list[int] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class EncodeTextResult:
    out: Path
    skipped: bool  # True when --out already held this exact result
    record: dict[str, Any]
    fallback_classes: tuple[str, ...] = ()  # classes with no description at all (templates only)
    llm_requests: int = 0
    llm_fallback: dict[str, str] = field(default_factory=dict)  # class name -> why its chat answer was not used


def run(config: EncodeTextConfig, progress: Progress | None = None) -> EncodeTextResult:
    """Encode the class texts of ``config.prepared`` into ``config.out`` (once)."""
    with lock_output_dir(config.out, STAGE):
        return _run_locked(config, progress)


def _run_locked(config: EncodeTextConfig, progress: Progress | None) -> EncodeTextResult:
    prepared = read_prepared_classes(config.prepared)
    templates = load_templates(config.templates)
    described = load_descriptions(config.descriptions, prepared.names) if config.descriptions else {}
    inputs = build_inputs(config, prepared, templates)
    fingerprint = artifacts.sha256_json(inputs)
    # A result of these inputs where some classes got no usable chat answer is retried without
    # --force: the classes that fell back are asked again, the answers that came are reused.
    retry = None if config.force else find_incomplete_generation(config.out, fingerprint)
    if retry is None and artifacts.guard_output_dir(config.out, ENCODE_RECORD, fingerprint, OUTPUTS, config.force):
        logger.info("%s already holds this text cache", config.out)
        return EncodeTextResult(config.out, True, artifacts.read_record(config.out, ENCODE_RECORD))
    device = resolve_device(config.device)
    clip = load_clip(config.model, config.pretrained, device)  # fails before anything is touched
    generation = _generate(config, prepared, progress)
    llm_fallback = list_generation_fallback(prepared.names, generation)
    identity = {**inputs, "generate_fallback": sorted(generation.rejected or {})} if llm_fallback else inputs
    if retry is not None and _holds_result(config.out, retry, artifacts.sha256_json(identity)):
        logger.info("%s: the same %d class(es) still have no usable chat answer; the text cache is unchanged",
                    config.out, len(llm_fallback))
        return EncodeTextResult(config.out, True, retry, llm_requests=generation.requests,
                                llm_fallback=_fallback_reasons(llm_fallback))
    texts, fallback = _gather_texts(config, prepared, templates, described, generation)
    (config.out / ENCODE_RECORD).unlink(missing_ok=True)  # tables first, record last: never stale
    with explain_write_errors(config.out, "text cache"):  # a re-run of these inputs may finish a killed one
        artifacts.mark_pending(config.out, ENCODE_RECORD, fingerprint)
    start = time.perf_counter()
    embeddings = encode_texts(clip.model, clip.tokenizer, texts.texts, config.batch_size, device, progress)
    seconds = time.perf_counter() - start
    pooled = compute_class_embeddings(embeddings, torch.tensor(texts.class_ids), len(prepared.names))
    record = artifacts.build_record(
        STAGE, inputs, identity=identity,
        **_record_fields(config, prepared, templates, clip.record, texts, fallback),
        generate_fallback={"inputs_fingerprint": fingerprint, "classes": llm_fallback} if llm_fallback else None,
        device=str(device), precision=describe_precision(device),
        seconds=round(seconds, 3), texts_per_second=round(len(texts.texts) / max(seconds, 1e-9), 1),
    )
    with explain_write_errors(config.out, "text cache"):
        write_outputs(config.out, prepared.names, texts, embeddings, pooled)
        record = artifacts.seal_record(config.out, record, OUTPUTS)
        artifacts.write_record(config.out, ENCODE_RECORD, record)
        artifacts.clear_pending(config.out, ENCODE_RECORD)
    return EncodeTextResult(config.out, False, record, tuple(fallback), generation.requests,
                            _fallback_reasons(llm_fallback))


def _gather_texts(config: EncodeTextConfig, prepared: PreparedClasses, templates: TemplateSet,
                  described: dict[int, list[str]], generation: GenerationResult) -> tuple[ClassTexts, list[str]]:
    """:func:`collect_texts`, with a warning naming the classes left with templates only."""
    texts, fallback = collect_texts(prepared.names, templates, described, generation.sentences)
    if not (config.descriptions or config.generate):
        fallback = []  # templates are the only source: nothing fell back
    if fallback:
        logger.warning("%d class(es) have no description and use templates only: %s",
                       len(fallback), ", ".join(fallback[:10]) + (" ..." if len(fallback) > 10 else ""))
    return texts, fallback


def find_incomplete_generation(out: Path, fingerprint: str) -> dict[str, Any] | None:
    """The record in ``out`` when it is a result of these inputs (``fingerprint``) in which some
    classes fell back to templates for want of a usable chat answer; else None."""
    path = out / ENCODE_RECORD
    if not path.is_file():
        return None
    try:
        record = artifacts.parse_record(path)
    except SageError:
        return None  # damaged: the guard says so
    fallback = record.get("generate_fallback")
    if isinstance(fallback, dict) and fallback.get("inputs_fingerprint") == fingerprint and fallback.get("classes"):
        return record
    return None


def list_generation_fallback(names: Sequence[str], generation: GenerationResult) -> list[dict[str, Any]]:
    """One entry per class the chat model gave no usable answer for: id, name and why."""
    return [{"class_id": class_id, "class_name": names[class_id], "reason": reason}
            for class_id, reason in sorted((generation.rejected or {}).items())]


def _fallback_reasons(entries: list[dict[str, Any]]) -> dict[str, str]:
    return {entry["class_name"]: entry["reason"] for entry in entries}


def _holds_result(out: Path, record: dict[str, Any], fingerprint: str) -> bool:
    """Whether ``record`` (read from ``out``) has ``fingerprint`` and its tables are intact."""
    return (record.get("fingerprint") == fingerprint and all((out / name).is_file() for name in OUTPUTS)
            and artifacts.find_changed_file(out, record) is None)


def read_prepared_classes(directory: Path) -> PreparedClasses:
    """Class names (by id) and identifying hashes of a prepared dataset directory."""
    record = artifacts.read_record(directory, artifacts.PREPARE_RECORD)
    table = artifacts.read_table(directory, artifacts.CLASSES).sort_by("class_id")
    ids = table.column("class_id").to_pylist()
    if ids != list(range(len(ids))):
        raise SageError(f"{directory / artifacts.CLASSES.filename}: class_id must run 0..C-1 without gaps")
    if not ids:
        raise SageError(f"{directory / artifacts.CLASSES.filename}: holds no classes")
    return PreparedClasses(
        directory=directory,
        names=tuple(table.column("name").to_pylist()),
        classes_sha256=artifacts.sha256_file(directory / artifacts.CLASSES.filename),
        prepared_fingerprint=record["fingerprint"],
    )


def build_inputs(config: EncodeTextConfig, prepared: PreparedClasses, templates: TemplateSet) -> dict[str, Any]:
    """What decides the cache's content (not where files lie): its fingerprint is the no-op test."""
    name = check_model_name(config.model)
    kind, weights = classify_pretrained(name, config.pretrained)
    generate = config.generate
    return {
        "classes_sha256": prepared.classes_sha256,
        "prepared_fingerprint": prepared.prepared_fingerprint,
        "model": name,
        "weights": (f"sha256:{sha}" if (sha := compute_weights_sha256(name, kind, weights)) else (weights or "none")),
        "templates": list(templates.templates),
        "descriptions_sha256": artifacts.sha256_file(config.descriptions) if config.descriptions else None,
        "generate": {"model": generate.model, "n": generate.n, "prompt_version": PROMPT_VERSION}
        if generate else None,
    }


def _generate(config: EncodeTextConfig, prepared: PreparedClasses, progress: Progress | None
              ) -> GenerationResult:
    if config.generate is None:
        return GenerationResult({}, 0, 0, {})
    step = (lambda done, total: progress("generate", done, total)) if progress else None
    result = generate_descriptions(config.generate, prepared.names, step)
    logger.info("chat model: %d request(s), %d answer(s) from the cache", result.requests, result.cached)
    if result.rejected:
        logger.warning("%d of %d class(es) got no usable chat answer and fell back to templates; "
                       "a re-run asks for them again", len(result.rejected), len(prepared.names))
    return result


def collect_texts(
    names: Sequence[str],
    templates: TemplateSet,
    described: dict[int, list[str]],
    generated: dict[int, list[str]],
) -> tuple[ClassTexts, list[str]]:
    """Every class's texts (templates, then file descriptions, then generated), duplicates dropped.

    Returns the texts and the names of classes that got no description (only templates; with
    ``--templates none`` they fall back to the single template).
    """
    texts = ClassTexts()
    fallback = []
    for class_id, name in enumerate(names):
        descriptions = described.get(class_id, []) + generated.get(class_id, [])
        if not descriptions:
            fallback.append(name)
        rendered = templates.render(name) or (TemplateSet("single", SINGLE).render(name) if not descriptions else [])
        seen: set[str] = set()
        for source, items in (("template", rendered), ("description", descriptions)):
            for text in items:
                if text not in seen:
                    seen.add(text)
                    texts.class_ids.append(class_id)
                    texts.sources.append(source)
                    texts.texts.append(text)
    return texts, fallback


def encode_texts(
    model: torch.nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    texts: Sequence[str],
    batch_size: int,
    device: torch.device,
    progress: Progress | None = None,
) -> torch.Tensor:
    """L2-normalised text embeddings ``[N, E]`` (float32, on CPU), in batches, without grad."""
    chunks = []
    with torch.no_grad(), autocast(device):
        for start in range(0, len(texts), batch_size):
            tokens = tokenizer(list(texts[start:start + batch_size])).to(device)
            features = model.encode_text(tokens).float()  # [B, E]
            chunks.append(F.normalize(features, dim=-1).cpu())
            if progress:
                progress("encode", min(start + batch_size, len(texts)), len(texts))
    return torch.cat(chunks)


def compute_class_embeddings(embeddings: torch.Tensor, class_ids: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per class: normalise(mean of that class's normalised text embeddings). ``[C, E]``."""
    sums = torch.zeros(num_classes, embeddings.shape[1], dtype=embeddings.dtype)
    sums.index_add_(0, class_ids, embeddings)
    counts = torch.bincount(class_ids, minlength=num_classes).clamp(min=1).unsqueeze(1)
    return F.normalize(sums / counts, dim=-1)


def _fixed_size_list(matrix: torch.Tensor) -> pa.FixedSizeListArray:
    flat = pa.array(matrix.contiguous().numpy().reshape(-1), type=pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1])


def write_outputs(out: Path, names: Sequence[str], texts: ClassTexts, embeddings: torch.Tensor,
                  pooled: torch.Tensor) -> None:
    dim = embeddings.shape[1]
    artifacts.write_table(out, TEXT_CACHE, {
        "class_id": pa.array(texts.class_ids, pa.int64()),
        "class_name": [names[i] for i in texts.class_ids],
        "source": texts.sources,
        "text": texts.texts,
        "embedding": _fixed_size_list(embeddings),
    }, embedding_dim=dim)
    artifacts.write_table(out, CLASS_EMBEDDINGS, {
        "class_id": pa.array(range(len(names)), pa.int64()),
        "class_name": list(names),
        "embedding": _fixed_size_list(pooled),
    }, embedding_dim=dim)


def _record_fields(config: EncodeTextConfig, prepared: PreparedClasses, templates: TemplateSet,
                   backbone: dict[str, Any], texts: ClassTexts, fallback: list[str]) -> dict[str, Any]:
    generate = config.generate
    return {
        "prepared": artifacts.relative_path(prepared.directory, config.out),
        "model": backbone["model"],
        "pretrained": backbone["pretrained"],
        "pretrained_sha256": backbone["pretrained_sha256"],
        "embedding_dim": backbone["embedding_dim"],
        "backbone": backbone,
        "classes_sha256": prepared.classes_sha256,
        "prepared_fingerprint": prepared.prepared_fingerprint,
        "templates": {"name": templates.name, "templates": list(templates.templates)},
        "descriptions": str(config.descriptions.resolve()) if config.descriptions else None,
        "descriptions_sha256": artifacts.sha256_file(config.descriptions) if config.descriptions else None,
        "generate": {"url": generate.url, "model": generate.model, "n": generate.n,
                     "prompt_version": PROMPT_VERSION} if generate else None,
        "counts": {
            "classes": len(prepared.names),
            "texts": len(texts.texts),
            "template_texts": texts.sources.count("template"),
            "description_texts": texts.sources.count("description"),
            "fallback_classes": len(fallback),
        },
        "fallback_classes": fallback,
    }
