"""encode-text end to end on sage-tiny: values equal open_clip's own, pooling, no-op, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sage_cli import artifacts
from sage_cli.backbone import load_clip
from sage_cli.encode_text import (
    EncodeTextConfig,
    check_text_cache_matches,
    compute_class_embeddings,
    load_text_cache,
    run,
)
from sage_cli.encode_text.templates import ENSEMBLE
from sage_cli.errors import SageError

from .conftest import NAMES, make_prepared


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fixed random sage-tiny checkpoint, so a test can rebuild the exact model run() used."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save(load_clip("sage-tiny", "none").model.state_dict(), path)
    return path


def _config(prepared: Path, out: Path, weights: Path, **kw) -> EncodeTextConfig:
    options = {"device": "cpu", "batch_size": 16, **kw}
    return EncodeTextConfig(prepared=prepared, out=out, model="sage-tiny", pretrained=str(weights), **options)


def _direct(weights: Path, texts: list[str]) -> torch.Tensor:
    clip = load_clip("sage-tiny", str(weights))
    with torch.no_grad():
        return F.normalize(clip.model.encode_text(clip.tokenizer(texts)), dim=-1)


def _snapshot(directory: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(directory.iterdir())}


def test_cache_equals_direct_encode_text(prepared: Path, tmp_path: Path, weights: Path) -> None:
    result = run(_config(prepared, tmp_path / "text", weights))
    assert not result.skipped
    table = artifacts.read_table(tmp_path / "text", artifacts.TEXT_CACHE)
    shown = ["cat", "dog", "great white shark"]
    expected = [t.format(name) for name in shown for t in ENSEMBLE]
    assert table.column("text").to_pylist() == expected
    assert table.column("class_id").to_pylist() == [c for c in range(3) for _ in ENSEMBLE]
    assert table.column("class_name").to_pylist() == [n for n in NAMES for _ in ENSEMBLE]
    assert set(table.column("source").to_pylist()) == {"template"}
    cached = torch.from_numpy(artifacts.embedding_matrix(table).copy())
    torch.testing.assert_close(cached, _direct(weights, expected))
    torch.testing.assert_close(cached.norm(dim=-1), torch.ones(len(expected)))


def test_class_embeddings_are_renormalised_means(prepared: Path, tmp_path: Path, weights: Path) -> None:
    run(_config(prepared, tmp_path / "text", weights))
    cache = load_text_cache(tmp_path / "text", prepared, with_texts=True)
    texts, ids = cache.text_embeddings()
    assert cache.class_embeddings.shape == (3, 64)
    assert cache.class_names == NAMES
    for c in range(3):
        mean = texts[ids == c].mean(dim=0)
        torch.testing.assert_close(cache.class_embeddings[c], mean / mean.norm())


def test_compute_class_embeddings_by_hand() -> None:
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    pooled = compute_class_embeddings(embeddings, torch.tensor([0, 0, 1]), 2)
    half = 2 ** -0.5
    torch.testing.assert_close(pooled, torch.tensor([[half, half], [0.6, 0.8]]))


def test_record_says_what_was_encoded(prepared: Path, tmp_path: Path, weights: Path) -> None:
    run(_config(prepared, tmp_path / "text", weights, templates="single"))
    record = json.loads((tmp_path / "text" / "encode.json").read_text())
    assert record["stage"] == "encode-text"
    assert record["model"] == "sage-tiny"
    assert record["pretrained"] == str(weights.resolve())
    assert record["pretrained_sha256"] == artifacts.sha256_file(weights)
    assert record["embedding_dim"] == 64
    assert record["templates"] == {"name": "single", "templates": ["a photo of a {}."]}
    assert record["descriptions_sha256"] is None
    assert record["classes_sha256"] == artifacts.sha256_file(prepared / "classes.parquet")
    assert record["prepared_fingerprint"] == artifacts.read_record(prepared, "prepare.json")["fingerprint"]
    assert record["counts"] == {"classes": 3, "texts": 3, "template_texts": 3, "description_texts": 0,
                                "fallback_classes": 0}
    assert record["backbone"]["image_size"] == [32, 32]
    assert record["fingerprint"] == artifacts.sha256_json(record["inputs"])


def test_rerun_is_a_noop(prepared: Path, tmp_path: Path, weights: Path) -> None:
    out = tmp_path / "text"
    run(_config(prepared, out, weights))
    before = _snapshot(out)
    again = run(_config(prepared, out, weights, batch_size=7))  # batch size does not change the result
    assert again.skipped
    assert again.record == json.loads((out / "encode.json").read_text())
    assert _snapshot(out) == before


def test_other_inputs_never_overwrite_without_force(prepared: Path, tmp_path: Path, weights: Path) -> None:
    out = tmp_path / "text"
    run(_config(prepared, out, weights))
    before = _snapshot(out)
    with pytest.raises(SageError, match="holds a encode result of other inputs; .*--force") as info:
        run(_config(prepared, out, weights, templates="single"))
    assert "\n" not in str(info.value)
    assert _snapshot(out) == before
    forced = run(_config(prepared, out, weights, templates="single", force=True))
    assert forced.record["counts"]["texts"] == 3
    assert artifacts.read_table(out, artifacts.TEXT_CACHE).num_rows == 3


def test_descriptions_are_combined_and_missing_classes_fall_back(prepared: Path, tmp_path: Path, weights: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "desc.json"
    path.write_text(json.dumps({"cat": ["a cat has whiskers.", "a small furry pet."], "2": "a shark with teeth."}))
    result = run(_config(prepared, tmp_path / "text", weights, templates="single", descriptions=path))
    table = artifacts.read_table(tmp_path / "text", artifacts.TEXT_CACHE)
    assert table.column("text").to_pylist() == [
        "a photo of a cat.", "a cat has whiskers.", "a small furry pet.",
        "a photo of a dog.",
        "a photo of a great white shark.", "a shark with teeth.",
    ]
    assert table.column("source").to_pylist() == ["template", "description", "description", "template",
                                                  "template", "description"]
    assert result.fallback_classes == ("dog",)
    assert result.record["fallback_classes"] == ["dog"]
    assert result.record["descriptions_sha256"] == artifacts.sha256_file(path)
    assert "1 class(es) have no description" in caplog.text


def test_templates_none_uses_single_template_only_for_undescribed(prepared: Path, tmp_path: Path,
                                                                   weights: Path) -> None:
    path = tmp_path / "desc.csv"
    path.write_text("class,description\ncat,\"a cat, sitting.\"\ngreat white shark,a big fish.\n")
    run(_config(prepared, tmp_path / "text", weights, templates="none", descriptions=path))
    table = artifacts.read_table(tmp_path / "text", artifacts.TEXT_CACHE)
    assert table.column("text").to_pylist() == ["a cat, sitting.", "a photo of a dog.", "a big fish."]


def test_user_templates_file(prepared: Path, tmp_path: Path, weights: Path) -> None:
    path = tmp_path / "templates.txt"
    path.write_text("# mine\nitap of a {}.\n\na {} in the wild.\n")
    result = run(_config(prepared, tmp_path / "text", weights, templates=str(path)))
    assert result.record["templates"]["templates"] == ["itap of a {}.", "a {} in the wild."]
    assert result.record["counts"]["texts"] == 6


@pytest.mark.parametrize(
    ("filename", "content", "message"),
    [
        ("d.json", b'{"cat": ["ok."], "cta": ["x"]}', r"d\.json: 1 unknown class\(es\): 'cta' \(entry 'cta' item 0\); did you mean 'cat'\?"),
        ("d.csv", b"cat,fine.\nzebra,striped.\n", r"d\.csv: 1 unknown class\(es\): 'zebra' \(line 2\)"),
        ("d.json", b'{"cat": ["ok.", "  "]}', r"d\.json: entry 'cat' item 1: empty description"),
        ("d.csv", b"class,description\ndog,\n", r"d\.csv:2: empty description"),
        ("d.csv", b"cat,caf\xe9 au lait\n", r"d\.csv:1: not valid UTF-8 \(byte 0xe9 at offset 7\)"),
        ("d.json", b'{"cat": 3}', r"d\.json: entry 'cat' must be a non-empty list of sentences"),
        ("d.txt", b"cat,x\n", r"d\.txt: descriptions must be a \.json or \.csv file"),
        ("d.json", b"[" * 100_000 + b"]" * 100_000,
         r"d\.json: JSON nested too deeply; expected \{class name or id: \[sentences\]\}$"),
        ("d.json", b'{"cat": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", r"d\.json: JSON nested too deeply"),
    ],
)
def test_bad_descriptions_are_one_line_errors(prepared: Path, tmp_path: Path, weights: Path,
                                             filename: str, content: bytes, message: str) -> None:
    out = tmp_path / "text"
    run(_config(prepared, out, weights, templates="single"))
    before = _snapshot(out)
    path = tmp_path / filename
    path.write_bytes(content)
    with pytest.raises(SageError, match=message) as info:
        run(_config(prepared, out, weights, templates="single", descriptions=path, force=True))
    assert "\n" not in str(info.value)
    assert _snapshot(out) == before


def test_bad_template_file(prepared: Path, tmp_path: Path, weights: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("a photo of a {}.\na photo.\n")
    with pytest.raises(SageError, match=r"t\.txt:2: a template needs exactly one \{\}"):
        run(_config(prepared, tmp_path / "text", weights, templates=str(path)))
    assert not (tmp_path / "text").exists()


@pytest.mark.parametrize(
    ("model", "pretrained", "message"),
    [
        ("sage-tiniy", None, r"--model 'sage-tiniy': not an open_clip model name; did you mean sage-tiny"),
        ("sage-tiny", "missing.safetensors", r"missing\.safetensors: checkpoint file not found"),
    ],
)
def test_bad_backbone_leaves_outputs_untouched(prepared: Path, tmp_path: Path, weights: Path,
                                               model: str, pretrained: str | None, message: str) -> None:
    out = tmp_path / "text"
    run(_config(prepared, out, weights))
    before = _snapshot(out)
    config = EncodeTextConfig(prepared=prepared, out=out, model=model, pretrained=pretrained or str(weights),
                              device="cpu", force=True)
    with pytest.raises(SageError, match=message):
        run(config)
    assert _snapshot(out) == before


def test_unfitting_checkpoint_leaves_outputs_untouched(prepared: Path, tmp_path: Path, weights: Path) -> None:
    out = tmp_path / "text"
    run(_config(prepared, out, weights))
    before = _snapshot(out)
    bad = tmp_path / "bad.pt"
    state = torch.load(weights)
    state["text_projection"] = torch.zeros(64, 32)
    torch.save(state, bad)
    with pytest.raises(SageError, match=r"bad\.pt: checkpoint does not fit the model: key 'text_projection' has shape \[64, 32\]"):
        run(_config(prepared, out, bad, force=True))
    assert _snapshot(out) == before


def test_cache_refused_for_another_prepared_dataset(prepared: Path, tmp_path: Path, weights: Path) -> None:
    run(_config(prepared, tmp_path / "text", weights, templates="single"))
    other = make_prepared(tmp_path / "other", names=("cat", "dog", "bird"))
    with pytest.raises(SageError, match=r"text cache was encoded for other classes than .*other/classes\.parquet; "
                                        r"re-run sage encode-text --prepared"):
        load_text_cache(tmp_path / "text", other)
    same_classes = make_prepared(tmp_path / "same", dataset="another")
    with pytest.raises(SageError, match="encoded for another prepared dataset than"):
        load_text_cache(tmp_path / "text", same_classes)
    assert load_text_cache(tmp_path / "text", prepared).class_embeddings.shape == (3, 64)


def test_cache_refused_for_another_backbone(prepared: Path, tmp_path: Path, weights: Path) -> None:
    run(_config(prepared, tmp_path / "text", weights, templates="single"))
    cache = load_text_cache(tmp_path / "text")
    check_text_cache_matches(cache, load_clip("sage-tiny", str(weights)).record)
    torch.manual_seed(0)
    with pytest.raises(SageError, match=r"encoded with sage-tiny \(sha256:[0-9a-f]{64}\) but the backbone is "
                                        r"sage-tiny \(none\)"):
        check_text_cache_matches(cache, load_clip("sage-tiny", "none").record)
    with pytest.raises(SageError, match="but the backbone is sage-toy"):
        check_text_cache_matches(cache, {"model": "sage-toy", "pretrained": "none", "embedding_dim": 64})


def test_missing_cache_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SageError, match=r"encode\.json: missing"):
        load_text_cache(tmp_path)


def test_a_run_killed_between_its_two_table_writes_is_finished_without_force(
        prepared: Path, tmp_path: Path, weights: Path, monkeypatch) -> None:
    # red team: encode-text killed between text_cache.parquet and class_embeddings.parquet needed --force
    whole = run(_config(prepared, tmp_path / "whole", weights))
    out = tmp_path / "text"
    real_write = artifacts.write_table

    def killed_at_the_second_table(directory, schema, *args, **kwargs):
        if schema is artifacts.CLASS_EMBEDDINGS:
            raise KeyboardInterrupt  # as abrupt as a kill: nothing after this line runs
        return real_write(directory, schema, *args, **kwargs)

    monkeypatch.setattr(artifacts, "write_table", killed_at_the_second_table)
    with pytest.raises(KeyboardInterrupt):
        run(_config(prepared, out, weights))
    monkeypatch.setattr(artifacts, "write_table", real_write)
    assert (out / "text_cache.parquet").is_file() and not (out / "class_embeddings.parquet").exists()
    with pytest.raises(SageError, match="holds text_cache.parquet without encode.json .*pass --force"):
        run(_config(prepared, out, weights, templates="single"))  # other inputs: still refused
    finished = run(_config(prepared, out, weights))
    assert not finished.skipped and finished.record["fingerprint"] == whole.record["fingerprint"]
    for name in ("text_cache.parquet", "class_embeddings.parquet"):
        assert artifacts.read_table(out / name, artifacts.TEXT_CACHE if name.startswith("text") else
                                    artifacts.CLASS_EMBEDDINGS) == artifacts.read_table(
            tmp_path / "whole" / name, artifacts.TEXT_CACHE if name.startswith("text") else artifacts.CLASS_EMBEDDINGS)
    assert sorted(p.name for p in out.iterdir()) == ["class_embeddings.parquet", "encode.json", "text_cache.parquet"]
