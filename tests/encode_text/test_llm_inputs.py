"""Bad --llm-* values and a damaged or blocked answer cache: one error line, no answer lost."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sage_cli.cli import app
from sage_cli.encode_text import LLMConfig
from sage_cli.encode_text.llm import ask_chat, generate_descriptions
from sage_cli.errors import SageError

from .test_llm import NAMES3, ChatServer, _cache_keys, _key, _llm

runner = CliRunner()


@pytest.mark.parametrize("flags, message", [
    ({"timeout": float("inf")}, "--llm-timeout inf: must be at most 3600 seconds (one attempt's deadline; "
                                "retries add more)"),
    ({"timeout": 1e9}, "--llm-timeout 1e+09: must be at most 3600 seconds (one attempt's deadline; retries add more)"),
    ({"timeout": float("nan")}, "--llm-timeout nan: must be more than 0 seconds"),
    ({"timeout": -1.0}, "--llm-timeout -1: must be more than 0 seconds"),
    ({"n": 101}, "--llm-n 101: must be at most 100"),
    ({"retries": 101}, "--llm-retries 101: must be between 0 and 100"),
    ({"retries": -1}, "--llm-retries -1: must be between 0 and 100"),
])
def test_llm_values_out_of_range_are_one_line(flags: dict, message: str) -> None:
    with pytest.raises(SageError) as info:
        LLMConfig(url="http://x", model="m", **flags)
    assert str(info.value) == message
    assert LLMConfig(url="http://x", model="m", timeout=3600, n=100, retries=100).timeout == 3600


def test_llm_timeout_inf_on_the_command_line(prepared: Path, tmp_path: Path) -> None:
    out = tmp_path / "text"
    result = runner.invoke(app, ["encode-text", "--prepared", str(prepared), "--model", "sage-tiny",
                                 "--pretrained", "none", "--out", str(out), "--generate",
                                 "--llm-url", "http://127.0.0.1:9/v1", "--llm-model", "m", "--llm-timeout", "inf"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.strip().splitlines() == [
        "error: --llm-timeout inf: must be at most 3600 seconds (one attempt's deadline; retries add more)"]
    assert not out.exists()


class _RecordingStop(threading.Event):
    """A stop event whose waits return at once and are recorded (seconds asked for)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return False


def test_backoff_between_attempts_is_capped() -> None:
    busy = ChatServer(fail_first=1000, status=503)
    stop = _RecordingStop()
    try:
        with pytest.raises(SageError, match="after 71 attempts"):
            ask_chat(LLMConfig(url=busy.url, model="m", retries=70, backoff=1.0), "prompt", stop)
    finally:
        busy.close()
    # 1, 2, 4, 8, 16, 32 s, then 60 s: 2**69 s would overflow the wait (and outlive the user)
    assert stop.waits == [1, 2, 4, 8, 16, 32] + [60] * 64
    assert len(busy.requests) == 71


def _corrupt_line(cache: Path, number: int, garbage: bytes) -> bytes:
    lines = cache.read_bytes().split(b"\n")
    lines[number - 1] = lines[number - 1][:20] + garbage + lines[number - 1][20:]
    cache.write_bytes(b"\n".join(lines))
    return cache.read_bytes()


def test_a_cache_line_that_is_not_utf8_is_skipped_and_nothing_is_lost(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "answers.jsonl"
    first = ChatServer()
    try:
        generate_descriptions(_llm(first.url, cache), NAMES3)
    finally:
        first.close()
    before = _corrupt_line(cache, 2, b"\xff\xfe")  # the dog's answer
    server = ChatServer()
    try:
        with caplog.at_level(logging.WARNING, logger="sage_cli"):
            again = generate_descriptions(_llm(server.url, cache), NAMES3)
    finally:
        server.close()
    assert (again.cached, again.requests, len(server.requests)) == (2, 1, 1)  # only the dog is asked again
    assert sorted(again.sentences) == [0, 1, 2]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(f"{cache}:2: unreadable answer cache line(s) skipped")
    data = cache.read_bytes()
    assert data.startswith(before)  # appended to, never rewritten: every paid-for byte is still there
    assert json.loads(data[len(before):])["key"] == _key("dog")
    third = generate_descriptions(_llm("http://127.0.0.1:9/v1", cache), NAMES3)
    assert (third.cached, third.requests) == (3, 0)


def test_a_directory_in_place_of_the_cache_is_one_line_before_any_request(prepared: Path, tmp_path: Path) -> None:
    out = tmp_path / "text"
    blocking = out / "llm_answers.jsonl"
    blocking.mkdir(parents=True)
    (blocking / "keep.txt").write_text("mine")
    server = ChatServer()
    try:
        result = runner.invoke(app, ["encode-text", "--prepared", str(prepared), "--model", "sage-tiny",
                                     "--pretrained", "none", "--out", str(out), "--generate",
                                     "--llm-url", server.url, "--llm-model", "m"])
    finally:
        server.close()
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {blocking}: is not a file (a directory?)")
    assert server.requests == []  # nothing asked, so nothing paid for and lost
    assert (blocking / "keep.txt").read_text() == "mine"
    assert not (out / "text_cache.parquet").exists() and not (out / "encode.json").exists()


def test_a_lone_surrogate_in_an_answer_is_cached_as_text(tmp_path: Path) -> None:
    cache = tmp_path / "answers.jsonl"
    server = ChatServer(content=lambda name, _: f"A {name} with \ud800 ears.\nA {name} up close.")
    try:
        result = generate_descriptions(_llm(server.url, cache), ["cat"])
    finally:
        server.close()
    assert result.sentences == {0: ["A cat with ? ears.", "A cat up close."]}
    assert _cache_keys(cache) == [_key("cat")]
    assert json.loads(cache.read_text(encoding="utf-8"))["answer"] == "A cat with ? ears.\nA cat up close."
