"""Every on-disk artifact of the pipeline: Parquet schemas, JSON records, atomic writes, guards.

Each stage writes its tables with :func:`write_table` and finishes by writing a JSON record
(``prepare.json``, ``encode.json``, ``train.json`` ...) with :func:`write_record`. The record is
written last, so a directory with tables but no record is an interrupted run. Later stages read
tables with :func:`read_table`, which validates columns and types against the schemas below and
fails with a one-line error naming the file.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sage_cli import __version__
from sage_cli.errors import SageError
from sage_cli.outdir import check_output_dir

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: train.json's config in the one schema (sage_cli.schema); 1: the AdapterConfig layout
_META_TABLE = b"sage.table"
_META_VERSION = b"sage.schema_version"

# A column type of ``None`` in a schema below means "fixed-size list of float32, any size".
EMBEDDING = None


@dataclass(frozen=True)
class TableSchema:
    """Name, file name and column types of one Parquet artifact."""

    name: str
    filename: str
    columns: Mapping[str, pa.DataType | None]

    def arrow_schema(self, embedding_dim: int | None = None) -> pa.Schema:
        fields = []
        for col, dtype in self.columns.items():
            if dtype is EMBEDDING:
                if embedding_dim is None:
                    raise ValueError(f"{self.name}: embedding_dim is required for column {col!r}")
                dtype = pa.list_(pa.float32(), embedding_dim)
            fields.append(pa.field(col, dtype))
        meta = {_META_TABLE: self.name.encode(), _META_VERSION: str(SCHEMA_VERSION).encode()}
        return pa.schema(fields, metadata=meta)


MANIFEST = TableSchema(
    "manifest",
    "manifest.parquet",
    {"sample_id": pa.int64(), "path": pa.string(), "label": pa.int64(), "split": pa.string()},
)
CLASSES = TableSchema(
    "classes",
    "classes.parquet",
    {
        "class_id": pa.int64(),
        "name": pa.string(),
        "train_count": pa.int64(),
        "prior": pa.float64(),
        "group": pa.string(),
    },
)
TEXT_CACHE = TableSchema(
    "text_cache",
    "text_cache.parquet",
    {
        "class_id": pa.int64(),
        "class_name": pa.string(),
        "source": pa.string(),
        "text": pa.string(),
        "embedding": EMBEDDING,
    },
)
CLASS_EMBEDDINGS = TableSchema(
    "class_embeddings",
    "class_embeddings.parquet",
    {"class_id": pa.int64(), "class_name": pa.string(), "embedding": EMBEDDING},
)
PREDICTIONS = TableSchema(
    "predictions",
    "predictions.parquet",
    {
        "sample_id": pa.int64(),
        "label": pa.int64(),
        "top_classes": pa.list_(pa.int64()),
        "top_scores": pa.list_(pa.float32()),
    },
)

PER_CLASS = TableSchema(
    "per_class",
    "per_class.parquet",
    {
        "run": pa.string(),
        "method": pa.string(),
        "seed": pa.int64(),  # null for the zero-shot baseline
        "run_group": pa.string(),  # runs of one configuration across seeds (report.json "groups")
        "class_id": pa.int64(),
        "name": pa.string(),
        "group": pa.string(),  # the class's many / medium / few group
        "train_count": pa.int64(),
        "n_test": pa.int64(),
        "accuracy": pa.float64(),  # NaN for a class with no evaluated sample
    },
)
IMAGE_INDEX = TableSchema(  # sage cache-images: where each sample's pixels lie in a view's raw file
    "image_index",
    "image_index.parquet",
    {"sample_id": pa.int64(), "view": pa.string(), "offset": pa.int64(), "height": pa.int32(), "width": pa.int32()},
)

SPLITS = ("train", "val", "test")
GROUPS = ("many", "medium", "few")

PREPARE_RECORD = "prepare.json"
ENCODE_RECORD = "encode.json"
TRAIN_RECORD = "train.json"
REPORT_RECORD = "report.json"
PREDICTIONS_RECORD = "predictions.json"


# --------------------------------------------------------------------------------------------
# Atomic writes


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    An interrupted or failed write leaves the old file (or nothing) in place, never half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o666 & ~current_umask())  # mkstemp makes it private; outputs are as readable as open()'s
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def current_umask() -> int:
    """The process umask (reading it means setting it; it is put straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def replace_directory(tmp: Path, final: Path) -> None:
    """Rename the directory ``tmp`` to ``final``; an existing ``final`` is moved aside first (as
    ``.NAME.old.tmp``, which cleaners of leftovers remove), so no instant lacks both."""
    if final.exists():
        aside = final.parent / f".{final.name}.old.tmp"
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(final, aside)
        os.replace(tmp, final)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(tmp, final)


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    write_bytes_atomic(path, text.encode())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# --------------------------------------------------------------------------------------------
# Parquet tables


def write_table(
    directory: str | os.PathLike[str],
    schema: TableSchema,
    data: pa.Table | Mapping[str, Any] | Any,
    embedding_dim: int | None = None,
) -> Path:
    """Write ``data`` (Arrow table, dict of columns or pandas DataFrame) as ``schema``, atomically."""
    table = build_table(schema, data, embedding_dim)
    path = Path(directory) / schema.filename
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def build_table(schema: TableSchema, data: pa.Table | Mapping[str, Any] | Any,
                embedding_dim: int | None = None) -> pa.Table:
    """``data`` (Arrow table, dict of columns or pandas DataFrame) as an Arrow table of ``schema``."""
    target = schema.arrow_schema(embedding_dim)
    if isinstance(data, pa.Table):
        table = data.select(list(schema.columns)).cast(target)
    elif hasattr(data, "to_dict") and hasattr(data, "columns"):  # pandas
        table = pa.Table.from_pandas(data[list(schema.columns)], schema=target, preserve_index=False)
    else:
        table = pa.table({c: data[c] for c in schema.columns}, schema=target)
    return table.replace_schema_metadata(target.metadata)


def serialize_table(table: pa.Table) -> bytes:
    """The Parquet bytes of ``table`` (to hash exactly what is written)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def parse_table(data: bytes, schema: TableSchema, path: Path | str) -> pa.Table:
    """Parquet ``data`` (read from ``path``) as a validated table of ``schema``."""
    try:
        table = pq.read_table(pa.BufferReader(data))
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise SageError(f"{path}: not a readable Parquet file ({exc})") from None
    validate_table(table, schema, path)
    return table


def read_table(directory_or_file: str | os.PathLike[str], schema: TableSchema) -> pa.Table:
    """Read and validate one artifact table. Raises :class:`SageError` naming the file."""
    path = Path(directory_or_file)
    if path.is_dir() or path.suffix != ".parquet":
        path = path / schema.filename
    if not path.is_file():
        raise SageError(f"{path}: missing ({schema.name} table); run the stage that writes it first")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise SageError(f"{path}: not a readable Parquet file ({exc})") from None
    validate_table(table, schema, path)
    return table


def validate_table(table: pa.Table, schema: TableSchema, path: Path | str) -> None:
    meta = table.schema.metadata or {}
    name = meta.get(_META_TABLE, b"").decode()
    if name and name != schema.name:
        raise SageError(f"{path}: holds a {name!r} table, expected {schema.name!r}")
    version = int(meta.get(_META_VERSION, b"0") or 0)
    if version > SCHEMA_VERSION:
        raise SageError(
            f"{path}: schema version {version} is newer than this sage ({SCHEMA_VERSION}); upgrade sage"
        )
    for col, dtype in schema.columns.items():
        if col not in table.column_names:
            raise SageError(f"{path}: column {col!r} is missing ({schema.name} table)")
        actual = table.schema.field(col).type
        if dtype is EMBEDDING:
            ok = pa.types.is_fixed_size_list(actual) and actual.value_type == pa.float32()
            want = "fixed_size_list<float32>"
        else:
            ok = actual == dtype
            want = str(dtype)
        if not ok:
            raise SageError(f"{path}: column {col!r} has type {actual}, expected {want}")


def embedding_matrix(table: pa.Table, column: str = "embedding") -> Any:
    """The fixed-size-list column as a float32 numpy array of shape [rows, dim]."""
    col = table.column(column).combine_chunks()
    dim = col.type.list_size
    return col.values.to_numpy(zero_copy_only=False).reshape(-1, dim)


# --------------------------------------------------------------------------------------------
# Hashes and records


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Content hash of a JSON-serialisable object (keys sorted, so order does not matter)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()


def relative_path(path: str | os.PathLike[str], start: str | os.PathLike[str]) -> str:
    """``path`` relative to the directory ``start`` (POSIX separators). Records hold paths this way,
    so an artifact copied together with what it names still finds it; hashes say it is the same."""
    return Path(os.path.relpath(Path(path).resolve(), Path(start).resolve())).as_posix()


def strip_locations(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """``inputs`` (of a record) without the ``path`` of each input: what identifies them is their
    content (fingerprints and hashes), so a run's fingerprint survives a move."""
    return {k: {f: v for f, v in value.items() if f != "path"} if isinstance(value, dict) else value
            for k, value in inputs.items()}


def describe_difference(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The keys (dotted paths) whose values differ between two JSON-like trees, sorted."""
    out: list[str] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += describe_difference(a, b, f"{prefix}{key}.")
        elif json.dumps(a, sort_keys=True, default=_json_default) != json.dumps(b, sort_keys=True, default=_json_default):
            out.append(f"{prefix}{key}")
    return out


def software_versions() -> dict[str, str]:
    """Versions of sage, Python and the libraries behind the artifacts (read from package metadata,
    so recording them does not import torch)."""
    versions = {"sage": __version__, "python": platform.python_version()}
    for key, dist in (("torch", "torch"), ("open_clip", "open_clip_torch"), ("pandas", "pandas"),
                      ("pyarrow", "pyarrow")):
        try:
            versions[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def build_record(stage: str, inputs: Mapping[str, Any], *, identity: Mapping[str, Any] | None = None,
                 **fields: Any) -> dict[str, Any]:
    """A stage record: what ran, on which inputs (with a fingerprint of them), with what software.

    The fingerprint is of ``identity`` when given (the inputs without their locations), else of ``inputs``.
    """
    return {
        "stage": stage,
        "schema_version": SCHEMA_VERSION,
        "fingerprint": sha256_json(inputs if identity is None else identity),
        "inputs": dict(inputs),
        **fields,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": software_versions(),
    }


FILES = "files"  # in a record: {file name relative to the record's directory: sha256}
RECORD_SHA256 = "record_sha256"  # in a record: the sha256 of the record without this key


def seal_record(directory: str | os.PathLike[str], record: Mapping[str, Any], files: Iterable[str]) -> dict[str, Any]:
    """``record`` with the sha256 of each of ``files`` that exists (relative to ``directory``) and
    its own hash: :func:`read_record` refuses a record or an artifact changed since."""
    directory = Path(directory)
    return seal_record_hashes(record, {name: sha256_file(directory / name) for name in files
                                       if (directory / name).is_file()})


def seal_record_hashes(record: Mapping[str, Any], hashes: Mapping[str, str]) -> dict[str, Any]:
    """``record`` sealed with ``hashes`` (file name -> sha256 of the bytes the caller wrote): a
    writer that hashes its own bytes never vouches for a file another process put there since."""
    sealed = {k: v for k, v in record.items() if k != RECORD_SHA256}
    sealed[FILES] = dict(hashes)
    sealed[RECORD_SHA256] = compute_record_sha256(sealed)
    return sealed


def compute_record_sha256(record: Mapping[str, Any]) -> str:
    """The hash of ``record`` (without its own hash) as it reads back from JSON."""
    body = {k: v for k, v in record.items() if k != RECORD_SHA256}
    return sha256_json(json.loads(json.dumps(body, default=_json_default)))


def write_record(directory: str | os.PathLike[str], filename: str, record: Mapping[str, Any]) -> Path:
    path = Path(directory) / filename
    write_json_atomic(path, record)
    return path


def read_record(directory: str | os.PathLike[str], filename: str, verify: bool = True) -> dict[str, Any]:
    """Read a stage record; with ``verify``, refuse it when it, or a file it lists, changed since it was written."""
    path = Path(directory) / filename
    if not path.is_file():
        raise SageError(f"{path}: missing; is {Path(directory)} the output of the stage that writes it?")
    record = parse_record(path)
    if verify:
        verify_record_files(Path(directory), filename, record)
    return record


def parse_record(path: Path) -> dict[str, Any]:
    """The JSON of a stage record, checked against its own hash; SageError naming a damaged one."""
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SageError(f"{path}: not valid JSON ({exc}); is it damaged?") from None
    if not isinstance(record, dict) or "fingerprint" not in record:
        raise SageError(f"{path}: not a sage stage record (no 'fingerprint')")
    if not isinstance(record.get("schema_version", 0), int):
        raise SageError(f"{path}: schema_version {record['schema_version']!r} is not an integer; is it damaged?")
    if record.get("schema_version", 0) > SCHEMA_VERSION:
        raise SageError(f"{path}: written by a newer sage (schema {record['schema_version']}); upgrade sage")
    if RECORD_SHA256 in record and record[RECORD_SHA256] != compute_record_sha256(record):
        raise SageError(f"{path}: damaged or edited since sage wrote it (its content does not match its "
                        f"{RECORD_SHA256}); re-run the stage that writes it")
    return record


def verify_record_files(directory: Path, filename: str, record: Mapping[str, Any]) -> None:
    """Refuse a file listed in ``record`` that is missing or no longer has the recorded sha256."""
    changed = find_changed_file(directory, record)
    if changed is None:
        return
    name, how = changed
    stage = str(record.get("stage", "?"))
    writer = _WRITERS.get(stage, stage)
    fix = _REDO.get(stage, "re-run sage {writer} with --force").format(writer=writer, directory=directory)
    if how == "missing":
        raise SageError(f"{directory / name}: missing (listed in {directory / filename}); {fix}")
    raise SageError(
        f"{directory / name}: content differs from the sha256 recorded in {directory / filename} (damaged or "
        f"changed since sage {writer} wrote it); {fix}"
    )


# The command that writes a stage's record where it is not `sage STAGE`, and how its outputs are
# made again where that is not `sage STAGE --force`: caches are recomputed.
_WRITERS = {"predictions": "report", "features": "train", "pretrain": "pretrain-toy"}
_REDO = {"predictions": "sage report recomputes them", "features": "delete {directory} to recompute them"}


def find_changed_file(directory: Path, record: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first file listed in ``record`` that is ``"missing"`` or ``"changed"``, else None."""
    for name, expected in (record.get(FILES) or {}).items():
        path = directory / name
        if not path.is_file():
            return name, "missing"
        if sha256_file(path) != expected:
            return name, "changed"
    return None


def pending_path(directory: str | os.PathLike[str], record_name: str) -> Path:
    """``.RECORD.pending``: written (with the run's fingerprint) before a stage writes its outputs in
    place and removed after its record, so that a re-run with the same inputs may finish a killed run."""
    return Path(directory) / f".{record_name}.pending"


def mark_pending(directory: str | os.PathLike[str], record_name: str, fingerprint: str) -> None:
    write_json_atomic(pending_path(directory, record_name), {"fingerprint": fingerprint})


def clear_pending(directory: str | os.PathLike[str], record_name: str) -> None:
    pending_path(directory, record_name).unlink(missing_ok=True)


def _pending_fingerprint(directory: Path, record_name: str) -> str | None:
    try:
        return json.loads(pending_path(directory, record_name).read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


def guard_output_dir(
    directory: str | os.PathLike[str],
    record_name: str,
    fingerprint: str,
    outputs: tuple[str, ...],
    force: bool,
    required: tuple[str, ...] | None = None,
    identity: Mapping[str, Any] | None = None,
) -> bool:
    """Decide whether a stage may write into ``directory``.

    ``outputs`` are every file or folder the stage may write (their presence without a record marks
    an interrupted run, refused unless :func:`mark_pending` says it was one of this ``fingerprint``); ``required`` (default: all of ``outputs``) those a finished result has.
    Returns True when the directory already holds this exact result (same fingerprint): the stage
    can skip its work. Returns False when the directory is free (or ``force``). Raises
    :class:`SageError` when it holds outputs of other inputs, or of an interrupted run, and
    ``force`` is not set: an existing artifact is never overwritten silently; given the new result's
    ``identity`` (its inputs without locations), that refusal names the keys that differ.
    """
    directory = Path(directory)
    check_output_dir(directory)
    if directory.exists() and not directory.is_dir():
        raise SageError(f"{directory}: exists and is not a directory")
    record_path = directory / record_name
    stage = record_name.removesuffix(".json")
    if record_path.is_file():
        try:
            record = parse_record(record_path)
        except SageError:
            if force:
                return False
            raise SageError(f"{directory}: holds a damaged {stage} result ({record_name} is not valid JSON or does "
                            f"not match its {RECORD_SHA256}); pass --force to redo it") from None
        existing = record.get("fingerprint")
        missing = [o for o in (outputs if required is None else required) if not (directory / o).exists()]
        changed = find_changed_file(directory, record) if existing == fingerprint and not missing else None
        if existing == fingerprint and not missing and changed is None:
            return not force
        if existing == fingerprint and not force:
            what = f"{missing[0]} is missing" if missing else f"{changed[0]} is {changed[1]} (sha256)"
            raise SageError(f"{directory}: holds this {stage} result but {what}; pass --force to redo it")
        if not force:
            differ = describe_difference(strip_locations(record.get("inputs", {})), identity) if identity else []
            raise SageError(
                f"{directory}: holds a {stage} result of other inputs; "
                "choose another --out or pass --force to overwrite it"
                + (f" (they differ in {', '.join(differ[:6])}{' ...' if len(differ) > 6 else ''})" if differ else "")
            )
        return False
    present = [o for o in outputs if (directory / o).exists()]
    if present and not force and _pending_fingerprint(directory, record_name) == fingerprint:
        logger.info("%s: finishing an interrupted run of the same inputs", directory)
        return False
    if present and not force:
        raise SageError(
            f"{directory}: holds {present[0]} without {record_name} (an interrupted run?); "
            "pass --force to overwrite it"
        )
    return False
