"""An in-process OTLP receiver for tests.

``OTLPReceiver`` listens on 127.0.0.1 only, on two ports chosen by the OS:

* OTLP/gRPC: the ``MetricsService`` and ``TraceService`` from
  ``opentelemetry-proto``, served by ``grpcio`` (logs over HTTP only);
* OTLP/HTTP: ``POST /v1/metrics``, ``POST /v1/traces`` and ``POST /v1/logs``
  with ``application/x-protobuf`` bodies, plain, gzip or deflate encoded.

Every accepted export is kept (its protobuf bytes and the decoded request) and
flattened into plain dataclasses (``Metric``/``DataPoint`` and ``Span``), so
tests can assert on names, values and attributes without walking protobuf
trees.  All state is guarded by one lock; the accessors return copies.

Outage mode (``set_outage(True)`` or ``OTLPReceiver(outage=True)``) answers
every export with gRPC ``UNAVAILABLE`` / HTTP ``503`` and keeps nothing but a
record of the rejected attempt (see ``requests(include_rejected=True)``).

Usage::

    with OTLPReceiver() as receiver:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.grpc_endpoint
        ...
        assert receiver.wait_for(lambda r: r.metrics("my.metric"), timeout=5)
"""

from __future__ import annotations

import gzip
import http.server
import math
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

try:  # googleapis-common-protos comes with the OTLP exporters
    from google.rpc import error_details_pb2, status_pb2
except ImportError:  # pragma: no cover - only without googleapis-common-protos
    error_details_pb2 = None
    status_pb2 = None

__all__ = [
    "DataPoint",
    "LogRecord",
    "Metric",
    "OTLPReceiver",
    "ReceivedRequest",
    "Span",
    "SpanEvent",
    "SpanLink",
]

LOOPBACK = "127.0.0.1"

METRICS = "metrics"
TRACES = "traces"
LOGS = "logs"

_SIGNALS: dict[str, tuple[type, type]] = {
    METRICS: (
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
    TRACES: (
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
    ),
    LOGS: (
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
    ),
}

_HTTP_PATHS = {"/v1/metrics": METRICS, "/v1/traces": TRACES, "/v1/logs": LOGS}

_PROTOBUF_CONTENT_TYPE = "application/x-protobuf"


# --------------------------------------------------------------------------
# Flattened records
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class DataPoint:
    """One data point of a metric.

    ``value`` is set for sums and gauges (``int`` for ``as_int`` points,
    ``float`` for ``as_double``).  ``count``/``sum``/``min``/``max`` and the
    bucket fields are set for histograms (``sum``/``min``/``max`` stay ``None``
    when the exporter did not send them).
    """

    attributes: dict[str, Any]
    start_time_unix_nano: int
    time_unix_nano: int
    value: int | float | None = None
    count: int | None = None
    sum: float | None = None
    min: float | None = None
    max: float | None = None
    bucket_counts: list[int] = field(default_factory=list)
    explicit_bounds: list[float] = field(default_factory=list)
    exemplars: int = 0
    exemplar_trace_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Metric:
    """One metric as found in one export request.

    ``kind`` is ``"sum"``, ``"gauge"``, ``"histogram"``,
    ``"exponential_histogram"`` or ``"summary"``.  ``is_monotonic`` is only
    set for sums, ``temporality`` (``"cumulative"``/``"delta"``) for sums and
    histograms.
    """

    name: str
    description: str
    unit: str
    kind: str
    data_points: list[DataPoint]
    resource: dict[str, Any]
    scope_name: str
    scope_version: str
    transport: str
    is_monotonic: bool | None = None
    temporality: str | None = None


@dataclass(frozen=True)
class SpanEvent:
    name: str
    attributes: dict[str, Any]
    time_unix_nano: int


@dataclass(frozen=True)
class SpanLink:
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class Span:
    """One span as found in one export request.

    Ids are lower-case hex strings; ``parent_span_id`` is ``""`` for a root
    span.  ``kind`` is e.g. ``"SERVER"`` and ``status_code`` one of
    ``"UNSET"``, ``"OK"``, ``"ERROR"``.
    """

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: str
    status_code: str
    status_message: str
    attributes: dict[str, Any]
    events: list[SpanEvent]
    links: list[SpanLink]
    start_time_unix_nano: int
    end_time_unix_nano: int
    resource: dict[str, Any]
    scope_name: str
    scope_version: str
    transport: str


@dataclass(frozen=True)
class LogRecord:
    event_name: str
    body: Any
    severity_text: str
    severity_number: int
    attributes: dict[str, Any]
    trace_id: str
    span_id: str
    time_unix_nano: int
    resource: dict[str, Any]
    scope_name: str
    transport: str


@dataclass(frozen=True)
class ReceivedRequest:
    """One export call as it reached the receiver.

    ``body`` is the protobuf-encoded request (after HTTP content decoding;
    gRPC decompresses in the transport).  ``wire_body`` is the HTTP body as
    received, before content decoding (the same as ``body`` for gRPC).
    ``message`` is the decoded ``Export*ServiceRequest`` (``None`` for a
    rejected request).  ``headers`` has lower-case names (HTTP headers or
    gRPC invocation metadata).
    """

    transport: str  # "grpc" or "http"
    signal: str  # "metrics" or "traces"
    body: bytes
    wire_body: bytes
    content_encoding: str
    headers: dict[str, str]
    message: Any
    accepted: bool
    received_at: float


# --------------------------------------------------------------------------
# Protobuf -> python helpers
# --------------------------------------------------------------------------


def _any_value(value: common_pb2.AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, which)


def _attributes(key_values) -> dict[str, Any]:
    return {kv.key: _any_value(kv.value) for kv in key_values}


def _enum_suffix(enum_type, number: int, prefix: str) -> str:
    try:
        name = enum_type.Name(number)
    except ValueError:
        return str(number)
    return name[len(prefix) :] if name.startswith(prefix) else name


def _temporality(number: int) -> str:
    return _enum_suffix(metrics_pb2.AggregationTemporality, number, "AGGREGATION_TEMPORALITY_").lower()


def _optional(message, name: str):
    return getattr(message, name) if message.HasField(name) else None


def _point(point, **fields) -> DataPoint:
    """A data point's common fields plus the kind-specific ``fields``."""
    return DataPoint(
        attributes=_attributes(point.attributes),
        start_time_unix_nano=point.start_time_unix_nano,
        time_unix_nano=point.time_unix_nano,
        **fields,
    )


def _exemplars(point) -> dict[str, Any]:
    return {"exemplars": len(point.exemplars), "exemplar_trace_ids": [e.trace_id.hex() for e in point.exemplars]}


def _number_point(point) -> DataPoint:
    which = point.WhichOneof("value")
    return _point(point, value=getattr(point, which) if which else None, **_exemplars(point))


def _histogram_point(point, explicit: bool = True) -> DataPoint:
    buckets = {"bucket_counts": list(point.bucket_counts), "explicit_bounds": list(point.explicit_bounds)}
    return _point(
        point,
        count=point.count,
        sum=_optional(point, "sum"),
        min=_optional(point, "min"),
        max=_optional(point, "max"),
        **_exemplars(point),
        **(buckets if explicit else {}),
    )


def _exponential_histogram_point(point) -> DataPoint:
    return _histogram_point(point, explicit=False)


def _summary_point(point) -> DataPoint:
    return _point(point, count=point.count, sum=point.sum)


def _scoped(resources, scopes: str, items: str):
    """(resource attributes, scope, item) for every item of an export request."""
    for entry in resources:
        resource = _attributes(entry.resource.attributes)
        for scoped in getattr(entry, scopes):
            for item in getattr(scoped, items):
                yield resource, scoped.scope, item


def flatten_metrics(request, transport: str = "") -> list[Metric]:
    """Flatten an ``ExportMetricsServiceRequest`` into ``Metric`` records."""
    out: list[Metric] = []
    for resource, scope, metric in _scoped(request.resource_metrics, "scope_metrics", "metrics"):
        kind = metric.WhichOneof("data") or ""
        is_monotonic = None
        temporality = None
        if kind == "sum":
            points = [_number_point(p) for p in metric.sum.data_points]
            is_monotonic = metric.sum.is_monotonic
            temporality = _temporality(metric.sum.aggregation_temporality)
        elif kind == "gauge":
            points = [_number_point(p) for p in metric.gauge.data_points]
        elif kind == "histogram":
            points = [_histogram_point(p) for p in metric.histogram.data_points]
            temporality = _temporality(metric.histogram.aggregation_temporality)
        elif kind == "exponential_histogram":
            data = metric.exponential_histogram
            points = [_exponential_histogram_point(p) for p in data.data_points]
            temporality = _temporality(data.aggregation_temporality)
        elif kind == "summary":
            points = [_summary_point(p) for p in metric.summary.data_points]
        else:
            points = []
        out.append(
            Metric(
                name=metric.name,
                description=metric.description,
                unit=metric.unit,
                kind=kind,
                data_points=points,
                resource=dict(resource),
                scope_name=scope.name,
                scope_version=scope.version,
                transport=transport,
                is_monotonic=is_monotonic,
                temporality=temporality,
            )
        )
    return out


def flatten_spans(request, transport: str = "") -> list[Span]:
    """Flatten an ``ExportTraceServiceRequest`` into ``Span`` records."""
    out: list[Span] = []
    for resource, scope, span in _scoped(request.resource_spans, "scope_spans", "spans"):
        out.append(
            Span(
                name=span.name,
                trace_id=span.trace_id.hex(),
                span_id=span.span_id.hex(),
                parent_span_id=span.parent_span_id.hex(),
                kind=_enum_suffix(trace_pb2.Span.SpanKind, span.kind, "SPAN_KIND_"),
                status_code=_enum_suffix(trace_pb2.Status.StatusCode, span.status.code, "STATUS_CODE_"),
                status_message=span.status.message,
                attributes=_attributes(span.attributes),
                events=[SpanEvent(e.name, _attributes(e.attributes), e.time_unix_nano) for e in span.events],
                links=[SpanLink(k.trace_id.hex(), k.span_id.hex(), _attributes(k.attributes)) for k in span.links],
                start_time_unix_nano=span.start_time_unix_nano,
                end_time_unix_nano=span.end_time_unix_nano,
                resource=dict(resource),
                scope_name=scope.name,
                scope_version=scope.version,
                transport=transport,
            )
        )
    return out


def flatten_logs(request, transport: str = "") -> list[LogRecord]:
    """Flatten an ``ExportLogsServiceRequest`` into ``LogRecord`` records."""
    return [
        LogRecord(
            event_name=record.event_name,
            body=_any_value(record.body),
            severity_text=record.severity_text,
            severity_number=record.severity_number,
            attributes=_attributes(record.attributes),
            trace_id=record.trace_id.hex(),
            span_id=record.span_id.hex(),
            time_unix_nano=record.time_unix_nano,
            resource=dict(resource),
            scope_name=scope.name,
            transport=transport,
        )
        for resource, scope, record in _scoped(request.resource_logs, "scope_logs", "log_records")
    ]


# --------------------------------------------------------------------------
# gRPC side
# --------------------------------------------------------------------------


def _identity(data: bytes) -> bytes:
    return data


class _MetricsServicer(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: OTLPReceiver) -> None:
        self._receiver = receiver

    def Export(self, request, context):  # noqa: N802 - gRPC method name
        return self._receiver._grpc_export(METRICS, request, context)


class _TraceServicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OTLPReceiver) -> None:
        self._receiver = receiver

    def Export(self, request, context):  # noqa: N802 - gRPC method name
        return self._receiver._grpc_export(TRACES, request, context)


def _raw_bytes_handler(service_module, service_name: str, servicer, response_type):
    """A generic handler for ``service_name``/Export that hands the servicer
    the request bytes exactly as they came off the wire (the servicer parses
    them), so the receiver can keep the true raw body."""
    full_name = service_module.DESCRIPTOR.services_by_name[service_name].full_name
    handler = grpc.unary_unary_rpc_method_handler(
        servicer.Export,
        request_deserializer=_identity,
        response_serializer=response_type.SerializeToString,
    )
    return grpc.method_handlers_generic_handler(full_name, {"Export": handler})


# --------------------------------------------------------------------------
# HTTP side
# --------------------------------------------------------------------------


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, receiver: OTLPReceiver) -> None:
        self.receiver = receiver
        super().__init__(address, _HTTPHandler)


class _HTTPHandler(http.server.BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so a stopped receiver really
    # refuses further exports (no kept-alive connection outlives stop()).
    protocol_version = "HTTP/1.0"
    server_version = "otlp-test-receiver"
    timeout = 10

    def log_message(self, format, *args):  # noqa: A002 - silence stderr
        pass

    def _reply(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = _PROTOBUF_CONTENT_TYPE,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # Trailer section ends with an empty line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self):  # noqa: N802
        self._reply(405, b"only POST is supported\n", "text/plain", {"Allow": "POST"})

    def do_POST(self):  # noqa: N802
        receiver: OTLPReceiver = self.server.receiver  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        signal = _HTTP_PATHS.get(path)
        wire_body = self._read_body()
        if signal is None:
            self._reply(404, b"unknown OTLP path\n", "text/plain")
            return
        content_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if content_type != _PROTOBUF_CONTENT_TYPE:
            self._reply(415, b"only application/x-protobuf is supported\n", "text/plain")
            return
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        try:
            if encoding in ("", "identity"):
                body = wire_body
            elif encoding == "gzip":
                body = gzip.decompress(wire_body)
            elif encoding == "deflate":
                body = zlib.decompress(wire_body)
            else:
                self._reply(415, f"unsupported Content-Encoding {encoding}\n".encode(), "text/plain")
                return
        except (OSError, EOFError, zlib.error) as exc:
            self._reply(400, f"cannot decode body: {exc}\n".encode(), "text/plain")
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        status, payload, extra = receiver._http_export(signal, body, wire_body, encoding, headers)
        self._reply(status, payload, extra_headers=extra)


# --------------------------------------------------------------------------
# The receiver
# --------------------------------------------------------------------------


class OTLPReceiver:
    """OTLP/gRPC + OTLP/HTTP receiver on loopback that records every export.

    Ports are chosen by the OS on the first ``start()``; a later ``start()``
    after ``stop()`` binds the same ports again, so a test can take the
    receiver down and bring it back at the same endpoints.
    """

    def __init__(self, *, outage: bool = False, retry_after: float | None = None) -> None:
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._requests: list[ReceivedRequest] = []
        self._metrics: list[Metric] = []
        self._spans: list[Span] = []
        self._logs: list[LogRecord] = []
        # accepted exports not flattened yet: an export is answered as soon as it parses, the Python-level
        # flattening waits for the first read (so the receiver keeps up with a fast exporter)
        self._unflattened: list[tuple[str, Any, str]] = []
        self._outage = outage
        self._retry_after = retry_after
        self._grpc_server: grpc.Server | None = None
        self._http_server: _HTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self._grpc_port = 0
        self._http_port = 0

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> OTLPReceiver:
        """Start both listeners (no-op when already running); returns self."""
        with self._lock:
            if self._grpc_server is not None:
                return self
            self._start_grpc()
            try:
                self._start_http()
            except BaseException:
                self._grpc_server.stop(None)
                self._grpc_server = None
                raise
        return self

    def _start_grpc(self) -> None:
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="otlp-receiver-grpc"),
            options=[
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ("grpc.so_reuseport", 0),
            ],
        )
        server.add_generic_rpc_handlers(
            (
                _raw_bytes_handler(
                    metrics_service_pb2,
                    "MetricsService",
                    _MetricsServicer(self),
                    metrics_service_pb2.ExportMetricsServiceResponse,
                ),
                _raw_bytes_handler(
                    trace_service_pb2,
                    "TraceService",
                    _TraceServicer(self),
                    trace_service_pb2.ExportTraceServiceResponse,
                ),
            )
        )
        port = server.add_insecure_port(f"{LOOPBACK}:{self._grpc_port}")
        if port == 0:
            raise RuntimeError(f"cannot bind gRPC port {LOOPBACK}:{self._grpc_port}")
        server.start()
        self._grpc_port = port
        self._grpc_server = server

    def _start_http(self) -> None:
        server = _HTTPServer((LOOPBACK, self._http_port), self)
        self._http_port = server.server_address[1]
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="otlp-receiver-http",
            daemon=True,
        )
        thread.start()
        self._http_server = server
        self._http_thread = thread

    def stop(self, grace: float | None = 0.5) -> None:
        """Stop both listeners; recorded data is kept.  Safe to call twice."""
        with self._lock:
            grpc_server, self._grpc_server = self._grpc_server, None
            http_server, self._http_server = self._http_server, None
            http_thread, self._http_thread = self._http_thread, None
        if grpc_server is not None:
            grpc_server.stop(grace).wait(5)
        if http_server is not None:
            http_server.shutdown()
            http_server.server_close()
        if http_thread is not None:
            http_thread.join(5)

    @property
    def running(self) -> bool:
        with self._lock:
            return self._grpc_server is not None

    def __enter__(self) -> OTLPReceiver:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- endpoints -----------------------------------------------------------

    def _require_port(self, port: int) -> int:
        if not port:
            raise RuntimeError("OTLPReceiver is not started")
        return port

    @property
    def grpc_port(self) -> int:
        return self._require_port(self._grpc_port)

    @property
    def http_port(self) -> int:
        return self._require_port(self._http_port)

    @property
    def grpc_endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` for the OTLP gRPC exporters."""
        return f"http://{LOOPBACK}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """``http://127.0.0.1:PORT``: the base for OTEL_EXPORTER_OTLP_ENDPOINT
        with ``http/protobuf`` (the exporters append ``/v1/<signal>``)."""
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def http_metrics_url(self) -> str:
        """Full URL for an OTLP/HTTP metric exporter's ``endpoint=``."""
        return f"{self.http_endpoint}/v1/metrics"

    @property
    def http_traces_url(self) -> str:
        """Full URL for an OTLP/HTTP span exporter's ``endpoint=``."""
        return f"{self.http_endpoint}/v1/traces"

    # -- outage simulation -------------------------------------------------------

    def set_outage(self, enabled: bool = True, *, retry_after: float | None = None) -> None:
        """Answer every export with gRPC UNAVAILABLE / HTTP 503 while enabled.

        ``retry_after`` (seconds) is sent as HTTP ``Retry-After`` and as gRPC
        ``google.rpc.RetryInfo``; the OTLP exporters then retry after that
        delay instead of their own exponential backoff.  HTTP rounds it up to
        whole seconds (RFC 9110 delay-seconds).
        """
        with self._lock:
            self._outage = enabled
            self._retry_after = retry_after

    @property
    def outage(self) -> bool:
        with self._lock:
            return self._outage

    # -- recording ---------------------------------------------------------------

    def _record(
        self, transport: str, signal: str, body: bytes, wire_body: bytes, encoding: str, headers: dict[str, str]
    ) -> tuple[bool, float | None]:
        """Parse and store one export.  Returns (accepted, retry_after);
        raises ``ValueError`` for an unparsable body."""
        request_type, _ = _SIGNALS[signal]
        with self._lock:
            outage, retry_after = self._outage, self._retry_after
        message = None
        if not outage:
            try:
                message = request_type.FromString(body)
            except Exception as exc:  # protobuf's DecodeError
                raise ValueError(f"invalid {request_type.__name__}: {exc}") from exc
        record = ReceivedRequest(
            transport=transport,
            signal=signal,
            body=body,
            wire_body=wire_body,
            content_encoding=encoding,
            headers=headers,
            message=message,
            accepted=not outage,
            received_at=time.time(),
        )
        with self._changed:
            self._requests.append(record)
            if not outage:
                self._unflattened.append((signal, message, transport))
            self._changed.notify_all()
        return not outage, retry_after

    def _grpc_export(self, signal: str, request, context):
        _, response_type = _SIGNALS[signal]
        if isinstance(request, (bytes, bytearray)):
            body = bytes(request)
        else:  # registered with the stock deserializer: re-encode
            body = request.SerializeToString()
        headers = {
            str(k).lower(): (v if isinstance(v, str) else repr(v)) for k, v in (context.invocation_metadata() or ())
        }
        encoding = headers.get("grpc-encoding", "")
        try:
            accepted, retry_after = self._record("grpc", signal, body, body, encoding, headers)
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if not accepted:
            if retry_after is not None and error_details_pb2 is not None:
                info = error_details_pb2.RetryInfo()
                info.retry_delay.FromNanoseconds(int(retry_after * 1e9))
                context.set_trailing_metadata((("google.rpc.retryinfo-bin", info.SerializeToString()),))
            context.abort(grpc.StatusCode.UNAVAILABLE, "simulated OTLP receiver outage")
        return response_type()

    def _http_export(
        self, signal: str, body: bytes, wire_body: bytes, encoding: str, headers: dict[str, str]
    ) -> tuple[int, bytes, dict[str, str]]:
        _, response_type = _SIGNALS[signal]
        try:
            accepted, retry_after = self._record("http", signal, body, wire_body, encoding, headers)
        except ValueError as exc:
            return 400, _status_body(3, str(exc)), {}  # 3 = INVALID_ARGUMENT
        if not accepted:
            extra = {}
            if retry_after is not None:
                extra["Retry-After"] = str(max(0, math.ceil(retry_after)))
            return 503, _status_body(14, "simulated OTLP receiver outage"), extra  # 14 = UNAVAILABLE
        return 200, response_type().SerializeToString(), {}

    # -- accessors -----------------------------------------------------------------

    def requests(self, signal: str | None = None, *, include_rejected: bool = False) -> list[ReceivedRequest]:
        """Every export call received (accepted ones only unless asked)."""
        with self._lock:
            return [
                r for r in self._requests if (include_rejected or r.accepted) and (signal is None or r.signal == signal)
            ]

    def rejected_count(self, signal: str | None = None) -> int:
        """How many export calls were refused by outage mode."""
        with self._lock:
            return sum(1 for r in self._requests if not r.accepted and (signal is None or r.signal == signal))

    def raw_bodies(self, signal: str | None = None) -> list[bytes]:
        """Protobuf bytes of every accepted export, in arrival order."""
        return [r.body for r in self.requests(signal)]

    def _flattened(self) -> tuple[list[Metric], list[Span]]:
        """Every accepted export flat, in arrival order (the caller holds the lock)."""
        for signal, message, transport in self._unflattened:
            if signal == METRICS:
                self._metrics.extend(flatten_metrics(message, transport))
            elif signal == LOGS:
                self._logs.extend(flatten_logs(message, transport))
            else:
                self._spans.extend(flatten_spans(message, transport))
        self._unflattened.clear()
        return self._metrics, self._spans

    def metrics(self, name: str | None = None) -> list[Metric]:
        """Every metric of every accepted export (optionally one name), flat."""
        with self._lock:
            return [m for m in self._flattened()[0] if name is None or m.name == name]

    def spans(self, name: str | None = None) -> list[Span]:
        """Every span of every accepted export (optionally one name), flat."""
        with self._lock:
            return [s for s in self._flattened()[1] if name is None or s.name == name]

    def logs(self, event_name: str | None = None) -> list[LogRecord]:
        """Every log record of every accepted export (optionally one event name), flat."""
        with self._lock:
            self._flattened()
            return [r for r in self._logs if event_name is None or r.event_name == event_name]

    def metric_names(self) -> set[str]:
        with self._lock:
            return {m.name for m in self._flattened()[0]}

    def span_names(self) -> set[str]:
        with self._lock:
            return {s.name for s in self._flattened()[1]}

    def latest_metric(self, name: str) -> Metric | None:
        """The most recently received metric of that name (the current value
        of a cumulative instrument), or None."""
        found = self.metrics(name)
        return found[-1] if found else None

    def clear(self) -> None:
        """Forget everything received so far (listeners keep running)."""
        with self._changed:
            self._requests.clear()
            self._metrics.clear()
            self._spans.clear()
            self._logs.clear()
            self._unflattened.clear()
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[OTLPReceiver], Any], timeout: float = 10.0, interval: float = 0.05) -> bool:
        """Poll ``predicate(self)`` until it is truthy or ``timeout`` seconds
        pass; returns whether it became truthy.  A ``LookupError`` raised by
        the predicate (IndexError, KeyError: data not there yet) counts as
        false; other exceptions propagate."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if predicate(self):
                    return True
            except LookupError:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._changed:
                # Woken early by every new export; ``interval`` bounds the wait
                # for predicates that depend on something else (time, state).
                self._changed.wait(min(interval, remaining))


def _status_body(code: int, message: str) -> bytes:
    if status_pb2 is None:  # pragma: no cover
        return b""
    return status_pb2.Status(code=code, message=message).SerializeToString()
