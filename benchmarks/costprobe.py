"""Imported inside a benchmark hub (by its ``jupyterhub_config.py``, see :func:`hub_config`): where its time goes.

The harness's ``breakdown`` scenarios put this in both hubs of a pair. It records, from the hub's own process:

- the garbage collector: collections per generation and the time each took (``gc.callbacks``);
- with ``timers`` (the jh_otel hub only), the CPU time of the calling thread (``time.thread_time_ns``) spent in each
  function of :data:`TIMED`, and its number of calls: the request span's start and finish, the SDK's
  ``Tracer.start_span`` and the lean span factory inside it, a lean span's end, the batch processor's ``emit``, a SQL
  statement's two listeners, the request metrics. Nested timers count in both (``Tracer.start_span`` inside the
  request span's start); each timed call pays two extra clock reads (about 0.4 us), so the figures are upper bounds.

The harness asks for a reading by creating ``<dir>/costprobe.request`` and reads ``<dir>/costprobe.json`` (one
reading before the measured rounds and one after: the difference is the rounds' share). The timers replace class
attributes after jh_otel installed (the config runs after ``opentelemetry-instrument``'s start): the lookups jh_otel
and the SDK make at call time find them; nothing here runs in a hub that is not benchmarked.
"""

from __future__ import annotations

import gc
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TIMED: tuple[tuple[str, str, str], ...] = (
    ("jh_otel.tracing.server", "ServerCorrections._start", "request span: start (jh_otel)"),
    ("jh_otel.tracing.server", "ServerCorrections.route", "  route template (inside start)"),
    ("jh_otel.tracing.server", "request_secrets", "  request credentials (inside start)"),
    ("opentelemetry.context", "attach", "  context attach (inside start)"),
    ("jh_otel.tracing.server", "ServerCorrections._finish", "request span: finish (jh_otel)"),
    ("jh_otel.tracing.server", "user_attributes", "  user attributes (inside finish)"),
    ("opentelemetry.sdk.trace", "Tracer.start_span", "SDK Tracer.start_span (any span)"),
    ("jh_otel.tracing.lean", "SpanFactory.__call__", "  lean span factory (inside start_span)"),
    ("jh_otel.tracing.lean", "LeanSpan.end", "lean span: end (ReadableSpan, processors)"),
    ("opentelemetry.sdk._shared_internal", "BatchProcessor.emit", "  batch processor emit (inside end)"),
    ("jh_otel.tracing.sql", "HubEngineTracer._before_cur_exec", "SQL statement: before (span start)"),
    ("opentelemetry.instrumentation.sqlalchemy.engine", "_after_cur_exec", "SQL statement: after (span end)"),
    ("jh_otel.tracing.sql", "SpanBatch._step_over", "SQL spans made at the end of a loop step"),
    ("jh_otel.hooks.requests", "RequestRecorder._record", "request metrics (catalogue records)"),
    ("jh_otel.instruments", "Recorder.record", "  one catalogue record (inside request metrics)"),
)
"""(module, attribute path, label) of each timed function."""


class Probe:
    def __init__(self, directory: Path, timers: bool) -> None:
        self.directory = directory
        self.gc_count = [0, 0, 0]
        self.gc_ns = [0, 0, 0]
        self._gc_started = 0
        self.calls: dict[str, list[int]] = {}
        self.missing: list[str] = []
        gc.callbacks.append(self._gc)
        if timers:
            for module, path, label in TIMED:
                self._time(module, path, label)
        threading.Thread(target=self._serve, name="costprobe", daemon=True).start()

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter_ns()
        else:
            generation = info["generation"]
            self.gc_count[generation] += 1
            self.gc_ns[generation] += time.perf_counter_ns() - self._gc_started

    def _time(self, module: str, path: str, label: str) -> None:
        import importlib

        try:
            owner: Any = importlib.import_module(module)
            *parents, name = path.split(".")
            for parent in parents:
                owner = getattr(owner, parent)
            original = getattr(owner, name)
        except (ImportError, AttributeError):
            self.missing.append(f"{module}.{path}")
            return
        entry = self.calls[label] = [0, 0]
        clock = time.thread_time_ns

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = clock()
            try:
                return original(*args, **kwargs)
            finally:
                entry[0] += 1
                entry[1] += clock() - started

        setattr(owner, name, _like(timed, original))

    def reading(self) -> dict[str, Any]:
        return {
            "gc_count": list(self.gc_count),
            "gc_ms": [round(ns / 1e6, 3) for ns in self.gc_ns],
            "calls": {label: {"n": n, "cpu_us": round(ns / 1000, 1)} for label, (n, ns) in self.calls.items()},
            "missing": self.missing,
            "threads": _thread_cpu(),
        }

    def _serve(self) -> None:
        request, out = self.directory / "costprobe.request", self.directory / "costprobe.json"
        for _ in range(10**7):  # bounded: the hub lives for one scenario
            time.sleep(0.1)
            if request.exists():
                tmp = out.with_suffix(".tmp")
                tmp.write_text(json.dumps(self.reading()))
                tmp.replace(out)
                request.unlink()


def _like(wrapper: Callable[..., Any], original: Any) -> Any:
    wrapper.__name__ = getattr(original, "__name__", "timed")
    wrapper.__qualname__ = getattr(original, "__qualname__", "timed")
    # the original's signature for inspect.signature: jh_otel checks the contrib functions it relies on at install
    # (a timed _after_cur_exec without it left the hub without SQL spans)
    wrapper.__wrapped__ = original  # type: ignore[attr-defined]
    return wrapper


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of each of the process's threads, by name (from ``/proc``)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        name = names.get(int(task.name), f"thread {task.name}")
        if int(task.name) == os.getpid():
            name = "main (event loop)"
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def hub_config(directory: Path, timers: bool) -> str:
    """Config lines that start the probe in the hub, readings in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    return f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
import costprobe
costprobe.Probe(costprobe.Path({str(directory)!r}), timers={timers!r})
"""


def read(directory: Path, timeout: float = 10.0) -> dict[str, Any]:
    """One reading from the hub whose probe writes in ``directory``."""
    out = directory / "costprobe.json"
    out.unlink(missing_ok=True)
    (directory / "costprobe.request").write_text("")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out.exists():
            return json.loads(out.read_text())
        time.sleep(0.05)
    raise RuntimeError(f"no cost-probe reading in {directory} within {timeout}s")


def difference(before: dict[str, Any], after: dict[str, Any], requests: int) -> dict[str, Any]:
    """What the measured rounds took, per request: GC time and collections, each timed function, each thread."""
    per = max(requests, 1)
    calls = {}
    for label, a in after["calls"].items():
        b = before["calls"].get(label, {"n": 0, "cpu_us": 0.0})
        n, us = a["n"] - b["n"], a["cpu_us"] - b["cpu_us"]
        calls[label] = {
            "calls_per_request": round(n / per, 2),
            "cpu_us_per_call": round(us / n, 2) if n else None,
            "cpu_us_per_request": round(us / per, 1),
        }
    threads = {
        name: round(1e6 * (cpu - before["threads"].get(name, 0.0)) / per, 1)
        for name, cpu in after["threads"].items()
        if cpu - before["threads"].get(name, 0.0) > 0
    }
    return {
        "requests": requests,
        "gc_collections": [a - b for a, b in zip(after["gc_count"], before["gc_count"])],
        "gc_us_per_request": round(1000 * (sum(after["gc_ms"]) - sum(before["gc_ms"])) / per, 1),
        "calls": calls,
        "thread_cpu_us_per_request": threads,
        "missing": after["missing"],
    }
