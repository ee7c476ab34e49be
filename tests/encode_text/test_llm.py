"""--generate against a small local chat-completions server: cache, retries, unreachable endpoint."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from sage_cli import artifacts
from sage_cli.backbone import load_clip
from sage_cli.encode_text import EncodeTextConfig, LLMConfig, run
from sage_cli.encode_text.llm import build_prompt, check_answer, generate_descriptions, parse_answer, request_key
from sage_cli.errors import SageError


def bulleted(name: str, number: int) -> str | None:
    """The default answer: two usable sentences about ``name`` (and a third past n=2)."""
    return f"1. A {name} seen from the side.\n- A {name} up close.\n\n* A third {name}."


class ChatServer:
    """Answers POST /v1/chat/completions with two bulleted sentences about the asked class.

    ``content(name, number)`` gives the answer's content (``None``: a JSON null); ``fault(handler,
    number)`` may write a broken reply itself and return True. ``gate`` holds the first requests
    until that many have been in flight at once (or 5 s pass), so a test sees the client's concurrency.
    """

    def __init__(self, fail_first: int = 0, status: int = 500, content=bulleted, fault=None,
                 gate: int = 0, port: int = 0, error_body: bytes = b"busy") -> None:
        self.requests: list[dict] = []
        self.fail_first = fail_first
        self.status = status
        self.in_flight = self.max_in_flight = 0
        self.written = 0  # body bytes a fault handler managed to send
        self.release = threading.Event()  # set on close: hanging handlers give up
        lock = threading.Condition()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    server.requests.append({"path": self.path, "body": body})
                    number = len(server.requests)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    lock.notify_all()
                    lock.wait_for(lambda: server.max_in_flight >= gate, timeout=5 if gate else 0)
                try:
                    self._answer(body, number)
                finally:
                    with lock:
                        server.in_flight -= 1

            def _answer(self, body: dict, number: int) -> None:
                if number <= server.fail_first:
                    self.send_response(server.status)
                    self.end_headers()
                    self.wfile.write(error_body)
                    return
                if fault is not None and fault(self, number):
                    return
                name = re.search(r"what a (.+?) looks like", body["messages"][-1]["content"]).group(1)
                if gate:  # answers finish out of order: later classes sooner
                    time.sleep(0.002 * (len(name) % 5))
                payload = {"choices": [{"message": {"role": "assistant", "content": content(name, number)}}]}
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
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


# --- faults: each against a real local server on 127.0.0.1 ---------------------------------------

NAMES3 = ["cat", "dog", "great white shark"]


def _serve(**kw) -> ChatServer:
    return ChatServer(**kw)


def _cache_keys(cache: Path) -> list[str]:
    return [json.loads(line)["key"] for line in cache.read_text().splitlines()] if cache.exists() else []


def _key(name: str) -> str:
    return request_key("tiny-chat", build_prompt(name, 2), 2)


def test_empty_and_null_answers_are_never_cached(tmp_path: Path) -> None:
    cache = tmp_path / "answers.jsonl"
    empty = _serve(content=lambda name, _: {"cat": "", "dog": None}.get(name, bulleted(name, 0)))
    try:
        first = generate_descriptions(_llm(empty.url, cache), NAMES3)
    finally:
        empty.close()
    assert first.sentences == {2: ["A great white shark seen from the side.", "A great white shark up close."]}
    assert first.rejected == {0: "an empty answer", 1: "an empty answer"}
    assert _cache_keys(cache) == [_key("great white shark")]
    good = _serve()
    try:
        again = generate_descriptions(_llm(good.url, cache), NAMES3)
    finally:
        good.close()
    assert (again.requests, again.cached, len(good.requests)) == (2, 1, 2)  # the two empty ones, asked again
    assert again.sentences[0] == ["A cat seen from the side.", "A cat up close."] and again.rejected == {}
    assert _cache_keys(cache) == [_key("great white shark"), _key("cat"), _key("dog")]


def test_empty_answers_cached_by_an_older_sage_are_asked_again(tmp_path: Path, server: ChatServer) -> None:
    cache = tmp_path / "answers.jsonl"
    cache.write_text("".join(json.dumps({"key": _key(name), "answer": answer}) + "\n"
                             for name, answer in (("cat", ""), ("dog", None), ("great white shark", "I'm sorry."))))
    result = generate_descriptions(_llm(server.url, cache), NAMES3)
    assert (result.requests, result.cached, len(server.requests)) == (3, 0, 3)
    assert sorted(result.sentences) == [0, 1, 2]


@pytest.mark.parametrize("refusal", [
    "I'm sorry, but I can't help with that request.",
    "As an AI language model, I cannot see images.\n1. A cat has fur.",
    "1. A dog with a long tail.\nI apologize, I cannot continue.",
])
def test_refusals_are_not_descriptions(tmp_path: Path, refusal: str) -> None:
    cache = tmp_path / "answers.jsonl"
    refusing = _serve(content=lambda name, _: refusal if name == "dog" else bulleted(name, 0))
    try:
        result = generate_descriptions(_llm(refusing.url, cache), NAMES3)
    finally:
        refusing.close()
    assert sorted(result.sentences) == [0, 2] and result.rejected == {1: "a refusal, not a description"}
    assert _cache_keys(cache) == [_key("cat"), _key("great white shark")]


def test_check_answer_keeps_plausible_sentences_only() -> None:
    answer = "Here are two sentences:\n1. A cat with pointed ears.\n2. ok\n3. 1234 5678 9012 !!!\n- A cat, curled up."
    assert check_answer(answer, 5, "cat") == (["A cat with pointed ears.", "A cat, curled up."], None)
    assert check_answer("ok\n:-)\nyes", 2, "cat") == ([], "no plausible sentence in the answer")
    assert check_answer("   \n", 2, "cat") == ([], "an empty answer")
    assert check_answer(None, 2, "cat") == ([], "an empty answer")
    assert check_answer("A cat with fur. " * 200, 2, "cat") == ([], "an answer of 3,200 characters for 2 sentence(s)")
    assert check_answer("A long " + "word " * 100 + "sentence.", 2, "cat") == ([], "no plausible sentence in the answer")


def test_an_oversize_answer_is_cut_off_and_not_cached(tmp_path: Path) -> None:
    chunk = b"x" * (1 << 20)

    def flood(handler: BaseHTTPRequestHandler, number: int) -> bool:
        name = re.search(r"what a (.+?) looks like", json.dumps(server.requests[number - 1]["body"])).group(1)
        if name == "great white shark":
            return False
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        if name == "dog":  # announces 100 MB
            handler.send_header("Content-Length", str(100 * len(chunk)))
        handler.end_headers()  # cat: no length, 100 MB until the connection closes
        try:
            for _ in range(100):
                handler.wfile.write(chunk)
                server.written += len(chunk)
        except OSError:  # the client hung up, as it should
            pass
        return True

    server = _serve(fault=flood)
    cache = tmp_path / "answers.jsonl"
    tracemalloc.start()
    try:
        result = generate_descriptions(_llm(server.url, cache), NAMES3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        server.close()
    assert result.rejected == {0: "answer too large: over 1,048,576 bytes",
                               1: "answer too large: the server announced 104,857,600 bytes"}
    assert sorted(result.sentences) == [2] and _cache_keys(cache) == [_key("great white shark")]
    assert server.written < 40 * len(chunk)  # the client stopped reading (socket buffers hold the rest)
    assert peak < 24 * len(chunk)  # the server's own buffers included; reading all of it took > 200 MB


def _incomplete(handler: BaseHTTPRequestHandler, number: int) -> bool:
    handler.send_response(200)
    handler.send_header("Content-Length", "100")
    handler.end_headers()
    handler.wfile.write(b'{"choices": ')
    return True


def _bad_status_line(handler: BaseHTTPRequestHandler, number: int) -> bool:
    handler.wfile.write(b"garbage\r\n\r\n")
    return True


@pytest.mark.parametrize("fault, seen", [
    (_incomplete, "IncompleteRead: 12 bytes read, 88 more expected"),
    (_bad_status_line, "BadStatusLine: garbage"),
])
def test_broken_replies_are_retried_then_one_line(tmp_path: Path, fault, seen: str) -> None:
    flaky = _serve(fault=lambda handler, number: number <= 2 and fault(handler, number))
    try:
        result = generate_descriptions(_llm(flaky.url, None), ["cat"])
    finally:
        flaky.close()
    assert len(flaky.requests) == 3 and result.sentences == {0: ["A cat seen from the side.", "A cat up close."]}
    broken = _serve(fault=fault)
    try:
        with pytest.raises(SageError) as info:
            generate_descriptions(_llm(broken.url, None, retries=1), ["cat"])
    finally:
        broken.close()
    message = str(info.value)
    assert len(broken.requests) == 2 and "\n" not in message
    assert message == (f"--llm-url {broken.url}/chat/completions: unreachable or failing after 2 attempts "
                       f"({seen}); is the server running and is the URL right?")


@pytest.mark.parametrize("drip", [False, True])
def test_a_hanging_server_hits_the_deadline(tmp_path: Path, drip: bool) -> None:
    def stall(handler: BaseHTTPRequestHandler, number: int) -> bool:
        if drip:  # one byte every 0.1 s: never idle for long, so a per-read timeout never fires
            handler.send_response(200)
            handler.send_header("Content-Length", "1000")
            handler.end_headers()
            try:
                while not hanging.release.wait(0.1):
                    handler.wfile.write(b" ")
                    handler.wfile.flush()
            except OSError:
                pass
        else:
            hanging.release.wait(10)
        return True

    hanging = _serve(fault=stall)
    start = time.perf_counter()
    try:
        with pytest.raises(SageError) as info:
            generate_descriptions(LLMConfig(url=hanging.url, model="tiny-chat", n=2, timeout=0.5, retries=1,
                                            backoff=0.001), ["cat"])
    finally:
        elapsed = time.perf_counter() - start
        hanging.close()
    assert elapsed < 4  # two attempts of 0.5 s each, not two of "as long as the server likes"
    assert len(hanging.requests) == 2
    assert "after 2 attempts (TimeoutError: no complete answer within 0.5 s)" in str(info.value)


def test_connection_refused_then_the_server_comes_up(tmp_path: Path) -> None:
    with socket.socket() as sock:  # reserve a port with no listener: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started: list[ChatServer] = []
    timer = threading.Timer(0.3, lambda: started.append(_serve(port=port)))
    timer.start()
    try:
        result = generate_descriptions(LLMConfig(url=f"http://127.0.0.1:{port}/v1", model="tiny-chat", n=2,
                                                 timeout=5.0, retries=6, backoff=0.2), ["cat"])
    finally:
        timer.join()
        for chat in started:
            chat.close()
    assert result.sentences == {0: ["A cat seen from the side.", "A cat up close."]}
    assert result.requests == 1 and len(started[0].requests) == 1  # refused attempts never reached it


def test_requests_run_concurrently_up_to_the_bound_and_the_output_does_not_depend_on_it(tmp_path: Path) -> None:
    names = [f"class{i:02d} {'x' * (i % 5)}" for i in range(12)]
    outputs = {}
    for concurrency in (3, 1):
        chat = _serve(gate=concurrency if concurrency > 1 else 0)
        cache = tmp_path / f"answers{concurrency}.jsonl"
        try:
            result = generate_descriptions(_llm(chat.url, cache, concurrency=concurrency), names)
        finally:
            chat.close()
        assert chat.max_in_flight == concurrency and result.requests == 12
        outputs[concurrency] = (result.sentences, cache.read_bytes())
    assert outputs[3] == outputs[1]
    assert _cache_keys(tmp_path / "answers3.jsonl") == [request_key("tiny-chat", build_prompt(n, 2), 2) for n in names]
    assert list(outputs[3][0]) == list(range(12))


def test_llm_config_validates_timeout_and_concurrency() -> None:
    with pytest.raises(SageError, match=r"--llm-timeout 0: must be more than 0 seconds"):
        LLMConfig(url="http://x", model="m", timeout=0)
    with pytest.raises(SageError, match=r"--llm-concurrency 0: must be between 1 and 64"):
        LLMConfig(url="http://x", model="m", concurrency=0)


def test_a_cache_line_nested_too_deep_is_skipped(tmp_path: Path, server: ChatServer) -> None:
    cache = tmp_path / "answers.jsonl"
    cache.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    result = generate_descriptions(_llm(server.url, cache), ["cat"])
    assert (result.requests, result.cached) == (1, 0) and sorted(result.sentences) == [0]
