"""Class descriptions written by a chat model behind an OpenAI-compatible endpoint.

One chat-completions request per class asks for N short visual descriptions, one per line (as in
CuPL). Answers are cached on disk as JSON lines keyed by a hash of the request without the URL
(model + prompt + n), so a re-run, or the same model served elsewhere, asks nothing twice. Only
the standard library is used: a local llama.cpp / Ollama / vLLM server is the usual endpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sage_cli.encode_text.templates import display_name
from sage_cli.errors import SageError

logger = logging.getLogger(__name__)

PROMPT = (
    "Write {n} different short sentences describing what a {name} looks like in a photo. "
    "Each sentence must mention the {name} and a visual feature that tells it apart from "
    "similar things. Answer with one sentence per line and nothing else."
)
SYSTEM = "You write short, factual visual descriptions of objects for an image classifier."
PROMPT_VERSION = 1
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_BULLET = re.compile(r"^\s*(?:[-*\u2022]+|\d+[.)]|\(\d+\))\s*")


@dataclass(frozen=True)
class LLMConfig:
    """Where to ask, whom, how many sentences per class, and how patiently."""

    url: str
    model: str
    n: int = 5
    cache: Path | None = None
    timeout: float = 60.0
    retries: int = 4
    backoff: float = 1.0  # seconds before the first retry; doubles each time
    api_key: str | None = None  # sent as a Bearer token when set; never recorded

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise SageError(f"--llm-url {self.url!r}: must start with http:// or https://")
        if not self.model.strip():
            raise SageError("--llm-model: required with --generate")
        if self.n < 1:
            raise SageError(f"--llm-n {self.n}: must be at least 1")
        if self.retries < 0 or self.backoff < 0 or self.timeout <= 0:
            raise SageError("llm retries/backoff must be >= 0 and timeout > 0")


@dataclass(frozen=True)
class GenerationResult:
    sentences: dict[int, list[str]]  # class id -> sentences (classes with no usable answer left out)
    requests: int  # requests actually sent (0 when everything came from the cache)
    cached: int  # classes answered from the cache


def request_key(model: str, prompt: str, n: int) -> str:
    """The cache key of one request: independent of the URL (and of the API key)."""
    text = json.dumps({"model": model, "prompt": prompt, "n": n}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def build_prompt(class_name: str, n: int) -> str:
    return PROMPT.format(n=n, name=display_name(class_name))


def generate_descriptions(
    config: LLMConfig,
    class_names: Sequence[str],
    progress: Callable[[int, int], None] | None = None,
) -> GenerationResult:
    """Ask (or read from the cache) ``config.n`` sentences for every class."""
    cache = AnswerCache(config.cache)
    sentences: dict[int, list[str]] = {}
    requests = cached = 0
    for class_id, name in enumerate(class_names):
        prompt = build_prompt(name, config.n)
        key = request_key(config.model, prompt, config.n)
        answer = cache.get(key)
        if answer is None:
            answer = ask_chat(config, prompt)
            requests += 1
            cache.put(key, {"model": config.model, "prompt": prompt, "n": config.n, "answer": answer})
        else:
            cached += 1
        lines = parse_answer(answer, config.n)
        if lines:
            sentences[class_id] = lines
        else:
            logger.warning("the chat model gave no usable description for %r; using templates", name)
        if progress:
            progress(class_id + 1, len(class_names))
    return GenerationResult(sentences, requests, cached)


def parse_answer(answer: str, n: int) -> list[str]:
    """Up to ``n`` distinct sentences, one per non-empty line, bullets and numbering removed."""
    lines: list[str] = []
    for raw in answer.splitlines():
        line = " ".join(_BULLET.sub("", raw).split()).strip('"')
        if line and line not in lines:
            lines.append(line)
    return lines[:n]


def chat_url(url: str) -> str:
    """Accept a base URL (``http://host:8080/v1``) or the full chat-completions URL."""
    url = url.rstrip("/")
    return url if url.endswith("/chat/completions") else f"{url}/chat/completions"


def ask_chat(config: LLMConfig, prompt: str) -> str:
    """POST one chat-completions request, retrying transient failures with exponential backoff."""
    body = {
        "model": config.model,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
        "temperature": 0.0,
    }
    url = chat_url(config.url)
    last = "no attempt"
    for attempt in range(config.retries + 1):
        if attempt:
            time.sleep(config.backoff * 2 ** (attempt - 1))
        try:
            return _extract_content(url, _post_json(url, body, config))
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code} {exc.reason}"
            if exc.code not in _RETRY_STATUS:
                raise SageError(f"--llm-url {url}: {last}: {_error_body(exc)}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            last = str(getattr(exc, "reason", exc))
        logger.debug("chat request failed (%s), attempt %d of %d", last, attempt + 1, config.retries + 1)
    raise SageError(
        f"--llm-url {url}: unreachable or failing after {config.retries + 1} attempts ({last}); "
        "is the server running and is the URL right?"
    )


def _post_json(url: str, body: dict[str, Any], config: LLMConfig) -> Any:
    headers = {"Content-Type": "application/json"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=config.timeout) as response:
        raw = response.read()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SageError(f"--llm-url {url}: answered with something that is not JSON") from None


def _extract_content(url: str, payload: Any) -> str:
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise SageError(f"--llm-url {url}: not a chat-completions answer (no choices[0].message.content)") from None
    return content if isinstance(content, str) else ""


def _error_body(exc: urllib.error.HTTPError) -> str:
    try:
        text = exc.read().decode("utf-8", "replace")
    except Exception:  # the body is a courtesy; never fail on it
        return ""
    return " ".join(text.split())[:160]


class AnswerCache:
    """JSON lines of ``{"key", "model", "prompt", "n", "answer"}``; appended as answers arrive."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.answers: dict[str, str] = {}
        if path is not None and path.is_file():
            self._load(path)

    def _load(self, path: Path) -> None:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                self.answers[entry["key"]] = str(entry["answer"])
            except (json.JSONDecodeError, KeyError, TypeError):
                # A torn last line from an interrupted run: that request is simply asked again.
                logger.warning("%s:%d: unreadable cache line skipped", path, number)

    def get(self, key: str) -> str | None:
        return self.answers.get(key)

    def put(self, key: str, entry: dict[str, Any]) -> None:
        self.answers[key] = entry["answer"]
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"key": key, **entry}, ensure_ascii=False) + "\n"
        with open(self.path, "a+b") as f:
            if f.tell() > 0:  # after a torn last line (interrupted run), start on a fresh line
                f.seek(-1, 2)
                if f.read(1) != b"\n":
                    line = "\n" + line
            f.write(line.encode("utf-8"))
