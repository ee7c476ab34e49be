"""A run where the chat model gave no usable answer for some classes is recorded as such, and a
re-run asks for those classes again (and only those) without --force."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sage_cli import artifacts
from sage_cli.cli import app
from sage_cli.encode_text import EncodeTextConfig, run
from sage_cli.encode_text.llm import generate_descriptions
from sage_cli.errors import SageError

from .test_llm import ChatServer, _llm, bulleted

runner = CliRunner()


def _outage(down: set[str]) -> ChatServer:
    """A gateway that answers 200 with no content for the classes in ``down``."""
    return ChatServer(content=lambda name, _: None if name in down else bulleted(name, 0))


def _config(prepared: Path, out: Path, url: str) -> EncodeTextConfig:
    return EncodeTextConfig(prepared=prepared, out=out, model="sage-tiny", pretrained="none", templates="single",
                            device="cpu", generate=_llm(url, out / "llm_answers.jsonl"))


def _outputs(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in ("encode.json", "text_cache.parquet", "class_embeddings.parquet")}


def test_fallen_back_classes_are_recorded_and_asked_again_without_force(prepared: Path, tmp_path: Path) -> None:
    out = tmp_path / "text"
    outage = _outage({"dog", "great white shark"})
    try:
        first = run(_config(prepared, out, outage.url))
    finally:
        outage.close()
    assert first.llm_fallback == {"dog": "an empty answer", "great_white_shark": "an empty answer"}
    fallback = first.record["generate_fallback"]
    assert fallback["classes"] == [
        {"class_id": 1, "class_name": "dog", "reason": "an empty answer"},
        {"class_id": 2, "class_name": "great_white_shark", "reason": "an empty answer"},
    ]
    complete = artifacts.sha256_json(first.record["inputs"])  # what a run with every answer is sealed with
    assert fallback["inputs_fingerprint"] == complete and first.record["fingerprint"] != complete

    healthy = ChatServer()
    try:
        second = run(_config(prepared, out, healthy.url))  # no --force
        third = run(_config(prepared, out, healthy.url))
    finally:
        healthy.close()
    assert not second.skipped and second.llm_requests == 2  # the cat's answer came from the cache
    asked = sorted(r["body"]["messages"][-1]["content"].split("what a ")[1].split(" looks")[0]
                   for r in healthy.requests)
    assert asked == ["dog", "great white shark"]
    assert second.llm_fallback == {} and second.record["generate_fallback"] is None
    assert second.record["fingerprint"] == complete
    texts = artifacts.read_table(out, artifacts.TEXT_CACHE).column("text").to_pylist()
    assert "A dog up close." in texts and "A great white shark up close." in texts
    assert third.skipped and len(healthy.requests) == 2  # complete now: a no-op


def test_a_rerun_while_the_server_is_still_down_changes_nothing(prepared: Path, tmp_path: Path) -> None:
    out = tmp_path / "text"
    args = ["encode-text", "--prepared", str(prepared), "--model", "sage-tiny", "--pretrained", "none",
            "--out", str(out), "--templates", "single", "--device", "cpu", "--generate", "--llm-model", "m"]
    outage = _outage({"cat", "dog", "great white shark"})
    try:
        first = runner.invoke(app, [*args, "--llm-url", outage.url])
        before = _outputs(out)
        again = runner.invoke(app, [*args, "--llm-url", outage.url])
    finally:
        outage.close()
    assert first.exit_code == 0, first.output
    assert ("3 of 3 classes fell back to templates (no usable chat answer: an empty answer x3); "
            "re-run the same command to ask for them again") in " ".join(first.stdout.split())
    assert again.exit_code == 0, again.output
    assert len(outage.requests) == 6  # every class asked twice
    assert (f"{out}: asked again for the 3 class(es) that fell back; still no usable chat answer for them, "
            "the text cache is unchanged") in " ".join(again.stdout.split())
    assert _outputs(out) == before

    with socket.socket() as sock:  # and with the server gone: one line, the result kept
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gone = runner.invoke(app, [*args, "--llm-url", f"http://127.0.0.1:{port}/v1", "--llm-retries", "0"])
    assert gone.exit_code == 1 and len(gone.stderr.strip().splitlines()) == 1
    assert "unreachable or failing after 1 attempt" in gone.stderr
    assert _outputs(out) == before
    assert json.loads(before["encode.json"])["generate_fallback"]["classes"][0]["class_name"] == "cat"


def test_other_inputs_are_still_refused_without_force(prepared: Path, tmp_path: Path) -> None:
    out = tmp_path / "text"
    outage = _outage({"dog"})
    try:
        run(_config(prepared, out, outage.url))
        before = _outputs(out)
        other = EncodeTextConfig(prepared=prepared, out=out, model="sage-tiny", pretrained="none",
                                 templates="ensemble", device="cpu", generate=_llm(outage.url, None))
        with pytest.raises(SageError, match="holds a encode result of other inputs"):
            run(other)
    finally:
        outage.close()
    assert _outputs(out) == before


def test_an_outage_names_ten_classes_and_counts_the_rest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    names = [f"class {i}" for i in range(12)]
    outage = _outage(set(names))
    try:
        with caplog.at_level(logging.WARNING, logger="sage_cli"):
            result = generate_descriptions(_llm(outage.url, None), names)
    finally:
        outage.close()
    assert len(result.rejected) == 12 and result.sentences == {}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"the chat model gave no usable description for 'class {i}' (an empty answer); using templates"
                        for i in range(10)]  # 8,142 such lines would bury everything else
