"""Span delivery through collector outages: encoded batches in a bounded outbox, sent by a thread of their own.

The SDK's batch span processor calls its exporter on its one worker thread, and the OTLP exporters retry a failed
batch there with exponential backoff for up to their timeout (10 s by default). Through a collector outage the
worker sleeps in those retries while the processor's queue (2,048 spans) fills with the outage's spans, and when the
collector comes back, spans made while it was up are dropped behind them: tried with a collector down for 2 minutes
and then flapping (10 s up, 10 s down) under 50 requests/s, 18 % of the spans made while it was up were lost, and
the hub kept the queue's 10 MiB afterwards.

:class:`Outbox` sits between :class:`~jh_otel.tracing.scrubbing.ScrubbingSpanExporter` and an OTLP span exporter
whose ``encode_spans`` is jh_otel's (:mod:`jh_otel.tracing.encoding`). Each batch the processor hands it is
encoded at once into one ``bytes`` body (a few hundred bytes a span, no span object kept) and queued; a sender
thread passes the newest batch to the exporter, which sends it exactly as it would have (endpoint, headers,
compression, TLS, its own retries, its own metrics):

- while the collector answers, :meth:`Outbox.export` waits for its batch to be delivered (at most
  ``handoff_s``), so the processor's ``force_flush`` still means "sent";
- once a batch has failed, nothing waits: batches queue as bytes, newest sent first, each tried at most
  ``attempts`` times (``pause_s`` apart, on top of the exporter's own retries); past ``capacity_bytes`` the oldest
  are dropped, counted and named in one warning per outage; when the collector answers again the queue drains and
  one line says how many were delivered late and dropped;
- at shutdown the queue gets what is left of the processor's shutdown budget, then the exporter is shut down (which
  ends a retry's backoff wait).

The processor's own queue therefore never fills because of the collector, and what an outage leaves behind is
bounded bytes, freed when they are sent or dropped.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .encoding import PreEncoded, SpanEncoder

log = logging.getLogger("jh_otel")

_OTLP_MODULES = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
)


class _Batch:
    __slots__ = ("body", "spans", "attempts", "done")

    def __init__(self, body: bytes, spans: int) -> None:
        self.body = body
        self.spans = spans
        self.attempts = 0
        self.done = threading.Event()


class Outbox(SpanExporter):
    """A bounded queue of encoded span batches in front of ``inner``, delivered by a sender thread."""

    def __init__(
        self,
        inner: SpanExporter,
        capacity_bytes: int,
        *,
        encoder: SpanEncoder | None = None,
        handoff_s: float = 1.0,
        attempts: int = 3,
        pause_s: float = 1.0,
    ) -> None:
        self.inner = inner
        self.capacity_bytes = capacity_bytes
        self.handoff_s = handoff_s
        self.attempts = attempts
        self.pause_s = pause_s
        """Seconds the sender waits after a failed delivery (an exporter that fails at once is not called in a loop)."""
        self._encoder = encoder or SpanEncoder()
        self._queue: deque[_Batch] = deque()
        self._bytes = 0
        self._sending: _Batch | None = None
        self._lock = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stopping = False
        self.healthy = True
        """False from a failed (or slower than ``handoff_s``) delivery until the next successful one."""
        self.failing = False
        """True from a failed delivery until the next successful one."""
        self.delivered_spans = 0
        self.dropped_spans = 0
        """Spans given up: evicted by the capacity, failed ``attempts`` times, or left at shutdown."""
        self._outage: tuple[float, int, int] | None = None  # (since, delivered, dropped) when the outage began
        self._raised = False

    # -- the processor's side --
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        if self._stopping:
            return SpanExportResult.FAILURE
        try:
            batch = _Batch(self._encoder.encode(spans), len(spans))
        except Exception:  # a batch the fast encoder cannot take goes the exporter's own way, as before
            log.debug("jh_otel: a span batch bypassed the outbox", exc_info=True)
            return self.inner.export(spans)
        with self._lock:
            self._ensure_sender()
            self._queue.append(batch)
            self._bytes += len(batch.body)
            self._evict()
            self._lock.notify_all()
            wait = self.healthy
        if wait and not batch.done.wait(self.handoff_s):
            self.healthy = False  # a slow collector: later batches queue rather than each hold the worker
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._drain(time.monotonic() + timeout_millis / 1000)

    def shutdown(self, timeout_millis: int = 30000) -> None:
        deadline = time.monotonic() + timeout_millis / 1000
        if not self.failing:
            self._drain(deadline)
        with self._lock:
            self._stopping = True
            left = sum(b.spans for b in self._queue)
            self._drop_all()
            self._lock.notify_all()
        if left:
            log.warning("jh_otel: %d spans not delivered at shutdown (trace collector unreachable)", left)
        self.inner.shutdown()  # ends a retry's backoff wait in the sender
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        """Stop the sender, leaving the exporter as it is (jh_otel uninstalled): what is queued is dropped."""
        with self._lock:
            self._stopping = True
            self._drop_all()
            self._lock.notify_all()

    # -- internals (under self._lock unless said) --
    def _ensure_sender(self) -> None:
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="jh_otel-span-outbox", daemon=True)
            self._thread.start()

    def _evict(self) -> None:
        while self._bytes > self.capacity_bytes and len(self._queue) > 1:
            oldest = self._queue.popleft()
            self._forget(oldest)
            self._note_outage()

    def _forget(self, batch: _Batch) -> None:
        self._bytes -= len(batch.body)
        self.dropped_spans += batch.spans
        batch.done.set()

    def _drop_all(self) -> None:
        while self._queue:
            self._forget(self._queue.popleft())

    def _note_outage(self) -> None:
        if self._outage is None:
            self._outage = (time.monotonic(), self.delivered_spans, self.dropped_spans)
            log.warning(
                "jh_otel: the trace collector is not accepting spans; keeping up to %d KiB of them, newest first, "
                "until it does",
                self.capacity_bytes // 1024,
            )

    def _drain(self, deadline: float) -> bool:
        with self._lock:
            while self._queue or self._sending is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping:
                    return False
                self._lock.wait(min(remaining, 0.05))
        return True

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    return
                batch = self._queue.pop()  # newest first: what the collector can still use most
                self._bytes -= len(batch.body)
                self._sending = batch
            ok = recovered = False
            try:
                stand_in: Any = PreEncoded(batch.body, batch.spans)
                ok = self.inner.export(stand_in) is SpanExportResult.SUCCESS
            except Exception as error:  # counted as a failed delivery; named once (the type only: an exception
                # from the transport may quote the endpoint, and its user info is a credential)
                if not self._raised:
                    self._raised = True
                    log.warning("jh_otel: the span exporter raised %s on an encoded batch", type(error).__name__)
            with self._lock:
                self._sending = None
                batch.attempts += 1
                if ok:
                    recovered = self._delivered(batch)
                elif self._stopping:
                    self.dropped_spans += batch.spans
                    batch.done.set()
                else:
                    self.healthy = False
                    self.failing = True
                    self._note_outage()
                    if batch.attempts < self.attempts:
                        self._queue.append(batch)  # tried again before older ones
                        self._bytes += len(batch.body)
                        self._evict()
                    else:
                        self.dropped_spans += batch.spans
                        batch.done.set()
                self._lock.notify_all()
                if not ok and not self._stopping:
                    self._lock.wait(self.pause_s)  # shutdown's notify ends it early
            if recovered:
                release_memory()

    def _delivered(self, batch: _Batch) -> bool:
        """Count ``batch`` delivered; True when that ended an outage."""
        self.delivered_spans += batch.spans
        batch.done.set()
        self.healthy = True
        self.failing = False
        if self._outage is None or self._queue:
            return False
        since, delivered, dropped = self._outage
        self._outage = None
        log.warning(
            "jh_otel: the trace collector accepts spans again after %.0fs: %d spans delivered since, %d dropped",
            time.monotonic() - since,
            self.delivered_spans - delivered,
            self.dropped_spans - dropped,
        )
        return True


_malloc_trim: Any = None


def release_memory() -> None:
    """Give the C allocator's free pages back to the system (glibc's ``malloc_trim``; elsewhere nothing).

    An outage's batches are ``bytes`` of some hundred KiB, allocated by the processor's thread and freed by the
    sender's: glibc keeps what they occupied in its arenas after the queue has drained unless asked to trim (the
    ``outage`` benchmark measured 8.1 MiB of RSS growth before this call, 2.6 to 4.3 MiB with it). Called once per
    recovered outage."""
    global _malloc_trim
    try:
        if _malloc_trim is None:
            import ctypes

            _malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", False)
        if _malloc_trim:
            _malloc_trim(0)
    except Exception:  # no libc to ask (musl, macOS): the memory stays with the process
        _malloc_trim = False


def install(processor_exporters: Sequence[tuple[Any, str]], capacity_bytes: int) -> list[Any]:
    """Put an :class:`Outbox` in front of each OTLP span exporter in ``processor_exporters`` ((holder, attribute)
    pairs) whose module encodes with jh_otel's encoder; returns the undo callables. ``capacity_bytes`` 0: none."""
    import sys

    undo: list[Any] = []
    if capacity_bytes <= 0:
        return undo
    for holder, attribute in processor_exporters:
        inner = getattr(holder, attribute)
        module = sys.modules.get(type(inner).__module__)
        if type(inner).__module__ not in _OTLP_MODULES or not getattr(
            getattr(module, "encode_spans", None), "_jh_otel", False
        ):
            continue
        box = Outbox(inner, capacity_bytes)
        setattr(holder, attribute, box)

        def remove(holder: Any = holder, attribute: str = attribute, inner: Any = inner, box: Outbox = box) -> None:
            setattr(holder, attribute, inner)
            box.close()

        undo.append(remove)
    return undo
