"""--generate against a small local chat-completions server: cache, retries, unreachable endpoint."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from sage_cli import artifacts
from sage_cli.backbone import load_clip
from sage_cli.encode_text import EncodeTextConfig, LLMConfig, run
from sage_cli.encode_text.llm import build_prompt, generate_descriptions, parse_answer, request_key
from sage_cli.errors import SageError


class ChatServer:
    """Answers POST /v1/chat/completions with two bulleted sentences about the asked class."""

    def __init__(self, fail_first: int = 0, status: int = 500) -> None:
        self.requests: list[dict] = []
        self.fail_first = fail_first
        self.status = status
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "body": body})
                if len(server.requests) <= server.fail_first:
                    self.send_response(server.status)
                    self.end_headers()
                    self.wfile.write(b"busy")
                    return
                name = re.search(r"what a (.+?) looks like", body["messages"][-1]["content"]).group(1)
                content = f"1. A {name} seen from the side.\n- A {name} up close.\n\n* A third {name}."
                payload = {"choices": [{"message": {"role": "assistant", "content": content}}]}
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[ChatServer]:
    chat = ChatServer()
    yield chat
    chat.close()


def _llm(url: str, cache: Path | None, **kw) -> LLMConfig:
    return LLMConfig(url=url, model="tiny-chat", n=2, cache=cache, backoff=0.001, timeout=5.0, **kw)


def test_generated_descriptions_are_encoded_and_cached(prepared: Path, tmp_path: Path, server: ChatServer) -> None:
    cache = tmp_path / "answers.jsonl"
    weights = tmp_path / "tiny.pt"
    torch.manual_seed(0)
    torch.save(load_clip("sage-tiny", "none").model.state_dict(), weights)

    def config(**kw) -> EncodeTextConfig:
        return EncodeTextConfig(prepared=prepared, out=tmp_path / "text", model="sage-tiny",
                                pretrained=str(weights), templates="single", device="cpu",
                                generate=_llm(server.url, cache), **kw)

    result = run(config())
    assert len(server.requests) == 3 and result.llm_requests == 3
    assert {r["path"] for r in server.requests} == {"/v1/chat/completions"}
    assert server.requests[0]["body"]["model"] == "tiny-chat"
    table = artifacts.read_table(tmp_path / "text", artifacts.TEXT_CACHE)
    assert table.column("text").to_pylist()[:3] == [
        "a photo of a cat.", "A cat seen from the side.", "A cat up close.",
    ]
    assert table.column("source").to_pylist()[:3] == ["template", "description", "description"]
    assert "A great white shark up close." in table.column("text").to_pylist()
    assert len(cache.read_text().splitlines()) == 3
    assert result.record["generate"]["model"] == "tiny-chat"
    assert result.record["counts"]["description_texts"] == 6

    assert run(config()).skipped  # same inputs: a no-op that asks nothing
    forced = run(config(force=True))  # re-encodes, but every answer comes from the cache
    assert len(server.requests) == 3 and forced.llm_requests == 0
    assert artifacts.read_table(tmp_path / "text", artifacts.TEXT_CACHE).equals(table)


def test_cache_key_does_not_depend_on_the_url(tmp_path: Path, server: ChatServer) -> None:
    cache = tmp_path / "answers.jsonl"
    first = generate_descriptions(_llm(server.url, cache), ["cat", "dog"])
    other = ChatServer()
    try:
        again = generate_descriptions(_llm(other.url, cache), ["cat", "dog"])
    finally:
        other.close()
    assert (first.requests, again.requests, again.cached) == (2, 0, 2)
    assert len(other.requests) == 0
    assert again.sentences == first.sentences == {
        0: ["A cat seen from the side.", "A cat up close."],
        1: ["A dog seen from the side.", "A dog up close."],
    }
    entry = json.loads(cache.read_text().splitlines()[0])
    assert entry["key"] == request_key("tiny-chat", build_prompt("cat", 2), 2)


def test_server_errors_are_retried(tmp_path: Path) -> None:
    flaky = ChatServer(fail_first=2, status=500)
    try:
        result = generate_descriptions(_llm(flaky.url, None), ["cat"])
    finally:
        flaky.close()
    assert len(flaky.requests) == 3
    assert result.sentences == {0: ["A cat seen from the side.", "A cat up close."]}


def test_client_errors_are_not_retried(tmp_path: Path) -> None:
    broken = ChatServer(fail_first=10, status=404)
    try:
        with pytest.raises(SageError, match=r"--llm-url http://127\.0\.0\.1:\d+/v1/chat/completions: HTTP 404 .*: busy"):
            generate_descriptions(_llm(broken.url, None), ["cat"])
    finally:
        broken.close()
    assert len(broken.requests) == 1


def test_unreachable_endpoint_fails_fast_and_touches_nothing(prepared: Path, tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and now has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "text"
    config = EncodeTextConfig(prepared=prepared, out=out, model="sage-tiny", pretrained="none",
                              device="cpu", generate=_llm(f"http://127.0.0.1:{port}/v1", out / "a.jsonl", retries=2))
    start = time.perf_counter()
    with pytest.raises(SageError) as info:
        run(config)
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"--llm-url http://127.0.0.1:{port}/v1/chat/completions: unreachable or failing "
                              "after 3 attempts (")
    assert "is the server running" in message
    assert not (out / "text_cache.parquet").exists() and not (out / "encode.json").exists()


def test_parse_answer_strips_bullets_and_keeps_n() -> None:
    answer = '1. First one.\n2) Second one.\n\n- "Third."\n* First one.\n(5) Fifth.'
    assert parse_answer(answer, 3) == ["First one.", "Second one.", "Third."]
    assert parse_answer("", 3) == []


def test_torn_cache_line_is_asked_again(tmp_path: Path, server: ChatServer) -> None:
    cache = tmp_path / "answers.jsonl"
    generate_descriptions(_llm(server.url, cache), ["cat"])
    cache.write_text(cache.read_text() + '{"key": "abc", "answ')
    again = generate_descriptions(_llm(server.url, cache), ["cat", "dog"])
    assert (again.cached, again.requests) == (1, 1)
    third = generate_descriptions(_llm(server.url, cache), ["cat", "dog"])
    assert (third.cached, third.requests) == (2, 0)


def test_llm_config_validation() -> None:
    with pytest.raises(SageError, match="--llm-url 'localhost:8080': must start with http"):
        LLMConfig(url="localhost:8080", model="m")
    with pytest.raises(SageError, match="--llm-n 0: must be at least 1"):
        LLMConfig(url="http://x", model="m", n=0)
