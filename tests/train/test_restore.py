"""load_trained_classifier: class names, a moved text cache found by override or by hash, the
resolved adapter config in the weights' metadata, and the record's relative paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from sage_cli import artifacts
from sage_cli.errors import SageError
from sage_cli.train import build_train_config, load_trained_classifier, run

SYNTHETIC_NAMES = ("red square", "green circle", "blue triangle", "yellow star")  # tests/conftest.py


@pytest.fixture(scope="module")
def work(synthetic_prepared: Path, synthetic_text_cache: Path, tmp_path_factory) -> Path:
    """work/prepared, work/text (copies of the shared fixtures) and work/run (sage, 2 steps)."""
    root = tmp_path_factory.mktemp("restore") / "work"
    shutil.copytree(synthetic_prepared, root / "prepared")
    shutil.copytree(synthetic_text_cache, root / "text")
    config = build_train_config({"prepared": root / "prepared", "text_cache": root / "text", "out": root / "run",
                                 "method": "sage", "batch_size": 8, "device": "cpu", "num_workers": 0,
                                 "max_steps": 2, "seed": 0, "blocks": "1"})
    run(config)
    return root


def logits(classifier: torch.nn.Module) -> torch.Tensor:
    images = torch.linspace(-1, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32)
    with torch.no_grad():
        return classifier(images)


def test_records_hold_relative_paths_and_the_class_names_come_back(work: Path) -> None:
    record = artifacts.read_record(work / "run", artifacts.TRAIN_RECORD)
    assert record["inputs"]["prepared"]["path"] == "../prepared" and record["prepared"] == "../prepared"
    assert record["inputs"]["text_cache"]["path"] == "../text" and record["text_cache"] == "../text"
    trained = load_trained_classifier(work / "run")
    assert trained.class_names == SYNTHETIC_NAMES
    assert trained.record["fingerprint"] == record["fingerprint"]


def test_a_moved_text_cache_is_found_by_override_or_beside_the_run(work: Path, tmp_path: Path) -> None:
    reference = logits(load_trained_classifier(work / "run").classifier)
    moved = tmp_path / "w"
    shutil.copytree(work / "run", moved / "run")
    shutil.copytree(work / "text", tmp_path / "elsewhere" / "cache")
    with pytest.raises(SageError, match=r"its text cache \(fingerprint \w+\) is not where train.json says nor beside "
                                        r"the run; pass --text-cache DIR"):
        load_trained_classifier(moved / "run")
    trained = load_trained_classifier(moved / "run", text_cache=tmp_path / "elsewhere" / "cache")
    torch.testing.assert_close(logits(trained.classifier), reference, atol=1e-6, rtol=0)
    shutil.move(tmp_path / "elsewhere" / "cache", moved / "some-cache")  # beside the run, another name
    trained = load_trained_classifier(moved / "run")
    torch.testing.assert_close(logits(trained.classifier), reference, atol=1e-6, rtol=0)


def test_a_text_cache_of_other_content_is_refused_even_as_override(work: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(work / "text", other)
    record = json.loads((other / "encode.json").read_text())
    record["fingerprint"] = "0" * 64
    artifacts.write_record(other, "encode.json", artifacts.seal_record(other, record, []))
    with pytest.raises(SageError, match=rf"^{other / 'encode.json'}: fingerprint 000000000000 is not the"):
        load_trained_classifier(work / "run", text_cache=other)


def test_the_weights_metadata_holds_the_resolved_adapter_config(work: Path) -> None:
    with safe_open(str(work / "run" / "adapter.safetensors"), "pt") as f:
        adapter = json.loads(f.metadata()["adapter_config"])
    trained = load_trained_classifier(work / "run")
    summary = trained.classifier.summary()
    assert adapter["blocks"] == [1] and adapter["method"] == "sage"
    assert adapter["bottleneck"] == summary["bottleneck"] and adapter["bottleneck"] is not None
    assert adapter["guidance"] is True and adapter["guidance_tokens"] == len(SYNTHETIC_NAMES)  # M = C by default
