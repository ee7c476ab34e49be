"""Schemas, atomic writes and the output-directory guard."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sage_cli import artifacts
from sage_cli.errors import SageError


def _manifest() -> dict[str, list]:
    return {
        "sample_id": [0, 1, 2],
        "path": ["a.png", "b.png", "c.png"],
        "label": [0, 1, 1],
        "split": ["train", "train", "test"],
    }


def test_table_round_trip_keeps_values_and_schema_metadata(tmp_path):
    path = artifacts.write_table(tmp_path, artifacts.MANIFEST, _manifest())
    assert path == tmp_path / "manifest.parquet"
    table = artifacts.read_table(tmp_path, artifacts.MANIFEST)
    assert table.column("label").to_pylist() == [0, 1, 1]
    assert table.schema.metadata[b"sage.table"] == b"manifest"
    assert table.schema.metadata[b"sage.schema_version"] == str(artifacts.SCHEMA_VERSION).encode()


def test_embedding_column_round_trips_as_matrix(tmp_path):
    emb = np.arange(12, dtype=np.float32).reshape(3, 4)
    data = {"class_id": [0, 1, 2], "class_name": ["a", "b", "c"], "embedding": list(emb)}
    artifacts.write_table(tmp_path, artifacts.CLASS_EMBEDDINGS, data, embedding_dim=4)
    table = artifacts.read_table(tmp_path, artifacts.CLASS_EMBEDDINGS)
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 4)
    np.testing.assert_array_equal(artifacts.embedding_matrix(table), emb)


def test_read_table_names_file_and_missing_column(tmp_path):
    pq.write_table(pa.table({"sample_id": [1], "path": ["x"]}), tmp_path / "manifest.parquet")
    with pytest.raises(SageError, match=r"manifest\.parquet: column 'label' is missing"):
        artifacts.read_table(tmp_path, artifacts.MANIFEST)


def test_read_table_rejects_wrong_type_and_other_table(tmp_path):
    bad = _manifest() | {"label": ["0", "1", "1"]}
    pq.write_table(pa.table(bad), tmp_path / "manifest.parquet")
    with pytest.raises(SageError, match=r"column 'label' has type string, expected int64"):
        artifacts.read_table(tmp_path, artifacts.MANIFEST)
    artifacts.write_table(tmp_path / "c", artifacts.MANIFEST, _manifest())
    os.rename(tmp_path / "c" / "manifest.parquet", tmp_path / "c" / "classes.parquet")
    with pytest.raises(SageError, match="holds a 'manifest' table, expected 'classes'"):
        artifacts.read_table(tmp_path / "c", artifacts.CLASSES)


def test_corrupt_parquet_is_a_one_line_error(tmp_path):
    (tmp_path / "manifest.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(SageError, match="not a readable Parquet file") as info:
        artifacts.read_table(tmp_path, artifacts.MANIFEST)
    assert "\n" not in str(info.value)


def test_atomic_path_keeps_old_file_when_write_fails(tmp_path):
    target = tmp_path / "x.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), artifacts.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temp file left behind


def test_fingerprint_ignores_key_order_and_record_fields():
    a = artifacts.build_record("prepare", {"x": 1, "y": [1, 2]})
    b = artifacts.build_record("prepare", {"y": [1, 2], "x": 1})
    assert a["fingerprint"] == b["fingerprint"]
    assert a["fingerprint"] != artifacts.build_record("prepare", {"x": 2, "y": [1, 2]})["fingerprint"]
    assert a["stage"] == "prepare" and "torch" in a["versions"]


def test_sha256_file_matches_known_digest(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    assert artifacts.sha256_file(tmp_path / "f") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_guard_output_dir_cases(tmp_path):
    outputs = ("manifest.parquet",)
    out = tmp_path / "prep"
    assert artifacts.guard_output_dir(out, "prepare.json", "fp1", outputs, force=False) is False
    artifacts.write_table(out, artifacts.MANIFEST, _manifest())
    # Outputs without a record: an interrupted run, refused without --force.
    with pytest.raises(SageError, match="without prepare.json"):
        artifacts.guard_output_dir(out, "prepare.json", "fp1", outputs, force=False)
    artifacts.write_record(out, "prepare.json", {"fingerprint": "fp1"})
    assert artifacts.guard_output_dir(out, "prepare.json", "fp1", outputs, force=False) is True
    assert artifacts.guard_output_dir(out, "prepare.json", "fp1", outputs, force=True) is False
    with pytest.raises(SageError, match="other inputs; choose another --out or pass --force"):
        artifacts.guard_output_dir(out, "prepare.json", "fp2", outputs, force=False)
    assert artifacts.guard_output_dir(out, "prepare.json", "fp2", outputs, force=True) is False


def test_read_record_errors(tmp_path):
    with pytest.raises(SageError, match="prepare.json: missing"):
        artifacts.read_record(tmp_path, "prepare.json")
    (tmp_path / "prepare.json").write_text("{broken")
    with pytest.raises(SageError, match="not valid JSON"):
        artifacts.read_record(tmp_path, "prepare.json")
    (tmp_path / "prepare.json").write_text(json.dumps({"fingerprint": "x", "schema_version": 99}))
    with pytest.raises(SageError, match="newer sage"):
        artifacts.read_record(tmp_path, "prepare.json")


def test_guard_same_inputs_with_a_missing_output_says_so(tmp_path):
    out = tmp_path / "run"
    artifacts.write_record(out, "train.json", {"fingerprint": "fp"})
    (out / "adapter.safetensors").write_bytes(b"x")
    # An optional output (no checkpoint folder in a short run) does not make a finished run unfinished.
    assert artifacts.guard_output_dir(out, "train.json", "fp", ("adapter.safetensors", "checkpoints"),
                                      force=False, required=("adapter.safetensors",)) is True
    (out / "adapter.safetensors").unlink()
    with pytest.raises(SageError, match="holds this train result but adapter.safetensors is missing"):
        artifacts.guard_output_dir(out, "train.json", "fp", ("adapter.safetensors",), force=False)


def test_atomic_writes_honour_the_umask_not_mkstemps_private_mode(tmp_path):
    old = os.umask(0o022)
    try:
        artifacts.write_json_atomic(tmp_path / "a.json", {"x": 1})
        os.umask(0o077)
        artifacts.write_json_atomic(tmp_path / "b.json", {"x": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644  # readable by a colleague, like open()'s
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(("stage", "fix"), [
    ("predictions", "(damaged or changed since sage report wrote it); sage report recomputes them"),
    ("features", "(damaged or changed since sage train wrote it); delete {d} to recompute them"),
    ("pretrain", "(damaged or changed since sage pretrain-toy wrote it); re-run sage pretrain-toy with --force"),
    ("encode-text", "(damaged or changed since sage encode-text wrote it); re-run sage encode-text with --force"),
])
def test_a_damaged_file_names_a_command_that_exists(tmp_path, stage: str, fix: str) -> None:
    """The predictions cache's hint said `re-run sage predictions with --force`: no such command."""
    (tmp_path / "table.parquet").write_bytes(b"one")
    record = artifacts.seal_record(tmp_path, {"stage": stage, "fingerprint": "x"}, ["table.parquet"])
    artifacts.write_record(tmp_path, "record.json", record)
    (tmp_path / "table.parquet").write_bytes(b"two")
    with pytest.raises(SageError) as info:
        artifacts.read_record(tmp_path, "record.json")
    assert str(info.value) == (f"{tmp_path / 'table.parquet'}: content differs from the sha256 recorded in "
                               f"{tmp_path / 'record.json'} {fix.format(d=tmp_path)}")
