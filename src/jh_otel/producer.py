"""OTLP export of the catalogue, produced from the one store it is recorded in: ``prometheus_client``.

Every catalogue observation is recorded once, into ``prometheus_client`` (under a microsecond): no OpenTelemetry
instrument aggregates it on the hub's event loop, and the Prometheus exposition (``/hub/metrics``, the exporter
port) renders it directly. The OTLP export is produced from that same store when a push reader (the OTLP
``PeriodicExportingMetricReader`` that ``OTEL_METRICS_EXPORTER=otlp`` configures) collects: the role the
OpenTelemetry specification gives a MetricProducer, which the Python SDK does not have yet (the Go SDK's Prometheus
bridge plays it for ``client_golang``). :class:`CatalogueProducer` turns the ``prometheus_client`` families into the
SDK's metric data (same names and units as the instruments had, the label values as attributes, histogram bucket
counts and exemplars), cumulative or delta as the reader's exporter prefers
(``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE``), under the provider's resource and jh_otel's scope; and
:func:`install` adds them to each push reader's collection. The configured exporter, endpoint, headers, interval and
resource are the SDK's, untouched. The Prometheus reader of OpenTelemetry, which serves other instrumentations'
metrics on the exporter port, never sees the catalogue.

Histograms carry no min and max (``prometheus_client`` keeps neither; both are optional in OTLP).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from opentelemetry.sdk.metrics import Counter as SDKCounter
from opentelemetry.sdk.metrics import Histogram as SDKHistogram
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client.metrics_core import Metric as PrometheusMetric

from .catalogue import Family, Kind
from .version import __version__

log = logging.getLogger("jh_otel")

SCOPE = InstrumentationScope("jh_otel", __version__)
Source = Callable[[], Iterable[tuple[Family, str, PrometheusMetric]]]
"""(family, prefix, the family's ``prometheus_client`` metric) for each family to export."""


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _exemplar(sample: Any) -> Any:
    """The SDK exemplar of a ``prometheus_client`` bucket sample's exemplar (trace and span ids from its labels)."""
    from opentelemetry.sdk.metrics._internal.exemplar import Exemplar

    exemplar = sample.exemplar
    labels = exemplar.labels
    trace_id: int | None
    span_id: int | None
    try:
        trace_id, span_id = int(labels["trace_id"], 16), int(labels["span_id"], 16)
    except (KeyError, ValueError):
        trace_id = span_id = None
    stamp = exemplar.timestamp if exemplar.timestamp is not None else time.time()
    attributes = {k: v for k, v in labels.items() if k not in ("trace_id", "span_id")}
    return Exemplar(attributes, exemplar.value, _ns(float(stamp)), span_id, trace_id)


@dataclass
class _Point:
    """One histogram series, cumulative, as ``prometheus_client`` has it."""

    buckets: dict[float, float]
    count: float = 0.0
    total: float = 0.0
    created: float = 0.0
    exemplars: list[Any] | None = None


class CatalogueProducer:
    """The catalogue's ``prometheus_client`` families as SDK metrics, cumulative or delta."""

    def __init__(self, source: Source) -> None:
        self.source = source
        # delta temporality: the previous cumulative reading of each series, and when it was taken
        self._last: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[int, Any]] = {}

    def metrics(self, temporality: Callable[[Kind], AggregationTemporality]) -> list[Metric]:
        now = time.time_ns()
        out = []
        for family, prefix, metric in self.source():
            try:
                converted = self._convert(family, prefix, metric, temporality(family.kind), now)
            except Exception:
                log.debug("jh_otel: could not produce %s for OTLP", family.name, exc_info=True)
                continue
            if converted is not None:
                out.append(converted)
        return out

    def _convert(
        self, family: Family, prefix: str, metric: PrometheusMetric, temporality: AggregationTemporality, now: int
    ) -> Metric | None:
        name, unit, description = family.instrument(prefix), family.unit, family.help
        if family.kind is Kind.GAUGE:
            gauge_points = [NumberDataPoint(dict(sample.labels), 0, now, sample.value) for sample in metric.samples]
            return Metric(name, description, unit, Gauge(gauge_points)) if gauge_points else None
        if family.kind is Kind.COUNTER:
            created = {_key(s.labels): s.value for s in metric.samples if s.name.endswith("_created")}
            points = []
            for sample in metric.samples:
                if not sample.name.endswith("_total"):
                    continue
                key = _key(sample.labels)
                start, value = self._since(name, key, _ns(created.get(key, 0.0)), sample.value, temporality, now)
                points.append(NumberDataPoint(dict(sample.labels), start, now, value))
            return Metric(name, description, unit, Sum(points, temporality, True)) if points else None
        return self._histogram(family, name, unit, description, metric, temporality, now)

    def _histogram(
        self,
        family: Family,
        name: str,
        unit: str,
        description: str,
        metric: PrometheusMetric,
        temporality: AggregationTemporality,
        now: int,
    ) -> Metric | None:
        series: dict[tuple[tuple[str, str], ...], _Point] = {}
        for sample in metric.samples:
            labels = {k: v for k, v in sample.labels.items() if k != "le"}
            point = series.get(key := _key(labels))
            if point is None:
                point = series[key] = _Point({})
            if sample.name.endswith("_bucket"):
                point.buckets[float(sample.labels["le"])] = sample.value
                if sample.exemplar is not None:
                    point.exemplars = point.exemplars or []
                    point.exemplars.append(_exemplar(sample))
            elif sample.name.endswith("_count"):
                point.count = sample.value
            elif sample.name.endswith("_sum"):
                point.total = sample.value
            elif sample.name.endswith("_created"):
                point.created = sample.value
        bounds = list(family.buckets)
        points = []
        for key, point in series.items():
            cumulative = [point.buckets.get(bound, 0.0) for bound in bounds]
            cumulative.append(point.buckets.get(math.inf, point.count))
            counts = [int(cumulative[0])] + [int(b - a) for a, b in zip(cumulative, cumulative[1:])]
            reading = (int(point.count), point.total, counts)
            start, (count, total, counts) = self._since(name, key, _ns(point.created), reading, temporality, now)
            points.append(
                HistogramDataPoint(
                    dict(key),
                    start,
                    now,
                    count,
                    total,
                    counts,
                    bounds,
                    None,  # type: ignore[arg-type]  # min: optional in OTLP, not kept by prometheus_client
                    None,  # type: ignore[arg-type]  # max: likewise
                    point.exemplars or [],
                )
            )
        return Metric(name, description, unit, Histogram(points, temporality)) if points else None

    def _since(
        self,
        name: str,
        key: tuple[tuple[str, str], ...],
        created: int,
        reading: Any,
        temporality: AggregationTemporality,
        now: int,
    ) -> tuple[int, Any]:
        """(start time, value) of a series: since its creation (cumulative), or since the last export (delta)."""
        if temporality is not AggregationTemporality.DELTA:
            return created, reading
        last = self._last.get((name, key))
        self._last[(name, key)] = (now, reading)
        if last is None:
            return created, reading
        since, before = last
        if isinstance(reading, tuple):
            count, total, counts = reading
            return since, (count - before[0], total - before[1], [a - b for a, b in zip(counts, before[2])])
        return since, reading - before


def _key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def temporality_of(reader: Any) -> Callable[[Kind], AggregationTemporality]:
    """What ``reader`` (its exporter's preference) asks of counters and histograms."""
    preferences = getattr(reader, "_instrument_class_temporality", {})

    def choose(kind: Kind) -> AggregationTemporality:
        wanted = SDKCounter if kind is Kind.COUNTER else SDKHistogram
        for cls, temporality in preferences.items():
            if isinstance(cls, type) and issubclass(cls, wanted):
                return temporality
        return AggregationTemporality.CUMULATIVE

    return choose


def push_readers(meter_provider: Any) -> Iterator[Any]:
    """The meter provider's readers that push (the OTLP reader), not pull ones like the Prometheus reader."""
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    # where the SDK keeps them: on the provider (1.43 and later) or in its configuration (before)
    readers = getattr(meter_provider, "_metric_readers", None)
    if readers is None:
        readers = getattr(getattr(meter_provider, "_sdk_config", None), "metric_readers", ())
    for reader in readers or ():
        if isinstance(reader, PeriodicExportingMetricReader):
            yield reader


def install(meter_provider: Any, producer: CatalogueProducer) -> list[Callable[[], None]]:
    """Add the producer's metrics to every push reader's collection; returns the undo callables. A reader whose
    collection jh_otel cannot reach is named in one warning (the catalogue is then not pushed through it)."""
    undo: list[Callable[[], None]] = []
    resource = getattr(getattr(meter_provider, "_sdk_config", None), "resource", None)
    for reader in push_readers(meter_provider):
        original = getattr(reader, "_collect", None)
        if not callable(original) or resource is None:
            log.warning(
                "jh_otel: cannot add the catalogue to %s's collection: it is not pushed over it",
                type(reader).__qualname__,
            )
            continue
        reader._collect = _collecting(original, producer, temporality_of(reader), resource)
        undo.append(partial(setattr, reader, "_collect", original))
    return undo


def _collecting(
    original: Callable[..., Any],
    producer: CatalogueProducer,
    temporality: Callable[[Kind], AggregationTemporality],
    resource: Any,
) -> Callable[..., Any]:
    def collect(reader: Any, *args: Any, **kwargs: Any) -> Any:
        data = original(reader, *args, **kwargs)
        try:
            return merged(data, producer.metrics(temporality), resource)
        except Exception:
            log.debug("jh_otel: could not add the catalogue to a metrics collection", exc_info=True)
            return data

    return collect


def merged(data: MetricsData | None, metrics: list[Metric], resource: Any) -> MetricsData | None:
    """``data`` (the SDK's collection, None when it had nothing) with jh_otel's scope of ``metrics`` added to its
    resource."""
    if not metrics:
        return data
    scope = ScopeMetrics(SCOPE, metrics, "")
    if data is None or not data.resource_metrics:
        return MetricsData([ResourceMetrics(resource, [scope], getattr(resource, "schema_url", ""))])
    first, *rest = data.resource_metrics
    merged_first = ResourceMetrics(first.resource, [*first.scope_metrics, scope], first.schema_url)
    return MetricsData([merged_first, *rest])
