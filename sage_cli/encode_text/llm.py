"""Class descriptions written by a chat model behind an OpenAI-compatible endpoint.

One chat-completions request per class asks for N short visual descriptions, one per line (as in
CuPL). Requests run a few at a time (``concurrency``), each bounded by a deadline and a size
limit and retried on connection faults. Only answers that pass :func:`check_answer` (in
``answers.py``: descriptions that name the class, no refusal) are cached,
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
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sage_cli.encode_text.answers import check_answer, parse_answer  # noqa: F401 (parse_answer: re-exported)
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
MAX_TIMEOUT = 3600.0  # seconds: one attempt's deadline; a slow CPU model writes 5 sentences well within it
MAX_N = 100
MAX_RETRIES = 100
MAX_BACKOFF = 60.0  # seconds: the longest wait between two attempts
_NAMED_WARNINGS = 10  # classes without a usable answer named one by one; the rest are counted


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
        if self.n > MAX_N:
            raise SageError(f"--llm-n {self.n}: must be at most {MAX_N}")
        if not self.timeout > 0:  # NaN too
            raise SageError(f"--llm-timeout {self.timeout:g}: must be more than 0 seconds")
        if not self.timeout <= MAX_TIMEOUT:  # inf: a deadline that never comes
            raise SageError(f"--llm-timeout {self.timeout:g}: must be at most {MAX_TIMEOUT:g} seconds "
                            "(one attempt's deadline; retries add more)")
        if not 1 <= self.concurrency <= 64:
            raise SageError(f"--llm-concurrency {self.concurrency}: must be between 1 and 64")
        if not 0 <= self.retries <= MAX_RETRIES:
            raise SageError(f"--llm-retries {self.retries}: must be between 0 and {MAX_RETRIES}")
        if not 0 <= self.backoff <= MAX_BACKOFF or self.max_bytes < 1:
            raise SageError(f"llm backoff must be 0 to {MAX_BACKOFF:g} s and max_bytes >= 1")


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
        if answer is not None and check_answer(answer, config.n, class_names[class_id])[1] is None:
            answers[class_id] = answer
    cached = len(answers)
    missing = [class_id for class_id in range(len(keys)) if class_id not in answers]
    writer = _OrderedWriter(cache, config, class_names, keys, missing)
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
        lines, problem = check_answer(answers.get(class_id), config.n, name)
        problem = problems.get(class_id, problem)
        if problem is None:
            sentences[class_id] = lines
        else:
            problems[class_id] = problem
            # A few named here; the caller says how many in all (8,142 lines help nobody).
            level = logging.WARNING if len(problems) <= _NAMED_WARNINGS else logging.DEBUG
            logger.log(level, "the chat model gave no usable description for %r (%s); using templates",
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

    def __init__(self, cache: AnswerCache, config: LLMConfig, class_names: Sequence[str],
                 keys: Sequence[str], order: Sequence[int]) -> None:
        self.cache, self.config, self.names, self.keys = cache, config, class_names, keys
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
        name = self.names[class_id]
        if answer is None or check_answer(answer, self.config.n, name)[1] is not None:
            return  # never cached: a later run asks again
        prompt = build_prompt(name, self.config.n)
        self.cache.put(self.keys[class_id], {"model": self.config.model, "prompt": prompt,
                                             "n": self.config.n, "answer": answer})


def chat_url(url: str) -> str:
    """Accept a base URL (``http://host:8080/v1``) or the full chat-completions URL."""
    url = url.rstrip("/")
    return url if url.endswith("/chat/completions") else f"{url}/chat/completions"


def ask_chat(config: LLMConfig, prompt: str, stop: threading.Event | None = None) -> str | None:
    """POST one chat-completions request; the answer's content (``None`` when it has none).

    Connection faults (refused, reset, a bad status line, an incomplete body, the deadline) and
    the statuses in ``_RETRY_STATUS`` are retried with exponential backoff (at most ``MAX_BACKOFF`` s); after the last
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
        if attempt and stop.wait(min(config.backoff * 2 ** (attempt - 1), MAX_BACKOFF)):
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
    if not isinstance(content, str):
        return None
    # "\ud800" in the JSON is a lone surrogate: no file or table can hold it as UTF-8.
    return content.encode("utf-8", "replace").decode("utf-8")


def _error_body(raw: bytes) -> str:
    return one_line(raw[:4096].decode("utf-8", "replace"), 160)


class AnswerCache:
    """JSON lines of ``{"key", "model", "prompt", "n", "answer"}``; appended as answers arrive.

    Only ever appended to, never rewritten: an unreadable line (torn by an interrupted run, not
    UTF-8, not an entry) is skipped with a warning naming its line, and its request asked again.
    A path that cannot take an append (a directory, no permission) is one error line before any
    request is sent, so no answer is paid for and then lost.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.answers: dict[str, str] = {}
        if path is not None:
            self._check_appendable(path)
            self._load(path)

    @staticmethod
    def _check_appendable(path: Path) -> None:
        if path.exists() and not path.is_file():
            raise SageError(f"{path}: is not a file (a directory?); the answer cache (--llm-cache) must be "
                            "a file of JSON lines: move it away or pass another --llm-cache")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "ab"):  # creates an empty cache; appends nothing
                pass
        except OSError as exc:
            raise SageError(f"{path}: cannot write the answer cache ({exc.strerror or exc}); "
                            "fix it or pass another --llm-cache") from None

    def _load(self, path: Path) -> None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SageError(f"{path}: cannot read the answer cache ({exc.strerror or exc})") from None
        skipped: list[int] = []
        for number, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue
            entry = _parse_cache_line(raw)
            if entry is None:
                skipped.append(number)
            elif isinstance(entry["answer"], str):  # a null answer (an older sage) is asked again
                self.answers[entry["key"]] = entry["answer"]
        if skipped:
            where = ", ".join(f"{path}:{number}" for number in skipped[:3])
            more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
            logger.warning("%s%s: unreadable answer cache line(s) skipped (torn, not UTF-8 or not an entry); "
                           "their classes are asked again, the file is only appended to", where, more)

    def get(self, key: str) -> str | None:
        return self.answers.get(key)

    def put(self, key: str, entry: dict[str, Any]) -> None:
        self.answers[key] = entry["answer"]
        if self.path is None:
            return
        line = json.dumps({"key": key, **entry}, ensure_ascii=False) + "\n"
        try:
            with open(self.path, "a+b") as f:
                if f.tell() > 0:  # after a torn last line (interrupted run), start on a fresh line
                    f.seek(-1, 2)
                    if f.read(1) != b"\n":
                        line = "\n" + line
                f.write(line.encode("utf-8"))
        except OSError as exc:
            raise SageError(f"{self.path}: cannot append to the answer cache ({exc.strerror or exc}); "
                            "the answers cached before this one are kept") from None


def _parse_cache_line(raw: bytes) -> dict[str, Any] | None:
    """The entry on one cache line, or None when it is not one (not UTF-8, not JSON, no key)."""
    try:
        entry = json.loads(raw.decode("utf-8"))
        if isinstance(entry, dict) and isinstance(entry["key"], str) and "answer" in entry:
            if isinstance(entry["answer"], str):
                entry["answer"].encode("utf-8")  # a lone surrogate ("\\ud800") is no text
            return entry
    except (ValueError, KeyError, RecursionError):  # UnicodeDecodeError is a ValueError
        pass
    return None
