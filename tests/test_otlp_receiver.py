"""Tests for the OTLP receiver test fixture (tests/otlp_receiver.py).

Real OpenTelemetry SDK providers export through the real OTLP gRPC and
OTLP/HTTP exporters to the receiver on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import http.client
import os
import sys
import threading
import time

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetricExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.metrics import Observation
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from otlp_receiver import OTLPReceiver  # noqa: E402

RESOURCE = Resource.create({"service.name": "jh-otel-receiver-test", "deployment": "unit"})

# transport name -> (metric exporter factory, span exporter factory)
TRANSPORTS = {
    "grpc": (
        lambda r, **kw: GrpcMetricExporter(endpoint=r.grpc_endpoint, insecure=True, **kw),
        lambda r, **kw: GrpcSpanExporter(endpoint=r.grpc_endpoint, insecure=True, **kw),
    ),
    "grpc-gzip": (
        lambda r, **kw: GrpcMetricExporter(
            endpoint=r.grpc_endpoint, insecure=True, compression=grpc.Compression.Gzip, **kw
        ),
        lambda r, **kw: GrpcSpanExporter(
            endpoint=r.grpc_endpoint, insecure=True, compression=grpc.Compression.Gzip, **kw
        ),
    ),
    "http": (
        lambda r, **kw: HttpMetricExporter(endpoint=r.http_metrics_url, **kw),
        lambda r, **kw: HttpSpanExporter(endpoint=r.http_traces_url, **kw),
    ),
    "http-gzip": (
        lambda r, **kw: HttpMetricExporter(endpoint=r.http_metrics_url, compression=HttpCompression.Gzip, **kw),
        lambda r, **kw: HttpSpanExporter(endpoint=r.http_traces_url, compression=HttpCompression.Gzip, **kw),
    ),
}


@pytest.fixture
def receiver():
    with OTLPReceiver() as r:
        yield r


@pytest.fixture(params=sorted(TRANSPORTS))
def transport(request):
    return request.param


def _base_transport(name: str) -> str:
    return name.split("-", 1)[0]


class _Meters:
    """A MeterProvider exporting through one exporter, flushed on demand."""

    def __init__(self, exporter, views=()):
        self.reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
        self.provider = MeterProvider(metric_readers=[self.reader], resource=RESOURCE, views=list(views))
        self.meter = self.provider.get_meter("jh_otel.test", "1.2.3")

    def flush(self):
        assert self.provider.force_flush(5_000)

    def close(self):
        self.provider.shutdown(timeout_millis=5_000)


@pytest.fixture
def make_meters():
    created = []

    def factory(exporter, views=()):
        meters = _Meters(exporter, views)
        created.append(meters)
        return meters

    yield factory
    for meters in created:
        meters.close()


@pytest.fixture
def make_tracer():
    created = []

    def factory(exporter):
        provider = TracerProvider(resource=RESOURCE)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        created.append(provider)
        return provider.get_tracer("jh_otel.test.tracer", "0.1")

    yield factory
    for provider in created:
        provider.shutdown()


def _collected_metrics_data():
    """MetricsData from an in-memory reader, for calling exporter.export()."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], resource=RESOURCE)
    provider.get_meter("jh_otel.test").create_counter("outage.counter").add(1)
    data = reader.get_metrics_data()
    provider.shutdown()
    return data


def _finished_span():
    """One finished SDK span, for calling exporter.export()."""
    provider = TracerProvider(resource=RESOURCE)
    span = provider.get_tracer("jh_otel.test").start_span("outage.span")
    span.end()
    provider.shutdown()
    return span


def _post(port: int, path: str, body: bytes, headers: dict[str, str]):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


# --------------------------------------------------------------------------
# Endpoints and lifecycle
# --------------------------------------------------------------------------


def test_endpoints_are_loopback_on_two_distinct_ports(receiver):
    """Both endpoints are http://127.0.0.1:PORT with two different OS-chosen ports."""
    assert receiver.grpc_endpoint == f"http://127.0.0.1:{receiver.grpc_port}"
    assert receiver.http_endpoint == f"http://127.0.0.1:{receiver.http_port}"
    assert receiver.http_metrics_url == receiver.http_endpoint + "/v1/metrics"
    assert receiver.http_traces_url == receiver.http_endpoint + "/v1/traces"
    assert receiver.grpc_port != receiver.http_port
    assert receiver.grpc_port > 0 and receiver.http_port > 0
    assert receiver.running


def test_endpoints_raise_before_start():
    """Asking for an endpoint of a receiver that was never started is an error."""
    receiver = OTLPReceiver()
    with pytest.raises(RuntimeError):
        _ = receiver.grpc_endpoint
    assert not receiver.running
    receiver.stop()  # stopping a never-started receiver is harmless


def test_env_var_endpoints_work_for_both_exporters(receiver, make_meters, monkeypatch):
    """grpc_endpoint and http_endpoint work as OTEL_EXPORTER_OTLP_ENDPOINT for the stock exporters."""
    for name in (
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
        "OTEL_EXPORTER_OTLP_HEADERS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.grpc_endpoint)
    via_grpc = make_meters(GrpcMetricExporter())
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.http_endpoint)
    via_http = make_meters(HttpMetricExporter())
    via_grpc.meter.create_counter("via.env.grpc").add(1)
    via_http.meter.create_counter("via.env.http").add(2)
    via_grpc.flush()
    via_http.flush()
    assert [m.transport for m in receiver.metrics("via.env.grpc")] == ["grpc"]
    assert [m.transport for m in receiver.metrics("via.env.http")] == ["http"]


def test_stop_refuses_exports_and_start_rebinds_same_ports(receiver):
    """After stop() exports fail, and start() serves again on the very same endpoints."""
    grpc_endpoint, http_endpoint = receiver.grpc_endpoint, receiver.http_endpoint
    http_exporter = HttpSpanExporter(endpoint=receiver.http_traces_url, timeout=0.5)
    grpc_exporter = GrpcSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True, timeout=0.5)
    span = _finished_span()
    try:
        receiver.stop()
        assert not receiver.running
        assert http_exporter.export([span]) == SpanExportResult.FAILURE
        assert grpc_exporter.export([span]) == SpanExportResult.FAILURE
        receiver.start()
        assert (receiver.grpc_endpoint, receiver.http_endpoint) == (grpc_endpoint, http_endpoint)
        assert http_exporter.export([span]) == SpanExportResult.SUCCESS
        assert grpc_exporter.export([span]) == SpanExportResult.SUCCESS
        assert [s.transport for s in receiver.spans("outage.span")] == ["http", "grpc"]
    finally:
        http_exporter.shutdown()
        grpc_exporter.shutdown()


# --------------------------------------------------------------------------
# Metrics through the real exporters
# --------------------------------------------------------------------------


def test_counter_name_value_attributes_resource_and_scope(receiver, transport, make_meters):
    """A monotonic counter arrives with exact name, description, unit, int value, attributes, resource and scope."""
    meters = make_meters(TRANSPORTS[transport][0](receiver))
    counter = meters.meter.create_counter("jupyterhub.test.requests", unit="{request}", description="Requests seen.")
    counter.add(2, {"http.method": "GET", "code": 200})
    counter.add(3, {"http.method": "GET", "code": 200})
    counter.add(1, {"http.method": "POST", "code": 503})
    meters.flush()

    [metric] = receiver.metrics("jupyterhub.test.requests")
    assert metric.kind == "sum"
    assert metric.is_monotonic is True
    assert metric.temporality == "cumulative"
    assert metric.description == "Requests seen."
    assert metric.unit == "{request}"
    assert metric.scope_name == "jh_otel.test"
    assert metric.scope_version == "1.2.3"
    assert metric.transport == _base_transport(transport)
    assert metric.resource["service.name"] == "jh-otel-receiver-test"
    assert metric.resource["deployment"] == "unit"
    points = {(p.attributes["http.method"], p.attributes["code"]): p.value for p in metric.data_points}
    assert points == {("GET", 200): 5, ("POST", 503): 1}
    assert all(isinstance(v, int) for v in points.values())


def test_up_down_counter_and_observable_gauge(receiver, transport, make_meters):
    """An up-down counter is a non-monotonic sum and an observable gauge carries its float value."""
    meters = make_meters(TRANSPORTS[transport][0](receiver))
    active = meters.meter.create_up_down_counter("jupyterhub.test.active_users")
    active.add(5)
    active.add(-2)
    meters.meter.create_observable_gauge(
        "jupyterhub.test.load",
        callbacks=[lambda options: [Observation(0.75, {"host": "hub"})]],
        unit="1",
    )
    meters.flush()

    [updown] = receiver.metrics("jupyterhub.test.active_users")
    assert (updown.kind, updown.is_monotonic) == ("sum", False)
    assert [p.value for p in updown.data_points] == [3]
    [gauge] = receiver.metrics("jupyterhub.test.load")
    assert gauge.kind == "gauge"
    assert gauge.is_monotonic is None and gauge.temporality is None
    assert [(p.attributes, p.value) for p in gauge.data_points] == [({"host": "hub"}, 0.75)]


def test_histogram_buckets_count_sum_min_max(receiver, transport, make_meters):
    """A histogram with explicit bucket bounds arrives with exact bucket counts, count, sum, min and max."""
    view = View(
        instrument_name="jupyterhub.test.duration",
        aggregation=ExplicitBucketHistogramAggregation(boundaries=(1.0, 5.0, 10.0)),
    )
    meters = make_meters(TRANSPORTS[transport][0](receiver), views=[view])
    histogram = meters.meter.create_histogram("jupyterhub.test.duration", unit="s")
    for value in (0.5, 3.0, 3.0, 7.0, 20.0):
        histogram.record(value, {"route": "/hub/api"})
    meters.flush()

    [metric] = receiver.metrics("jupyterhub.test.duration")
    assert (metric.kind, metric.unit, metric.temporality) == ("histogram", "s", "cumulative")
    [point] = metric.data_points
    assert point.attributes == {"route": "/hub/api"}
    assert point.explicit_bounds == [1.0, 5.0, 10.0]
    assert point.bucket_counts == [1, 2, 1, 1]
    assert point.count == 5
    assert point.sum == pytest.approx(33.5)
    assert (point.min, point.max) == (0.5, 20.0)
    assert point.value is None
    assert point.exemplars == 0


def test_histogram_default_buckets(receiver, make_meters):
    """Without a view the SDK's default bucket bounds come through unchanged."""
    meters = make_meters(TRANSPORTS["grpc"][0](receiver))
    meters.meter.create_histogram("jupyterhub.test.default_buckets").record(7)
    meters.flush()
    [point] = receiver.metrics("jupyterhub.test.default_buckets")[0].data_points
    assert point.explicit_bounds[:4] == [0.0, 5.0, 10.0, 25.0]
    assert len(point.bucket_counts) == len(point.explicit_bounds) + 1
    assert point.bucket_counts[2] == 1 and sum(point.bucket_counts) == 1


def test_cumulative_values_grow_across_flushes(receiver, make_meters):
    """Each flush is recorded separately, so latest_metric() shows the newest cumulative value."""
    meters = make_meters(TRANSPORTS["http"][0](receiver))
    counter = meters.meter.create_counter("jupyterhub.test.spawns")
    counter.add(1)
    meters.flush()
    counter.add(4)
    meters.flush()
    assert [m.data_points[0].value for m in receiver.metrics("jupyterhub.test.spawns")] == [1, 5]
    assert receiver.latest_metric("jupyterhub.test.spawns").data_points[0].value == 5
    assert receiver.latest_metric("no.such.metric") is None


# --------------------------------------------------------------------------
# Spans through the real exporters
# --------------------------------------------------------------------------


def test_spans_ids_kind_status_attributes_events(receiver, transport, make_tracer):
    """Parent and child spans arrive with matching hex ids, kinds, status, typed attributes and events."""
    tracer = make_tracer(TRANSPORTS[transport][1](receiver))
    with tracer.start_as_current_span("GET /hub/api/users", kind=SpanKind.SERVER) as parent:
        parent.set_attribute("http.status_code", 200)
        parent.set_attribute("ratio", 0.5)
        parent.set_attribute("admin", True)
        parent.set_attribute("groups", ["a", "b"])
        parent.add_event("auth.checked", {"user": "alice"})
        with tracer.start_as_current_span("db query", kind=SpanKind.CLIENT) as child:
            child.set_status(Status(StatusCode.ERROR, "boom"))
    parent_ctx, child_ctx = parent.get_span_context(), child.get_span_context()

    spans = {s.name: s for s in receiver.spans()}
    assert set(spans) == {"GET /hub/api/users", "db query"}
    server, client = spans["GET /hub/api/users"], spans["db query"]
    assert server.trace_id == format(parent_ctx.trace_id, "032x")
    assert server.span_id == format(parent_ctx.span_id, "016x")
    assert server.parent_span_id == ""
    assert client.trace_id == server.trace_id
    assert client.span_id == format(child_ctx.span_id, "016x")
    assert client.parent_span_id == server.span_id
    assert (server.kind, client.kind) == ("SERVER", "CLIENT")
    assert (server.status_code, client.status_code) == ("UNSET", "ERROR")
    assert client.status_message == "boom"
    assert server.attributes == {
        "http.status_code": 200,
        "ratio": 0.5,
        "admin": True,
        "groups": ["a", "b"],
    }
    assert [(e.name, e.attributes) for e in server.events] == [("auth.checked", {"user": "alice"})]
    assert server.scope_name == "jh_otel.test.tracer" and server.scope_version == "0.1"
    assert server.resource["service.name"] == "jh-otel-receiver-test"
    assert server.transport == _base_transport(transport)
    assert server.end_time_unix_nano >= server.start_time_unix_nano > 0


def test_span_links_are_flattened(receiver, make_tracer):
    """A span link arrives with the linked span's hex ids and the link attributes."""
    from opentelemetry.trace import Link

    tracer = make_tracer(TRANSPORTS["http"][1](receiver))
    with tracer.start_as_current_span("first") as first:
        pass
    with tracer.start_as_current_span("second", links=[Link(first.get_span_context(), {"why": "spawn"})]):
        pass
    [second] = receiver.spans("second")
    [first_rec] = receiver.spans("first")
    assert [(k.trace_id, k.span_id, k.attributes) for k in second.links] == [
        (first_rec.trace_id, first_rec.span_id, {"why": "spawn"})
    ]


# --------------------------------------------------------------------------
# Raw bodies, requests and the wire protocol
# --------------------------------------------------------------------------


def test_raw_bodies_are_protobuf_requests(receiver, transport, make_tracer, make_meters):
    """raw_bodies() holds the protobuf bytes of each export, decodable to the request that was flattened."""
    make_tracer(TRANSPORTS[transport][1](receiver)).start_span("raw.span").end()
    meters = make_meters(TRANSPORTS[transport][0](receiver))
    meters.meter.create_counter("raw.counter").add(7)
    meters.flush()

    [trace_body] = receiver.raw_bodies("traces")
    [metrics_body] = receiver.raw_bodies("metrics")
    assert receiver.raw_bodies() == [trace_body, metrics_body]
    trace_request = trace_service_pb2.ExportTraceServiceRequest.FromString(trace_body)
    assert trace_request.resource_spans[0].scope_spans[0].spans[0].name == "raw.span"
    metrics_request = metrics_service_pb2.ExportMetricsServiceRequest.FromString(metrics_body)
    metric = metrics_request.resource_metrics[0].scope_metrics[0].metrics[0]
    assert (metric.name, metric.sum.data_points[0].as_int) == ("raw.counter", 7)
    [request] = receiver.requests("metrics")
    assert request.message == metrics_request
    assert request.accepted and request.transport == _base_transport(transport)


def test_http_gzip_wire_body_and_headers_are_kept(receiver, make_tracer):
    """Over gzip OTLP/HTTP the wire body is the gzip stream, the body its content, and custom headers are kept."""
    exporter = HttpSpanExporter(
        endpoint=receiver.http_traces_url,
        compression=HttpCompression.Gzip,
        headers={"x-jh-test": "yes"},
    )
    make_tracer(exporter).start_span("gz.span").end()
    [request] = receiver.requests("traces")
    assert request.content_encoding == "gzip"
    assert request.headers["content-type"] == "application/x-protobuf"
    assert request.headers["x-jh-test"] == "yes"
    assert gzip.decompress(request.wire_body) == request.body
    assert receiver.spans()[0].name == "gz.span"


def test_grpc_metadata_is_kept(receiver, make_tracer):
    """gRPC invocation metadata (exporter headers) is recorded with the request."""
    exporter = GrpcSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True, headers={"x-jh-test": "grpc"})
    make_tracer(exporter).start_span("md.span").end()
    [request] = receiver.requests("traces")
    assert request.headers["x-jh-test"] == "grpc"
    assert request.wire_body == request.body


def test_http_reply_is_empty_export_response(receiver):
    """A valid POST /v1/metrics gets 200 with an application/x-protobuf ExportMetricsServiceResponse."""
    body = _hand_made_metrics_request().SerializeToString()
    status, headers, payload = _post(
        receiver.http_port, "/v1/metrics", body, {"Content-Type": "application/x-protobuf"}
    )
    assert status == 200
    assert headers["Content-Type"] == "application/x-protobuf"
    assert metrics_service_pb2.ExportMetricsServiceResponse.FromString(payload) == (
        metrics_service_pb2.ExportMetricsServiceResponse()
    )
    assert receiver.raw_bodies() == [body]
    [metric] = receiver.metrics()
    assert (metric.name, metric.data_points[0].value) == ("hand.made", 1.5)
    assert metric.data_points[0].attributes == {"nested": {"k": [1, "two"]}}


def test_http_rejects_bad_path_content_type_and_body(receiver):
    """Unknown paths get 404, non-protobuf content 415, undecodable bodies 400, and none is recorded."""
    proto = {"Content-Type": "application/x-protobuf"}
    assert _post(receiver.http_port, "/v1/profiles", b"", proto)[0] == 404
    assert _post(receiver.http_port, "/v1/metrics", b"{}", {"Content-Type": "application/json"})[0] == 415
    assert _post(receiver.http_port, "/v1/traces", b"\xff\xff\xff", proto)[0] == 400
    bad_gzip = {**proto, "Content-Encoding": "gzip"}
    assert _post(receiver.http_port, "/v1/traces", b"not gzip", bad_gzip)[0] == 400
    assert receiver.requests(include_rejected=True) == []


def test_http_logs_are_recorded_and_flattened(receiver):
    """A hand-made OTLP/HTTP logs export is answered with an empty response and flattened into one LogRecord."""
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
    from opentelemetry.proto.logs.v1 import logs_pb2

    record = logs_pb2.LogRecord(event_name="jupyterhub.spawn", severity_text="INFO", trace_id=b"\x01" * 16)
    record.body.string_value = "spawn success"
    request = logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[logs_pb2.ResourceLogs(scope_logs=[logs_pb2.ScopeLogs(log_records=[record])])]
    )
    status, _, payload = _post(
        receiver.http_port, "/v1/logs", request.SerializeToString(), {"Content-Type": "application/x-protobuf"}
    )
    assert status == 200
    assert (
        logs_service_pb2.ExportLogsServiceResponse.FromString(payload) == logs_service_pb2.ExportLogsServiceResponse()
    )
    [log] = receiver.logs("jupyterhub.spawn")
    assert (log.body, log.severity_text, log.trace_id) == ("spawn success", "INFO", "01" * 16)


def test_grpc_stub_gets_empty_export_response(receiver):
    """A plain generated MetricsService stub gets an empty ExportMetricsServiceResponse."""
    request = _hand_made_metrics_request()
    with grpc.insecure_channel(receiver.grpc_endpoint.removeprefix("http://")) as channel:
        response = metrics_service_pb2_grpc.MetricsServiceStub(channel).Export(request, timeout=5)
    assert response == metrics_service_pb2.ExportMetricsServiceResponse()
    assert receiver.raw_bodies("metrics") == [request.SerializeToString()]
    assert receiver.metrics("hand.made")[0].transport == "grpc"


def _hand_made_metrics_request():
    point = metrics_pb2.NumberDataPoint(as_double=1.5, time_unix_nano=1)
    nested = common_pb2.AnyValue(
        kvlist_value=common_pb2.KeyValueList(
            values=[
                common_pb2.KeyValue(
                    key="k",
                    value=common_pb2.AnyValue(
                        array_value=common_pb2.ArrayValue(
                            values=[common_pb2.AnyValue(int_value=1), common_pb2.AnyValue(string_value="two")]
                        )
                    ),
                )
            ]
        )
    )
    point.attributes.append(common_pb2.KeyValue(key="nested", value=nested))
    metric = metrics_pb2.Metric(name="hand.made", gauge=metrics_pb2.Gauge(data_points=[point]))
    return metrics_service_pb2.ExportMetricsServiceRequest(
        resource_metrics=[metrics_pb2.ResourceMetrics(scope_metrics=[metrics_pb2.ScopeMetrics(metrics=[metric])])]
    )


# --------------------------------------------------------------------------
# Outage mode
# --------------------------------------------------------------------------


@pytest.mark.parametrize("transport_name", ["grpc", "http"])
def test_outage_makes_exports_fail(transport_name):
    """In outage mode metric and span exports fail (UNAVAILABLE / 503) and nothing is recorded as received."""
    with OTLPReceiver(outage=True) as receiver:
        metric_exporter = TRANSPORTS[transport_name][0](receiver, timeout=0.5)
        span_exporter = TRANSPORTS[transport_name][1](receiver, timeout=0.5)
        try:
            started = time.monotonic()
            assert metric_exporter.export(_collected_metrics_data()) == MetricExportResult.FAILURE
            assert span_exporter.export([_finished_span()]) == SpanExportResult.FAILURE
            assert time.monotonic() - started < 3
            assert receiver.rejected_count("metrics") >= 1
            assert receiver.rejected_count("traces") >= 1
            assert receiver.metrics() == [] and receiver.spans() == [] and receiver.raw_bodies() == []
            assert all(not r.accepted for r in receiver.requests(include_rejected=True))

            receiver.set_outage(False)
            assert metric_exporter.export(_collected_metrics_data()) == MetricExportResult.SUCCESS
            assert span_exporter.export([_finished_span()]) == SpanExportResult.SUCCESS
            assert receiver.metric_names() == {"outage.counter"}
            assert receiver.span_names() == {"outage.span"}
        finally:
            metric_exporter.shutdown()
            span_exporter.shutdown()


def test_http_outage_status_is_503_with_retry_after(receiver):
    """An outage answers OTLP/HTTP with 503, a google.rpc.Status body and the requested Retry-After."""
    receiver.set_outage(True, retry_after=3)
    assert receiver.outage
    status, headers, payload = _post(
        receiver.http_port,
        "/v1/traces",
        trace_service_pb2.ExportTraceServiceRequest().SerializeToString(),
        {"Content-Type": "application/x-protobuf"},
    )
    assert status == 503
    assert headers["Retry-After"] == "3"
    from google.rpc import status_pb2

    assert status_pb2.Status.FromString(payload).code == grpc.StatusCode.UNAVAILABLE.value[0]


def test_grpc_outage_status_is_unavailable(receiver):
    """An outage answers OTLP/gRPC with status UNAVAILABLE."""
    receiver.set_outage(True)
    with grpc.insecure_channel(f"127.0.0.1:{receiver.grpc_port}") as channel:
        with pytest.raises(grpc.RpcError) as excinfo:
            metrics_service_pb2_grpc.MetricsServiceStub(channel).Export(_hand_made_metrics_request(), timeout=5)
    assert excinfo.value.code() == grpc.StatusCode.UNAVAILABLE
    assert receiver.rejected_count() == 1 and receiver.metrics() == []


@pytest.mark.parametrize("transport_name", ["grpc", "http"])
def test_exporter_retries_through_a_short_outage(receiver, transport_name):
    """With retry_after set, the exporter retries and its export succeeds once the outage ends."""
    receiver.set_outage(True, retry_after=0.2 if transport_name == "grpc" else 1)
    exporter = TRANSPORTS[transport_name][1](receiver, timeout=5)
    results = []
    worker = threading.Thread(target=lambda: results.append(exporter.export([_finished_span()])))
    try:
        worker.start()
        assert receiver.wait_for(lambda r: r.rejected_count() >= 1, timeout=3)
        receiver.set_outage(False)
        worker.join(5)
        assert results == [SpanExportResult.SUCCESS]
        assert receiver.span_names() == {"outage.span"}
        assert receiver.rejected_count("traces") >= 1
    finally:
        exporter.shutdown()
        worker.join(5)


# --------------------------------------------------------------------------
# wait_for, clear and concurrency
# --------------------------------------------------------------------------


def test_wait_for_times_out_false_within_bound(receiver):
    """wait_for returns False once its timeout passes, without waiting much longer."""
    started = time.monotonic()
    assert receiver.wait_for(lambda r: r.spans("never"), timeout=0.3) is False
    assert 0.25 <= time.monotonic() - started < 1.5


def test_wait_for_sees_data_arriving_later(receiver, make_tracer):
    """wait_for returns True as soon as a background export makes the predicate true, tolerating IndexError meanwhile."""
    tracer = make_tracer(TRANSPORTS["grpc"][1](receiver))
    timer = threading.Timer(0.3, lambda: tracer.start_span("late.span").end())
    timer.start()
    try:
        started = time.monotonic()
        assert receiver.wait_for(lambda r: r.spans()[0].name == "late.span", timeout=5)
        assert time.monotonic() - started < 3
    finally:
        timer.join(5)


def test_wait_for_propagates_other_errors(receiver):
    """wait_for lets a predicate's non-lookup exception propagate instead of hiding it."""
    with pytest.raises(ZeroDivisionError):
        receiver.wait_for(lambda r: 1 / 0, timeout=1)


def test_clear_forgets_everything(receiver, make_tracer):
    """clear() empties spans, metrics, bodies and requests while the receiver keeps serving."""
    tracer = make_tracer(TRANSPORTS["http"][1](receiver, timeout=0.5))
    tracer.start_span("before.clear").end()
    receiver.set_outage(True)
    tracer.start_span("rejected").end()
    receiver.set_outage(False)
    assert receiver.spans() and receiver.rejected_count() == 1
    receiver.clear()
    assert receiver.spans() == [] and receiver.raw_bodies() == []
    assert receiver.requests(include_rejected=True) == [] and receiver.rejected_count() == 0
    tracer.start_span("after.clear").end()
    assert receiver.span_names() == {"after.clear"}


def test_concurrent_exports_are_all_recorded(receiver):
    """Exports from many threads over both transports are all recorded, none lost or torn."""
    per_thread, threads = 5, []
    exporters = [TRANSPORTS[name][1](receiver) for name in ("grpc", "http") for _ in range(3)]
    errors = []

    def run(exporter, index):
        for i in range(per_thread):
            provider = TracerProvider(resource=RESOURCE)
            span = provider.get_tracer("concurrency").start_span(f"t{index}-{i}")
            span.end()
            if exporter.export([span]) != SpanExportResult.SUCCESS:
                errors.append((index, i))

    try:
        for index, exporter in enumerate(exporters):
            threads.append(threading.Thread(target=run, args=(exporter, index)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    finally:
        for exporter in exporters:
            exporter.shutdown()
    assert errors == []
    expected = {f"t{index}-{i}" for index in range(len(exporters)) for i in range(per_thread)}
    assert sorted(s.name for s in receiver.spans()) == sorted(expected)
    assert len(receiver.raw_bodies("traces")) == len(expected)
