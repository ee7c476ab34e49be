"""Reading a text cache back, for train and report, and refusing one that does not fit.

A cache fits a run when it was encoded from the same ``classes.parquet`` of the same prepared
dataset (``classes_sha256`` and ``prepared_fingerprint`` in ``encode.json``) and with the same
backbone (model name plus tag, or checkpoint sha256).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from sage_cli import artifacts
from sage_cli.artifacts import CLASS_EMBEDDINGS, ENCODE_RECORD, TEXT_CACHE
from sage_cli.backbone import backbone_identity
from sage_cli.errors import SageError


@dataclass(frozen=True)
class TextCache:
    """A loaded text cache: one L2-normalised vector per class, in class-id order."""

    directory: Path
    class_embeddings: torch.Tensor  # [C, E] float32
    class_names: tuple[str, ...]  # index = class_id
    record: dict[str, Any]
    texts: pa.Table | None = None  # text_cache.parquet when asked for (class_id, source, text, embedding)

    @property
    def embedding_dim(self) -> int:
        return int(self.class_embeddings.shape[1])

    def text_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-text embeddings ``[N, E]`` and their class ids ``[N]`` (needs ``with_texts=True``)."""
        if self.texts is None:
            raise ValueError("load_text_cache(..., with_texts=True) is needed for per-text embeddings")
        matrix = torch.from_numpy(artifacts.embedding_matrix(self.texts).copy())
        return matrix, torch.from_numpy(self.texts.column("class_id").to_numpy().copy())


def load_text_cache(
    text_dir: str | os.PathLike[str],
    prepared: str | os.PathLike[str] | None = None,
    with_texts: bool = False,
) -> TextCache:
    """Read ``text_dir`` (the output of ``sage encode-text``); with ``prepared``, refuse a cache
    encoded for another prepared dataset. SageError (one line) on any mismatch or damage."""
    directory = Path(text_dir)
    record = artifacts.read_record(directory, ENCODE_RECORD)
    if record.get("stage") != "encode-text":
        raise SageError(f"{directory / ENCODE_RECORD}: not an encode-text record (stage {record.get('stage')!r})")
    table = artifacts.read_table(directory, CLASS_EMBEDDINGS).sort_by("class_id")
    ids = table.column("class_id").to_pylist()
    if ids != list(range(len(ids))):
        raise SageError(f"{directory / CLASS_EMBEDDINGS.filename}: class_id must run 0..C-1 without gaps")
    matrix = torch.from_numpy(artifacts.embedding_matrix(table).copy())
    if matrix.shape[1] != record.get("embedding_dim"):
        raise SageError(
            f"{directory}: embeddings have size {matrix.shape[1]} but encode.json says {record.get('embedding_dim')}"
        )
    texts = artifacts.read_table(directory, TEXT_CACHE) if with_texts else None
    cache = TextCache(directory, matrix, tuple(table.column("class_name").to_pylist()), record, texts)
    if prepared is not None:
        check_text_cache_prepared(cache, prepared)
    return cache


def check_text_cache_prepared(cache: TextCache, prepared: str | os.PathLike[str]) -> None:
    """Refuse a cache whose classes table or prepared fingerprint is not ``prepared``'s."""
    prepared = Path(prepared)
    classes = prepared / artifacts.CLASSES.filename
    if not classes.is_file():
        raise SageError(f"{classes}: missing; is {prepared} a prepared dataset (sage prepare)?")
    fix = f"re-run sage encode-text --prepared {prepared}"
    if artifacts.sha256_file(classes) != cache.record.get("classes_sha256"):
        raise SageError(
            f"{cache.directory}: text cache was encoded for other classes than {classes}; {fix}"
        )
    fingerprint = artifacts.read_record(prepared, artifacts.PREPARE_RECORD)["fingerprint"]
    if fingerprint != cache.record.get("prepared_fingerprint"):
        raise SageError(
            f"{cache.directory}: text cache was encoded for another prepared dataset than {prepared}; {fix}"
        )


def check_text_cache_matches(cache: TextCache, model_record: dict[str, Any]) -> None:
    """Refuse a cache encoded with another backbone than ``model_record`` (``LoadedClip.record``)."""
    ours, theirs = backbone_identity(model_record), backbone_identity(cache.record)
    if ours != theirs:
        raise SageError(
            f"{cache.directory}: text cache was encoded with {theirs['model']} ({theirs['weights']}) but the "
            f"backbone is {ours['model']} ({ours['weights']}); re-run sage encode-text with the same "
            "--model/--pretrained, or pass that cache's backbone"
        )
    if model_record.get("embedding_dim") not in (None, cache.embedding_dim):
        raise SageError(
            f"{cache.directory}: text embeddings have size {cache.embedding_dim}, "
            f"the backbone's {model_record['embedding_dim']}"
        )
