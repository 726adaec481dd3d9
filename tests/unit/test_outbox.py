"""The span outbox: encoded batches delivered newest first through collector outages, bounded, drained at shutdown."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from jh_otel.tracing import encoding, outbox
from jh_otel.tracing.encoding import PreEncoded, SpanEncoder
from jh_otel.tracing.outbox import Outbox
from jh_otel.tracing.scrubbing import ScrubbingSpanExporter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from otlp_receiver import OTLPReceiver  # noqa: E402

RESOURCE = Resource.create({"service.name": "jupyterhub"})


def spans(names: Sequence[str]) -> list[Any]:
    provider = TracerProvider(resource=RESOURCE)
    tracer = provider.get_tracer("t")
    made = []
    for name in names:
        span = tracer.start_span(name, attributes={"http.route": "/hub/api"})
        span.end()
        made.append(span)
    return made


class Collector(SpanExporter):
    """Stands in for an OTLP exporter: records the batches' bodies, fails while ``down``."""

    def __init__(self, down: bool = False, delay: float = 0.0) -> None:
        self.down = down
        self.delay = delay
        self.bodies: list[bytes] = []
        self.attempts = 0
        self.shut = threading.Event()

    def export(self, batch: Any) -> SpanExportResult:
        assert type(batch) is PreEncoded
        self.attempts += 1
        if self.delay:
            self.shut.wait(self.delay)
        if self.down:
            return SpanExportResult.FAILURE
        self.bodies.append(batch.body)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.shut.set()

    def names(self) -> list[list[str]]:
        return [[s.name for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans] for r in self.requests()]

    def requests(self) -> list[ExportTraceServiceRequest]:
        return [ExportTraceServiceRequest.FromString(body) for body in self.bodies]


def wait_until(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_a_healthy_collector_gets_each_batch_before_export_returns() -> None:
    """While the collector accepts, export() returns after its batch was delivered, encoded as the encoder does."""
    inner = Collector()
    box = Outbox(inner, 2**20)
    batch = spans(["a", "b"])
    assert box.export(batch) is SpanExportResult.SUCCESS
    assert inner.bodies == [SpanEncoder().encode(batch)]
    assert (box.delivered_spans, box.dropped_spans, box.healthy) == (2, 0, True)
    box.shutdown(1000)


def test_an_outage_queues_without_waiting_and_recovery_sends_newest_first(caplog: Any) -> None:
    """After a failed delivery export() does not wait; on recovery the batches go newest first, with one warning
    each for the outage and the recovery."""
    caplog.set_level(logging.WARNING, "jh_otel")
    inner = Collector(down=True)
    box = Outbox(inner, 2**20, attempts=1000, pause_s=0.02)
    box.export(spans(["first"]))  # waits for the failed delivery (at most handoff_s)
    assert wait_until(lambda: not box.healthy)
    started = time.monotonic()
    for name in ("second", "third"):
        box.export(spans([name]))
    assert time.monotonic() - started < 0.5
    inner.down = False
    assert wait_until(lambda: box.delivered_spans == 3)
    # the batch that failed last is sent first; then the newest
    order = [names[0] for names in inner.names()]
    assert sorted(order) == ["first", "second", "third"] and order.index("third") < order.index("second")
    assert box.healthy and box.dropped_spans == 0
    warnings = [r.getMessage() for r in caplog.records]
    assert len([w for w in warnings if "not accepting spans" in w]) == 1
    assert [w for w in warnings if "accepts spans again" in w][0].endswith("3 spans delivered since, 0 dropped")
    box.shutdown(1000)


def test_past_its_capacity_the_oldest_batches_are_dropped_and_counted() -> None:
    """The queue never holds more than its capacity in bytes (but the newest batch): the oldest go, counted."""
    inner = Collector(down=True)
    one = len(SpanEncoder().encode(spans(["x" * 100])))
    box = Outbox(inner, 3 * one, attempts=1000, pause_s=0.02)
    box.healthy = False  # no handoff waits
    for i in range(10):
        box.export(spans([f"{i}".ljust(100, "x")]))
    with box._lock:
        assert box._bytes <= 3 * one and len(box._queue) <= 3
    assert box.dropped_spans >= 6
    inner.down = False
    assert wait_until(lambda: box.delivered_spans + box.dropped_spans == 10)
    delivered = {names[0][0] for names in inner.names()}
    assert "9" in delivered and "0" not in delivered
    box.shutdown(1000)


def test_a_batch_failing_its_attempts_is_dropped() -> None:
    """A batch the collector keeps refusing is tried ``attempts`` times, then dropped and counted."""
    inner = Collector(down=True)
    box = Outbox(inner, 2**20, attempts=3, pause_s=0.02)
    box.export(spans(["a", "b"]))
    assert wait_until(lambda: box.dropped_spans == 2)
    assert inner.attempts == 3 and box.delivered_spans == 0
    box.shutdown(1000)


def test_an_exporter_that_raises_is_named_once_without_its_message(caplog: Any) -> None:
    """An exporter raising on a batch counts as a failed delivery: one warning with the exception's type only (its
    message may quote the endpoint), then the batch is dropped after its attempts."""
    caplog.set_level(logging.DEBUG, "jh_otel")

    class Raising(Collector):
        def export(self, batch: Any) -> SpanExportResult:
            raise ConnectionError("http://user:secret-password@collector:4318/v1/traces")

    box = Outbox(Raising(), 2**20, attempts=2, pause_s=0.01, handoff_s=0.05)
    box.export(spans(["a"]))
    box.export(spans(["b"]))
    assert wait_until(lambda: box.dropped_spans == 2)
    messages = [r.getMessage() for r in caplog.records] + [r.exc_text or "" for r in caplog.records]
    assert [m for m in messages if "raised" in m] == [
        "jh_otel: the span exporter raised ConnectionError on an encoded batch"
    ]
    assert not any("secret-password" in m for m in messages)
    box.shutdown(1000)


def test_a_slow_collector_holds_the_processor_at_most_the_handoff() -> None:
    """A delivery slower than ``handoff_s`` releases the processor's worker, and later batches do not wait."""
    inner = Collector(delay=1.0)
    box = Outbox(inner, 2**20, handoff_s=0.1)
    started = time.monotonic()
    box.export(spans(["a"]))
    box.export(spans(["b"]))
    assert time.monotonic() - started < 0.5
    assert wait_until(lambda: box.delivered_spans == 2, 5)
    box.shutdown(1000)


def test_shutdown_during_an_outage_returns_at_once_and_ends_the_retry(caplog: Any) -> None:
    """Shutting down with the collector unreachable drops what is queued (one warning), shuts the exporter down
    (ending its backoff wait) and returns well within its budget."""
    caplog.set_level(logging.WARNING, "jh_otel")
    inner = Collector(down=True)
    box = Outbox(inner, 2**20, handoff_s=0.05, pause_s=0.01)
    box.export(spans(["a"]))
    assert wait_until(lambda: box.failing)
    inner.delay = 30  # the next attempts sit in the exporter's backoff
    for name in ("b", "c"):
        box.export(spans([name]))
    assert wait_until(lambda: inner.attempts >= 2)
    started = time.monotonic()
    box.shutdown(2000)
    assert time.monotonic() - started < 1.0 and inner.shut.is_set()
    assert any("2 spans not delivered at shutdown" in r.getMessage() for r in caplog.records)
    assert box.export(spans(["late"])) is SpanExportResult.FAILURE


def test_shutdown_with_a_healthy_collector_delivers_the_queue() -> None:
    """At shutdown, queued batches are delivered within the budget when the collector accepts them."""
    inner = Collector(delay=0.05)
    box = Outbox(inner, 2**20, handoff_s=0.0)
    for name in ("a", "b", "c"):
        box.export(spans([name]))
    box.shutdown(2000)
    assert box.delivered_spans == 3 and len(inner.bodies) == 3


def test_a_batch_the_fast_encoder_cannot_take_goes_to_the_exporter_directly() -> None:
    """Spans the fast encoder rejects are handed to the exporter as spans, its own encoder's business."""
    received: list[Any] = []

    class Direct(SpanExporter):
        def export(self, batch: Any) -> SpanExportResult:
            received.append(batch)
            return SpanExportResult.SUCCESS

    class Odd:
        pass

    broken = spans(["odd"])
    broken[0]._attributes = {"odd": Odd()}
    box = Outbox(Direct(), 2**20)
    assert box.export(broken) is SpanExportResult.SUCCESS
    assert received == [broken] and box.delivered_spans == 0
    box.shutdown(1000)


def test_install_fronts_only_otlp_exporters_that_use_the_fast_encoder() -> None:
    """The outbox goes in front of an OTLP/HTTP span exporter once jh_otel's encoder is in its module, not in front
    of any other exporter, nor with a zero capacity; undo puts the exporter back."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    otlp = OTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces", timeout=1)
    other = Collector()
    holders = [ScrubbingSpanExporter(otlp), ScrubbingSpanExporter(other)]
    pairs = [(h, "inner") for h in holders]
    assert outbox.install(pairs, 2**20) == []  # the module's encode_spans is still the exporter's
    undo_encoding = encoding.install()
    try:
        assert outbox.install(pairs, 0) == []
        undo = outbox.install(pairs, 2**20)
        assert len(undo) == 1 and isinstance(holders[0].inner, Outbox) and holders[1].inner is other
        assert holders[0].inner.inner is otlp
        box = holders[0].inner
        box.export(spans(["a"]))  # starts its sender
        undo[0]()
        assert holders[0].inner is otlp
        assert box._thread is not None and wait_until(lambda: not box._thread.is_alive())
    finally:
        for restore in undo_encoding:
            restore()


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_spans_cross_an_outage_of_a_real_receiver(transport: str) -> None:
    """Through the real OTLP exporter and receiver: spans ended while the receiver refused (503 / UNAVAILABLE) arrive
    once it accepts again, each once, and the processor's worker was never held for the exporter's retries."""
    if transport == "http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    undo_encoding = encoding.install()
    receiver = OTLPReceiver().start()
    try:
        endpoint = receiver.http_traces_url if transport == "http" else receiver.grpc_endpoint
        kwargs = {"insecure": True} if transport == "grpc" else {}
        exporter = OTLPSpanExporter(endpoint=endpoint, timeout=3, **kwargs)
        scrubber = ScrubbingSpanExporter(exporter)
        assert len(outbox.install([(scrubber, "inner")], 2**20)) == 1
        provider = TracerProvider(resource=RESOURCE)
        processor = BatchSpanProcessor(scrubber, schedule_delay_millis=100)
        provider.add_span_processor(processor)
        tracer = provider.get_tracer("t")
        tracer.start_span("before").end()
        processor.force_flush()
        assert [s.name for s in receiver.spans()] == ["before"]
        receiver.set_outage(True)
        started = time.monotonic()
        for i in range(5):
            tracer.start_span(f"during {i}").end()
            processor.force_flush()
        assert time.monotonic() - started < 2.5  # one handoff wait, not five rounds of retries
        receiver.set_outage(False)
        tracer.start_span("after").end()
        processor.force_flush()
        names = {f"during {i}" for i in range(5)} | {"before", "after"}
        assert receiver.wait_for(lambda r: {s.name for s in r.spans()} >= names, timeout=15)
        assert sorted(s.name for s in receiver.spans()) == sorted(names)
        provider.shutdown()
    finally:
        receiver.stop()
        for restore in undo_encoding:
            restore()
