"""The catalogue's OTLP export produced from the prometheus_client store: added to push readers only, cumulative or
delta as the exporter prefers, histogram buckets and exemplars carried, removed on uninstall."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from prometheus_client import CollectorRegistry

from jh_otel import producer
from jh_otel.catalogue import build_catalogue
from jh_otel.instruments import Instruments
from jh_otel.producer import SCOPE, CatalogueProducer
from jh_otel.settings import parse_settings
from jh_otel.snapshot import Snapshot

CATALOGUE = build_catalogue(parse_settings({}))
HANDLER = ("GET", "jupyterhub.handlers.pages.HomeHandler", "200")


class Exports(MetricExporter):
    """Keeps what it is asked to export."""

    def __init__(self, temporality: AggregationTemporality = AggregationTemporality.CUMULATIVE) -> None:
        super().__init__(preferred_temporality={Counter: temporality, Histogram: temporality})
        self.batches: list[Any] = []

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self.batches.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def ours(batch: Any) -> dict[str, Any]:
    """jh_otel's metrics in one exported batch, by name."""
    return {
        m.name: m for rm in batch.resource_metrics for sm in rm.scope_metrics if sm.scope == SCOPE for m in sm.metrics
    }


@pytest.fixture
def hub() -> Iterator[tuple[Instruments, MeterProvider, dict[str, Any]]]:
    instruments = Instruments(CATALOGUE, lambda: Snapshot(total_users=5))
    exporters = {"cumulative": Exports(), "delta": Exports(AggregationTemporality.DELTA)}
    readers = [PeriodicExportingMetricReader(e, export_interval_millis=3_600_000) for e in exporters.values()]
    prometheus = PrometheusMetricReader(registry=CollectorRegistry())
    provider = MeterProvider(metric_readers=[*readers, prometheus], shutdown_on_exit=False)
    undo = producer.install(provider, CatalogueProducer(instruments.families))
    yield instruments, provider, exporters | {"readers": readers, "prometheus": prometheus, "undo": undo}
    for restore in undo:
        restore()
    provider.shutdown()


def test_push_readers_export_the_one_store_and_the_prometheus_reader_never_sees_it(hub) -> None:
    """An OTLP-like push reader exports the catalogue as recorded into prometheus_client (no OpenTelemetry
    instrument was made), under jh_otel's scope and the provider's resource; OpenTelemetry's Prometheus reader
    renders none of it."""
    instruments, provider, parts = hub
    instruments["request_duration_seconds"].record(0.3, HANDLER)
    instruments["request_count"].record(1, HANDLER)
    provider.force_flush()
    metrics = ours(parts["cumulative"].batches[-1])
    duration = metrics["jupyterhub.request.duration"]
    (point,) = duration.data.data_points
    assert (duration.unit, point.count, point.sum) == ("s", 1, 0.3)
    assert list(point.explicit_bounds) == list(CATALOGUE["request_duration_seconds"].buckets)
    assert sum(point.bucket_counts) == 1 and point.min is None and point.max is None
    (count,) = metrics["jupyterhub.request.count"].data.data_points
    assert count.value == 1 and dict(count.attributes) == dict(zip(("method", "handler", "code"), HANDLER))
    assert metrics["jupyterhub.total_users"].data.data_points[0].value == 5
    rendered = {m.name for m in parts["prometheus"]._collector.collect()}
    assert not any(name.startswith("jupyterhub") for name in rendered)


def test_delta_temporality_exports_what_happened_since_the_last_export(hub) -> None:
    """With OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta (the exporter's preference), each export holds
    the increments since the previous one, counters and histograms alike."""
    instruments, provider, parts = hub
    for value in (0.3, 0.4):
        instruments["request_duration_seconds"].record(value, HANDLER)
        instruments["request_count"].record(1, HANDLER)
    provider.force_flush()
    instruments["request_count"].record(1, HANDLER)
    instruments["request_duration_seconds"].record(2.0, HANDLER)
    provider.force_flush()
    first, second = (ours(batch) for batch in parts["delta"].batches[-2:])
    assert first["jupyterhub.request.count"].data.data_points[0].value == 2
    assert second["jupyterhub.request.count"].data.data_points[0].value == 1
    (point,) = second["jupyterhub.request.duration"].data.data_points
    assert (point.count, round(point.sum, 6), sum(point.bucket_counts)) == (1, 2.0, 1)
    assert second["jupyterhub.request.count"].data.aggregation_temporality is AggregationTemporality.DELTA
    assert parts["cumulative"].batches[-1] is not None
    cumulative = ours(parts["cumulative"].batches[-1])["jupyterhub.request.count"].data.data_points[0]
    assert cumulative.value == 3


def test_exemplars_recorded_with_an_observation_are_carried(hub) -> None:
    """A histogram observation made with trace and span ids carries them to the OTLP export as an exemplar."""
    _, provider, parts = hub
    traced = Instruments(CATALOGUE, lambda: None, exemplar=lambda: {"trace_id": "ab" * 16, "span_id": "cd" * 8})
    undo = producer.install(provider, CatalogueProducer(traced.families))
    try:
        traced["hub_response_duration_seconds"].record(0.02)
        provider.force_flush()
    finally:
        for restore in undo:
            restore()
    points = [
        p
        for rm in parts["cumulative"].batches[-1].resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "jupyterhub.hub_response.duration"
        for p in m.data.data_points
        if p.count
    ]
    (exemplar,) = points[0].exemplars
    assert (exemplar.trace_id, exemplar.span_id, exemplar.value) == (int("ab" * 16, 16), int("cd" * 8, 16), 0.02)


def test_uninstall_leaves_the_readers_as_they_were(hub) -> None:
    """After uninstall a push reader's collection has nothing of jh_otel's."""
    instruments, provider, parts = hub
    for restore in parts["undo"]:
        restore()
    parts["undo"].clear()
    provider.force_flush()
    assert not parts["cumulative"].batches or not ours(parts["cumulative"].batches[-1])


def test_a_push_reader_without_the_collection_jh_otel_adds_to_is_named_and_left_alone(caplog) -> None:
    """If the SDK keeps a push reader's collection elsewhere than jh_otel adds to (a private attribute), the catalogue
    is not pushed through it, with one warning naming the reader; nothing raises."""
    import logging

    reader = PeriodicExportingMetricReader(Exports(), export_interval_millis=3_600_000)
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    try:
        reader._collect = None
        with caplog.at_level(logging.WARNING, logger="jh_otel"):
            assert producer.install(provider, CatalogueProducer(lambda: [])) == []
        assert "cannot add the catalogue to PeriodicExportingMetricReader's collection" in caplog.text
    finally:
        provider.shutdown()
