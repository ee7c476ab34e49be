"""The one-shot GPU check's machinery, apart from what it measures.

A :class:`Runner` runs :class:`Step` s in order, each under try/except with a time limit, and
skips a step whose inputs failed or that would not finish inside the run's budget. After every
step it rewrites ``summary.json`` (every step's status, error line, wall time and record) and
``summary.md`` in the returned folder, so that a run killed from outside still returns what it
measured; at the end it packs every step's JSON and logs into ``results.tar.gz``. The returned
folder holds only :data:`RETURNED` (the GPU host sends back at most 8 files); all other work goes
to a work directory outside it.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import logging
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

logger = logging.getLogger("bench_gpu")

SUMMARY_JSON, SUMMARY_MD, ARCHIVE, TESTS_LOG, BENCH_LOG = (
    "summary.json", "summary.md", "results.tar.gz", "gpu_tests.log", "bench.log")
RETURNED = (SUMMARY_JSON, SUMMARY_MD, ARCHIVE, TESTS_LOG, BENCH_LOG)
MAX_RETURNED_FILES = 8  # what the GPU host sends back


class BenchError(Exception):
    """A bad option or folder: one line, exit 2, nothing written."""


class StepTimeout(Exception):
    """A step ran past its time limit."""


@dataclass(frozen=True)
class Step:
    """One thing the run does: ``run()`` returns the step's record (a JSON-ready dict).

    ``kind`` is environment, tests, setup or figure; ``needs`` names steps that must have
    succeeded first; ``estimate_s`` is the expected wall time (the budget check), None = unknown.
    A record's ``files`` (paths) are packed into the archive under the step's name.
    """

    name: str
    kind: str
    run: Callable[[], dict[str, Any]]
    needs: tuple[str, ...] = ()
    estimate_s: float | None = None


def check_folders(out: Path, work: Path, force: bool) -> None:
    """BenchError unless ``out`` can be the returned folder and ``work`` lies outside it.

    ``out`` must be empty or absent; with ``force`` it may hold this command's own files (replaced),
    never others: the host returns at most :data:`MAX_RETURNED_FILES` files.
    """
    out, work = out.resolve(), work.resolve()
    if work == out or work.is_relative_to(out):
        raise BenchError(f"--work {work} is inside --out {out}; the work (GBs of images) must stay out of "
                         "the returned folder")
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out} is a file, not a folder")
    present = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    foreign = [name for name in present if name not in RETURNED]
    if foreign:
        raise BenchError(f"--out {out} holds other files ({', '.join(foreign[:3])}); use an empty folder")
    if present and not force:
        raise BenchError(f"--out {out} holds an earlier run's {', '.join(present)}; --force replaces them")


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def describe_error(exc: BaseException) -> str:
    """One line: the exception's type and the first line of its message (at most 300 characters)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300].rstrip(": ")


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`StepTimeout` in the body after ``seconds`` (main thread only; None: no limit).

    The alarm interrupts Python code (a DataLoader waiting on its workers, say), not a single
    long call into C.
    """
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise StepTimeout(f"ran past its {seconds:g} s limit")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_bounded(command: list[str], log: Path, timeout_s: float, cwd: Path | None = None) -> tuple[int, str]:
    """Run ``command`` with its output in ``log``; (exit code, last non-empty line of the log).

    Past ``timeout_s`` its whole process group is killed and :class:`StepTimeout` raised.
    """
    with open(log, "w") as handle:
        process = subprocess.Popen(command, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            kill_group(process)
            handle.write(f"\n[run_bounded] killed after {timeout_s:g} s\n")
            raise StepTimeout(f"{Path(command[0]).name} ran past {timeout_s:g} s; killed") from None
        except BaseException:
            kill_group(process)
            raise
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return code, (lines[-1] if lines else "")


def kill_group(process: subprocess.Popen) -> None:
    """Kill ``process`` and every process of its session (it was started in a new one)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class Tee(io.TextIOBase):
    """A text stream that writes to a stream and a file (the run's bench.log)."""

    def __init__(self, stream: TextIO, file: TextIO) -> None:
        self.stream, self.file = stream, file

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.file.write(text)
        if "\n" in text:
            self.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()
        self.file.flush()


class Runner:
    """Runs steps into ``out`` (summary files) and ``work`` (per-step JSON); see the module doc."""

    def __init__(self, out: Path, work: Path, header: dict[str, Any], budget_s: float | None = None,
                 step_timeout_s: float | None = None, fail: frozenset[str] = frozenset(),
                 render: Callable[[dict[str, Any]], str] | None = None,
                 after_step: Callable[[], None] | None = None) -> None:
        self.out, self.work, self.header = out, work, header
        self.budget_s, self.step_timeout_s, self.fail = budget_s, step_timeout_s, fail
        self.render, self.after_step = render, after_step
        self.records: dict[str, dict[str, Any]] = {}
        self.started = time.perf_counter()
        self.started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        (work / "results").mkdir(parents=True, exist_ok=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def run_all(self, steps: list[Step]) -> dict[str, Any]:
        """Every step in order; the summary (also on disk) with state complete or interrupted."""
        state = "interrupted"
        try:
            for step in steps:
                self.run(step)
            state = "complete"
        finally:
            summary = self.write_summary(state)
            self.write_archive()
        return summary

    def run(self, step: Step) -> dict[str, Any]:
        """Run one step (or skip it) and record it; never raises for the step's own failure."""
        start = time.perf_counter()
        entry: dict[str, Any] = {"name": step.name, "kind": step.kind, "estimate_s": step.estimate_s}
        reason = self.skip_reason(step)
        if reason is not None:
            entry.update(status="skipped", error=reason)
        else:
            logger.info("%s: running (%.0f s into the run)", step.name, self.elapsed())
            try:
                if step.name in self.fail:
                    raise RuntimeError(f"forced failure of {step.name} (--fail-figure)")
                timeout = self.step_timeout_s if step.kind != "tests" else None  # tests bound themselves
                with time_limit(timeout):
                    entry["record"] = step.run()
                entry["status"] = "ok"
            except Exception as exc:  # one figure's failure must not stop the others
                logger.exception("%s failed", step.name)
                entry.update(status="failed", error=describe_error(exc))
            finally:
                if self.after_step is not None:
                    with contextlib.suppress(Exception):
                        self.after_step()
        entry["wall_s"] = round(time.perf_counter() - start, 2)
        self.records[step.name] = entry
        write_atomic(self.work / "results" / f"{step.name}.json", json.dumps(entry, indent=2, default=str) + "\n")
        line = entry.get("error") or json.dumps(compact(entry.get("record", {})), default=str)
        logger.info("%s: %s in %.1f s: %s", step.name, entry["status"], entry["wall_s"], line)
        self.write_summary("running")
        return entry

    def skip_reason(self, step: Step) -> str | None:
        """Why ``step`` is not run (an input step did not succeed, or the budget), or None."""
        for name in step.needs:
            status = self.records.get(name, {}).get("status", "not run")
            if status != "ok":
                return f"needs {name} ({status})"
        if self.budget_s is not None and step.estimate_s is not None:
            if self.elapsed() + step.estimate_s > self.budget_s:
                return (f"budget: {self.elapsed():.0f} s elapsed + ~{step.estimate_s:.0f} s for this step "
                        f"> {self.budget_s:.0f} s")
        return None

    def summary(self, state: str) -> dict[str, Any]:
        steps = list(self.records.values())
        counts = {s: sum(e["status"] == s for e in steps) for s in ("ok", "failed", "skipped")}
        environment = self.records.get("environment", {}).get("record", {})
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        return {"schema": 1, "state": state, **self.header, "started": self.started_at, "updated": now,
                "elapsed_s": round(self.elapsed(), 1), "counts": counts, "environment": environment,
                "steps": steps}

    def write_summary(self, state: str) -> dict[str, Any]:
        summary = self.summary(state)
        write_atomic(self.out / SUMMARY_JSON, json.dumps(summary, indent=2, default=str) + "\n")
        if self.render is not None:
            try:
                text = self.render(summary)
            except Exception as exc:  # a table bug must not cost the figures
                text = f"summary.md could not be rendered: {describe_error(exc)}\n"
            write_atomic(self.out / SUMMARY_MD, text)
        return summary

    def write_archive(self) -> Path:
        """results.tar.gz: results/<step>.json of every step and the files their records name."""
        path = self.out / ARCHIVE
        tmp = path.with_name(f".{ARCHIVE}.tmp")
        with tarfile.open(tmp, "w:gz") as tar:
            for name, entry in self.records.items():
                tar.add(self.work / "results" / f"{name}.json", arcname=f"results/{name}.json")
                for file in entry.get("record", {}).get("files", []):
                    if Path(file).is_file():
                        tar.add(file, arcname=f"results/{name}/{Path(file).name}")
        os.replace(tmp, path)
        return path


def compact(record: dict[str, Any]) -> dict[str, Any]:
    """The scalar entries of a record (the log line of a step)."""
    return {k: v for k, v in record.items() if not isinstance(v, (dict, list, tuple)) and k != "files"}


def open_log(out: Path) -> TextIO:
    """bench.log in ``out``; stdout and stderr (this process's Python writes) go to it as well."""
    handle = open(out / BENCH_LOG, "a", buffering=1)
    sys.stdout = Tee(sys.__stdout__, handle)
    sys.stderr = Tee(sys.__stderr__, handle)
    return handle
