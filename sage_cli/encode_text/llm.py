"""Class descriptions written by a chat model behind an OpenAI-compatible endpoint.

One chat-completions request per class asks for N short visual descriptions, one per line (as in
CuPL). Requests run a few at a time (``concurrency``), each bounded by a deadline and a size
limit and retried on connection faults. Only answers that pass :func:`check_answer` are cached,
on disk as JSON lines keyed by a hash of the request without the URL (model + prompt + n), in
class order whatever the concurrency, so a re-run, or the same model served elsewhere, asks
nothing twice, and an empty or refused answer is asked again next time. Only the standard library
is used: a local llama.cpp / Ollama / vLLM server is the usual endpoint.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sage_cli.encode_text.templates import display_name
from sage_cli.encode_text.transport import AnswerTooLarge, post
from sage_cli.errors import SageError
from sage_cli.textsafe import one_line

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
# Refusals and meta-talk: an answer with such a line is not a description of the class.
_REFUSAL = re.compile(
    r"\b(?:i'?m sorry|i am sorry|i apologi[sz]e|as an ai\b|as a (?:large )?language model|"
    r"i can(?:'|no)?t (?:help|assist|provide|comply|describe|do)|i cannot|i'?m (?:not able|unable)|"
    r"i am (?:not able|unable))",
    re.IGNORECASE,
)
MIN_WORDS = 3  # a plausible sentence: "A red bird." and longer
MAX_SENTENCE_CHARS = 400
MAX_CHARS_PER_SENTENCE_ASKED = 1000  # an answer longer than n times this is a runaway generation


@dataclass(frozen=True)
class LLMConfig:
    """Where to ask, whom, how many sentences per class, and how patiently."""

    url: str
    model: str
    n: int = 5
    cache: Path | None = None
    timeout: float = 60.0  # seconds for one whole attempt (connect, send, full answer): a deadline
    retries: int = 4
    backoff: float = 1.0  # seconds before the first retry; doubles each time
    concurrency: int = 4  # requests in flight at once
    max_bytes: int = 1 << 20  # a larger HTTP answer is cut off and refused
    api_key: str | None = None  # sent as a Bearer token when set; never recorded

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise SageError(f"--llm-url {self.url!r}: must start with http:// or https://")
        if not self.model.strip():
            raise SageError("--llm-model: required with --generate")
        if self.n < 1:
            raise SageError(f"--llm-n {self.n}: must be at least 1")
        if not self.timeout > 0:
            raise SageError(f"--llm-timeout {self.timeout:g}: must be more than 0 seconds")
        if not 1 <= self.concurrency <= 64:
            raise SageError(f"--llm-concurrency {self.concurrency}: must be between 1 and 64")
        if self.retries < 0 or self.backoff < 0 or self.max_bytes < 1:
            raise SageError("llm retries/backoff must be >= 0 and max_bytes >= 1")


@dataclass(frozen=True)
class GenerationResult:
    sentences: dict[int, list[str]]  # class id -> sentences (classes with no usable answer left out)
    requests: int  # requests actually sent (0 when everything came from the cache)
    cached: int  # classes answered from the cache
    rejected: dict[int, str] | None = None  # class id -> why its answer was not used (not cached)


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
    """Ask (or read from the cache) ``config.n`` sentences for every class.

    The result and the cache file do not depend on ``config.concurrency``: answers are checked
    and cached in class order. A fatal error (a refused request, a server down after every retry)
    stops the run; the answers that arrived before it are cached first.
    """
    cache = AnswerCache(config.cache)
    prompts = [build_prompt(name, config.n) for name in class_names]
    keys = [request_key(config.model, prompt, config.n) for prompt in prompts]
    answers: dict[int, str | None] = {}
    problems: dict[int, str] = {}
    for class_id, key in enumerate(keys):
        answer = cache.get(key)
        if answer is not None and check_answer(answer, config.n)[1] is None:
            answers[class_id] = answer
    cached = len(answers)
    missing = [class_id for class_id in range(len(keys)) if class_id not in answers]
    writer = _OrderedWriter(cache, config, prompts, keys, missing)
    done = cached
    if progress and done:
        progress(done, len(keys))
    try:
        for class_id, answer, problem in _ask_all(config, prompts, missing):
            answers[class_id] = answer
            if problem:
                problems[class_id] = problem
            writer.arrived(class_id, answer if problem is None else None)
            done += 1
            if progress:
                progress(done, len(keys))
    finally:
        writer.flush()  # after a fatal error too: what arrived is not asked again
    return _collect(config, class_names, answers, problems, cached, len(missing))


def _collect(config: LLMConfig, class_names: Sequence[str], answers: dict[int, str | None],
             problems: dict[int, str], cached: int, requests: int) -> GenerationResult:
    sentences: dict[int, list[str]] = {}
    for class_id, name in enumerate(class_names):
        lines, problem = check_answer(answers.get(class_id), config.n)
        problem = problems.get(class_id, problem)
        if problem is None:
            sentences[class_id] = lines
        else:
            problems[class_id] = problem
            logger.warning("the chat model gave no usable description for %r (%s); using templates",
                           name, problem)
    return GenerationResult(sentences, requests, cached, dict(sorted(problems.items())))


def _ask_all(config: LLMConfig, prompts: Sequence[str], class_ids: Sequence[int]
             ) -> Iterator[tuple[int, str | None, str | None]]:
    """Yield ``(class id, answer or None, problem or None)`` as answers arrive, a few at a time."""
    if not class_ids:
        return
    stop = threading.Event()  # set on a fatal error or an interrupt: retries end at once
    pending = iter(class_ids)
    running: dict[Future, int] = {}
    with ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="sage-llm") as pool:
        try:
            while True:
                while len(running) < config.concurrency:  # submit lazily: 8,142 classes, few futures
                    class_id = next(pending, None)
                    if class_id is None:
                        break
                    running[pool.submit(_ask_one, config, prompts[class_id], stop)] = class_id
                if not running:
                    return
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                failed = [f for f in finished if f.exception() is not None]
                for future in sorted(finished, key=running.__getitem__):
                    class_id = running.pop(future)
                    if future not in failed:
                        yield class_id, *future.result()
                if failed:
                    stop.set()
                    raise failed[0].exception()  # a SageError (or a bug) ends the run
        finally:
            stop.set()


def _ask_one(config: LLMConfig, prompt: str, stop: threading.Event) -> tuple[str | None, str | None]:
    try:
        return ask_chat(config, prompt, stop), None
    except AnswerTooLarge as exc:
        return None, f"answer too large: {exc}"


class _OrderedWriter:
    """Caches good answers in class order, whatever order they arrive in."""

    def __init__(self, cache: AnswerCache, config: LLMConfig, prompts: Sequence[str],
                 keys: Sequence[str], order: Sequence[int]) -> None:
        self.cache, self.config, self.prompts, self.keys = cache, config, prompts, keys
        self.order = list(order)
        self.next = 0
        self.arrivals: dict[int, str | None] = {}

    def arrived(self, class_id: int, answer: str | None) -> None:
        self.arrivals[class_id] = answer
        while self.next < len(self.order) and self.order[self.next] in self.arrivals:
            class_id = self.order[self.next]
            self.next += 1
            self._put(class_id, self.arrivals.pop(class_id))

    def flush(self) -> None:
        """Cache what arrived past a gap (requests that never finished), still in class order."""
        for class_id in sorted(self.arrivals):
            self._put(class_id, self.arrivals.pop(class_id))

    def _put(self, class_id: int, answer: str | None) -> None:
        if answer is None or check_answer(answer, self.config.n)[1] is not None:
            return  # never cached: a later run asks again
        self.cache.put(self.keys[class_id], {"model": self.config.model, "prompt": self.prompts[class_id],
                                             "n": self.config.n, "answer": answer})


def check_answer(answer: Any, n: int) -> tuple[list[str], str | None]:
    """The answer's sentences and ``None``, or ``[]`` and why the answer is not usable.

    Usable: a non-empty string of bounded length, no refusal in it, and at least one plausible
    sentence (3 words or more, mostly letters, at most 400 characters; lines ending in ":" such as
    "Here are five sentences:" are not sentences).
    """
    if not isinstance(answer, str) or not answer.strip():
        return [], "an empty answer"
    if len(answer) > MAX_CHARS_PER_SENTENCE_ASKED * n:
        return [], f"an answer of {len(answer):,} characters for {n} sentence(s)"
    if _REFUSAL.search(answer):
        return [], "a refusal, not a description"
    lines = [line for line in parse_answer(answer, len(answer)) if is_plausible_sentence(line)]
    if not lines:
        return [], "no plausible sentence in the answer"
    return lines[:n], None


def is_plausible_sentence(line: str) -> bool:
    """Three or more words, mostly letters, not too long, not a lead-in ending in a colon."""
    if len(line) > MAX_SENTENCE_CHARS or line.endswith(":") or len(line.split()) < MIN_WORDS:
        return False
    visible = [c for c in line if not c.isspace()]
    return sum(c.isalpha() for c in visible) >= 0.6 * len(visible)


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


def ask_chat(config: LLMConfig, prompt: str, stop: threading.Event | None = None) -> str | None:
    """POST one chat-completions request; the answer's content (``None`` when it has none).

    Connection faults (refused, reset, a bad status line, an incomplete body, the deadline) and
    the statuses in ``_RETRY_STATUS`` are retried with exponential backoff; after the last
    attempt, or on any other HTTP error, a one-line :class:`SageError`. ``stop`` ends the retries.
    """
    body = {
        "model": config.model,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
        "temperature": 0.0,
    }
    url = chat_url(config.url)
    stop = stop or threading.Event()
    last = "no attempt"
    for attempt in range(config.retries + 1):
        if attempt and stop.wait(config.backoff * 2 ** (attempt - 1)):
            raise SageError(f"--llm-url {url}: stopped after another request failed")
        try:
            reply = post(url, json.dumps(body).encode(), _headers(config), config.timeout, config.max_bytes)
        except (OSError, http.client.HTTPException) as exc:
            last = _describe(exc)
        else:
            if 200 <= reply.status < 300:
                return _extract_content(url, _parse_json(url, reply.body))
            last = f"HTTP {reply.status} {reply.reason}"
            if reply.status not in _RETRY_STATUS:
                raise SageError(f"--llm-url {url}: {one_line(last)}: {_error_body(reply.body)}")
        logger.debug("chat request failed (%s), attempt %d of %d", last, attempt + 1, config.retries + 1)
    raise SageError(
        f"--llm-url {url}: unreachable or failing after {config.retries + 1} "
        f"attempt{'s' if config.retries else ''} ({last}); "
        "is the server running and is the URL right?"
    )


def _headers(config: LLMConfig) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    return headers


def _describe(exc: BaseException) -> str:
    """One short line: "TimeoutError: no complete answer within 0.5 s", "IncompleteRead: ..."."""
    text = str(exc) or repr(exc)
    if isinstance(exc, http.client.IncompleteRead):
        text = f"{len(exc.partial)} bytes read, {exc.expected} more expected"
    return one_line(f"{type(exc).__name__}: {text}", 160)


def _parse_json(url: str, raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise SageError(f"--llm-url {url}: answered with something that is not JSON") from None


def _extract_content(url: str, payload: Any) -> str | None:
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise SageError(f"--llm-url {url}: not a chat-completions answer (no choices[0].message.content)") from None
    return content if isinstance(content, str) else None


def _error_body(raw: bytes) -> str:
    return one_line(raw[:4096].decode("utf-8", "replace"), 160)


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
                if isinstance(entry["answer"], str):  # a null answer (an older sage) is asked again
                    self.answers[entry["key"]] = entry["answer"]
            except (ValueError, KeyError, TypeError, RecursionError):
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
