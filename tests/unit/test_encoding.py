"""The fast span encoder writes exactly what the OTLP exporters' ``encode_spans`` builds, message for message."""

from __future__ import annotations

import enum

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from jh_otel.tracing import encoding
from jh_otel.tracing.encoding import SpanEncoder


class Color(str, enum.Enum):
    RED = "red"


def make_spans(resource: Resource, limits: SpanLimits | None = None) -> list:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=resource, span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    plain = provider.get_tracer("plain")
    versioned = provider.get_tracer("jh_otel", "1.2.3", schema_url="https://opentelemetry.io/schemas/1.21.0")
    remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1), trace_state=TraceState([("k", "v")]))
    with versioned.start_as_current_span("GET /hub/api/users/{user_name}", kind=SpanKind.SERVER) as root:
        root.set_attributes(
            {
                "http.request.method": "GET",
                "http.response.status_code": 200,
                "big": 2**62,
                "negative": -5,
                "ratio": 0.25,
                "flag": True,
                "off": False,
                "one": 1,
                "empty": "",
                "unicode": "héllo ✓",
                "tuple": ("a", "b"),
                "ints": (1, 2, 3),
                "bools": (True, False),
                "floats": (1.5,),
                "enum": Color.RED,
            }
        )
        root.add_event("progress", {"jupyterhub.progress": 50, "message": "Spawning server..."})
        root.add_event("bare")
        root.set_status(Status(StatusCode.ERROR, "boom"))
        with plain.start_as_current_span("SELECT users", kind=SpanKind.CLIENT, links=[Link(remote, {"why": "x"})]):
            pass
    child = plain.start_span("from afar", context=set_span_in_context(NonRecordingSpan(remote)))
    child.set_status(Status(StatusCode.OK))
    child.end()
    for kind in SpanKind:
        plain.start_span(f"kind {kind.name}", kind=kind).end()
    return list(exporter.get_finished_spans())


RESOURCES = [
    Resource.create({"service.name": "jupyterhub", "jupyterhub.version": "6.1.1"}),
    Resource({"service.name": "x"}, schema_url="https://opentelemetry.io/schemas/1.21.0"),
    Resource({}),
]


@pytest.mark.parametrize("resource", RESOURCES, ids=["sdk", "schema", "empty"])
def test_encoded_request_equals_the_exporters_own(resource: Resource) -> None:
    """``SpanEncoder`` encodes spans of every kind, attribute type, event, link and status into a request equal to the
    exporter's own ``encode_spans``, for each resource."""
    spans = make_spans(resource)
    ours = ExportTraceServiceRequest.FromString(SpanEncoder().encode(spans))
    assert ours == encode_spans(spans)


def test_dropped_counts_and_several_resources_in_one_batch() -> None:
    """A batch with dropped attributes and events, under two resources, encodes equal to ``encode_spans``, the first
    time and again from the caches."""
    limits = SpanLimits(max_span_attributes=3, max_events=1, max_links=0, max_event_attributes=1)
    spans = make_spans(RESOURCES[0], limits) + make_spans(RESOURCES[1])
    assert any(s.dropped_attributes and s.dropped_events for s in spans)
    encoder = SpanEncoder()
    for _ in range(2):  # the second time from the caches
        assert ExportTraceServiceRequest.FromString(encoder.encode(spans)) == encode_spans(spans)


def test_cached_attributes_keep_bools_ints_and_fields_apart() -> None:
    """One encoder gives three different encodings for ``a=1``, ``a=True`` and ``a=1`` under another field number: its
    cache does not mix them up."""
    encoder = SpanEncoder()
    one = b"".join(encoder.attributes(0x4A, {"a": 1}))
    true = b"".join(encoder.attributes(0x4A, {"a": True}))
    event_one = b"".join(encoder.attributes(0x1A, {"a": 1}))
    assert len({one, true, event_one}) == 3


def test_the_attribute_cache_is_bounded_in_bytes_whatever_the_values() -> None:
    """Thousands of distinct long values (hostile URLs) leave the cache within its byte budget, a value too large to
    cache is still encoded right, and a repeated short value is served from the cache."""
    encoder = SpanEncoder()
    for i in range(3000):
        encoder.attributes(0x4A, {"url.path": f"/hub/{i}/" + "x" * 4000})
        assert encoder._cached_bytes <= encoding._CACHE_BYTES
    cached = sum(2 * len(v) + encoding._ENTRY_OVERHEAD for v in encoder._attributes.values())
    assert cached == encoder._cached_bytes <= encoding._CACHE_BYTES
    huge = "y" * (encoding._CACHE_BYTES // 8)
    (field,) = encoder.attributes(0x4A, {"url.path": huge})
    assert field == encoding._field(0x4A, encoding._key_value("url.path", huge))
    assert all(value is not huge for (_, _, value) in encoder._attributes)
    (first,) = encoder.attributes(0x4A, {"http.request.method": "GET"})
    (second,) = encoder.attributes(0x4A, {"http.request.method": "GET"})
    assert first is second


def test_install_replaces_encode_spans_reversibly_and_falls_back() -> None:
    """``encoding.install`` replaces the HTTP and gRPC exporters' ``encode_spans`` once (a second install does nothing)
    with output equal to theirs, defers to the gRPC exporter's own on an attribute it cannot encode, and its undo
    restores both."""
    from opentelemetry.exporter.otlp.proto.grpc import trace_exporter as grpc_module
    from opentelemetry.exporter.otlp.proto.http import trace_exporter as http_module

    originals = http_module.encode_spans, grpc_module.encode_spans
    undo = encoding.install()
    try:
        assert len(undo) == 2 and encoding.install() == []  # not twice
        spans = make_spans(RESOURCES[0])
        expected = encode_spans(spans)
        assert (
            ExportTraceServiceRequest.FromString(http_module.encode_spans(spans).SerializePartialToString()) == expected
        )
        assert grpc_module.encode_spans(spans) == expected

        class Odd:
            pass

        broken = spans[0]
        broken._attributes = {"odd": Odd()}  # the exporter's own encoder logs and skips it; ours defers to it
        assert grpc_module.encode_spans([broken]) == encode_spans([broken])
    finally:
        for restore in undo:
            restore()
    assert (http_module.encode_spans, grpc_module.encode_spans) == originals


def test_a_hub_whose_exporters_speak_http_does_not_load_grpc() -> None:
    """Under the wrapper with OTLP over HTTP, installing jh_otel's encoder loads no grpcio (about 9 MiB): only the
    exporter modules the SDK imported are patched."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ) | {
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
        "OTEL_SERVICE_NAME": "test",
    }
    program = (
        "import sys; from opentelemetry.exporter.otlp.proto.http import trace_exporter; "
        "print('grpc' in sys.modules, getattr(trace_exporter.encode_spans, '_jh_otel', False))"
    )
    wrapper = Path(sys.executable).parent / "opentelemetry-instrument"
    done = subprocess.run(
        [wrapper, sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.split() == ["False", "True"], done.stderr
