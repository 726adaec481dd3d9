"""Exemplars: sampled spans only, OpenMetrics only when asked for, the text format untouched otherwise."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from prometheus_client import CollectorRegistry, generate_latest

from jh_otel.catalogue import build_catalogue
from jh_otel.hooks.exemplars import OpenMetricsNegotiation, current_exemplar, wants_openmetrics
from jh_otel.instruments import Instruments
from jh_otel.settings import parse_settings
from jh_otel.snapshot import Snapshot

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (PROMETHEUS_ACCEPT, True),
        ("application/openmetrics-text", True),
        ("text/plain;version=0.0.4", False),
        ("", False),
        ("*/*", False),
        ("application/openmetrics-text;q=0", False),
        ("application/openmetrics-text; q=0.5", True),
        ("application/openmetrics-text;q=x", False),
    ],
)
def test_only_an_accept_header_naming_openmetrics_gets_it(accept: str, expected: bool) -> None:
    """``wants_openmetrics`` is true only for an Accept header naming ``application/openmetrics-text`` with a
    well-formed nonzero ``q``: not for text, ``*/*``, an empty header, ``q=0`` or ``q=x``."""
    assert wants_openmetrics(accept) is expected


def test_exemplar_only_inside_a_sampled_span() -> None:
    """``current_exemplar`` is ``None`` outside any span and inside an unsampled one, and the span's hex trace and span
    ids inside a sampled one."""
    assert current_exemplar() is None
    unsampled = TracerProvider(sampler=ALWAYS_OFF).get_tracer("t")
    with unsampled.start_as_current_span("not sampled"):
        assert current_exemplar() is None
    sampled = TracerProvider(sampler=ALWAYS_ON).get_tracer("t")
    with sampled.start_as_current_span("sampled") as span:
        context = span.get_span_context()
        assert current_exemplar() == {
            "trace_id": f"{context.trace_id:032x}",
            "span_id": f"{context.span_id:016x}",
        }


def openmetrics_lines(exemplar) -> tuple[list[str], str]:
    instruments = Instruments(build_catalogue(parse_settings({})), Snapshot, exemplar=exemplar)
    registry = CollectorRegistry()
    registry.register(instruments.collector())
    tracer = TracerProvider(sampler=ALWAYS_ON).get_tracer("t")
    with tracer.start_as_current_span("request") as span:
        instruments["hub_response_duration_seconds"].record(0.2)
        instruments["request_count"].record(1, ("GET", "h.Handler", "200"))
    negotiation = OpenMetricsNegotiation(generate_latest)
    negotiation._handler.set(FakeHandler())
    body = negotiation.generate(registry).decode()
    bucket = [
        line
        for line in body.splitlines()
        if line.startswith('jupyterhub_hub_response_duration_seconds_bucket{le="0.25"}')
    ]
    return bucket, f"{span.get_span_context().trace_id:032x}"


def test_a_histogram_bucket_carries_the_trace_id_of_its_observation() -> None:
    """In the OpenMetrics exposition the ``le="0.25"`` bucket of an observation of 0.2 made in a sampled span carries an
    exemplar with that span's trace id and the value 0.2."""
    (line,), trace_id = openmetrics_lines(current_exemplar)
    assert '# {span_id="' in line and f'trace_id="{trace_id}"}} 0.2' in line


def test_no_exemplar_when_switched_off() -> None:
    """Without an exemplar function the same bucket's line is its plain count, with no exemplar."""
    (line,), _ = openmetrics_lines(None)
    assert line == 'jupyterhub_hub_response_duration_seconds_bucket{le="0.25"} 1.0'


class FakeHandler:
    def __init__(self, accept: str = PROMETHEUS_ACCEPT) -> None:
        self.headers: dict[str, str] = {}
        self.request = type("Request", (), {"headers": {"Accept": accept}})()

    def set_header(self, name: str, value: str) -> None:
        self.headers[name] = value


def handler_get(negotiation: OpenMetricsNegotiation, handler: FakeHandler, registry: CollectorRegistry) -> bytes:
    """What JupyterHub's MetricsHandler.get does, through the wrapper."""

    async def get() -> bytes:
        handler.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        return negotiation.generate(registry)

    return asyncio.run(negotiation.get(get, handler, (), {}))


def test_the_handler_answers_openmetrics_to_prometheus_and_text_to_anyone_else() -> None:
    """Prometheus's Accept header gets OpenMetrics (content type, ``# EOF``) without a call to the original generator,
    ``*/*`` gets the original's text format, and no handler stays set after the request."""
    registry = CollectorRegistry()
    calls: list[CollectorRegistry] = []

    def original(reg):
        calls.append(reg)
        return generate_latest(reg)

    negotiation = OpenMetricsNegotiation(original)
    prometheus = FakeHandler()
    assert handler_get(negotiation, prometheus, registry).endswith(b"# EOF\n")
    assert prometheus.headers["Content-Type"].startswith("application/openmetrics-text")
    assert calls == []
    curl = FakeHandler("*/*")
    assert not handler_get(negotiation, curl, registry).endswith(b"# EOF\n")
    assert curl.headers["Content-Type"].startswith("text/plain")
    assert calls == [registry]
    assert negotiation._handler.get() is None  # nothing leaks past the request


def test_a_failing_openmetrics_exposition_falls_back_to_text(caplog) -> None:
    """When the OpenMetrics exposition raises, the handler serves the original's text body as ``text/plain`` and logs
    ``serving the text format``."""

    class Broken:
        def collect(self):
            raise RuntimeError("boom")

    registry = CollectorRegistry()
    registry.register(Broken())
    negotiation = OpenMetricsNegotiation(lambda reg: b"text")
    handler = FakeHandler()
    assert handler_get(negotiation, handler, registry) == b"text"
    assert handler.headers["Content-Type"].startswith("text/plain")
    assert "serving the text format" in caplog.text


def test_the_hub_telemetry_installs_and_removes_the_negotiation() -> None:
    """The OpenMetrics part replaces the handler module's ``generate_latest`` and wraps ``MetricsHandler.get``, and
    its uninstall puts both back."""
    from jupyterhub.handlers import metrics as module

    from jh_otel.runtime import HubTelemetry, OpenMetrics

    original = module.generate_latest
    telemetry = HubTelemetry(parse_settings({"OTEL_PYTHON_JUPYTERHUB_EXEMPLARS": "on"}), MeterProvider().get_meter("t"))
    part = OpenMetrics(telemetry, None)
    assert part.wanted()
    part.install()
    assert module.generate_latest is not original
    assert hasattr(module.MetricsHandler.get, "__wrapped__")
    part.uninstall()
    assert module.generate_latest is original
    assert not hasattr(module.MetricsHandler.get, "__wrapped__")


def test_a_bucket_renews_its_exemplar_at_most_once_an_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """Within EXEMPLAR_INTERVAL a bucket keeps its exemplar; another bucket gets its own at once; an observation
    outside a sampled span sets none and does not hold the bucket's next one back; past the interval it renews."""
    from jh_otel import instruments as module

    clock = [1000.0]
    monkeypatch.setattr(module, "monotonic", lambda: clock[0])
    ids = iter([None, "a", "b", "c", "d"])
    instruments = Instruments(
        build_catalogue(parse_settings({})), Snapshot, exemplar=lambda: (lambda i: i and {"trace_id": i})(next(ids))
    )
    record = instruments["hub_response_duration_seconds"].record
    histogram = instruments["hub_response_duration_seconds"].prometheus

    def exemplar(bound: str) -> str | None:
        for metric in histogram.collect():
            for sample in metric.samples:
                if sample.name.endswith("_bucket") and sample.labels["le"] == bound and sample.exemplar:
                    return sample.exemplar.labels["trace_id"]
        return None

    record(0.2)  # unsampled: no exemplar
    assert exemplar("0.25") is None
    record(0.2)  # "a"
    record(0.21)  # within the interval: kept
    assert exemplar("0.25") == "a"
    record(3.0)  # another bucket: "b" at once
    assert (exemplar("0.25"), exemplar("5.0")) == ("a", "b")
    clock[0] += module.EXEMPLAR_INTERVAL
    record(0.22)  # "c"
    assert exemplar("0.25") == "c"
    (count,) = [s.value for s in histogram.collect()[0].samples if s.name.endswith("_count")]
    assert count == 5  # every observation counted


def test_a_histogram_with_exemplars_past_its_series_cap_records_into_the_overflow_series(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past MAX_SERIES, observations of new label sets land in the `_other` series, exemplar and all, none lost."""
    from jh_otel import instruments as module

    monkeypatch.setattr(module, "MAX_SERIES", 2)
    instruments = Instruments(build_catalogue(parse_settings({})), Snapshot, exemplar=lambda: {"trace_id": "ab" * 16})
    recorder = instruments["api_request_duration_seconds"]
    for i in range(6):
        recorder.record(0.2, ("GET", f"/hub/api/e{i}", "200"))
    counts = {
        s.labels["endpoint"]: s.value for s in recorder.prometheus.collect()[0].samples if s.name.endswith("_count")
    }
    assert sum(counts.values()) == 6 and counts[module.OVERFLOW] >= 4
