"""The only place that creates instruments: each catalogue family becomes a Prometheus family and an OTel one.

Recording is done once per event into both: a ``prometheus_client`` metric, held outside any registry and exposed
by :class:`CatalogueCollector` (so the Prometheus text is byte-for-byte what JupyterHub's own metrics look like:
``le="1.0"``, no ``otel_scope_*`` labels), and an OpenTelemetry instrument for OTLP. Gauges are observable on both
sides and read the snapshot.

Series are bounded: past ``MAX_SERIES`` label sets a family records into one overflow series whose label values
are all ``_other``, so no input can grow memory without limit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from prometheus_client import Counter, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from .catalogue import Catalogue, Family, Kind
from .observers import reader
from .snapshot import Snapshot

log = logging.getLogger(__name__)

MAX_SERIES = 1000
OVERFLOW = "_other"


class Recorder:
    """Records one counter or histogram family into Prometheus and OpenTelemetry.

    A histogram is recorded on both sides. A counter is recorded once, in ``prometheus_client`` (about a
    microsecond), and OpenTelemetry observes its cumulative values when it collects: an OTel synchronous record
    costs some 15 microseconds per metric reader, on the hub's event loop.
    """

    def __init__(
        self,
        family: Family,
        prefix: str,
        meter: Meter,
        exemplar: Callable[[], dict[str, str] | None] | None = None,
        serving: Callable[[], bool] = lambda: True,
    ) -> None:
        self.family = family
        self._serving = serving
        name = f"{prefix}_{family.name}"
        desc, unit = family.help, family.unit
        otel_name = family.instrument(prefix)
        self.prometheus: Counter | Histogram
        self._otel: Callable[[float, dict[str, str]], None] | None = None
        if family.kind is Kind.COUNTER:
            self.prometheus = Counter(name, desc, family.labels, registry=None)
            meter.create_observable_counter(otel_name, callbacks=[self._observe], unit=unit, description=desc)
            self._method = "inc"
            self._exemplar = None
        else:
            self.prometheus = Histogram(name, desc, family.labels, registry=None, buckets=family.buckets)
            self._otel = meter.create_histogram(
                otel_name, unit=unit, description=desc, explicit_bucket_boundaries_advisory=list(family.buckets)
            ).record
            self._method = "observe"
            self._exemplar = exemplar
            """Labels of the exemplar for an observation (``prometheus_client`` keeps one per bucket)."""
        self._series: dict[tuple[str, ...], tuple[Callable[..., None], dict[str, str]]] = {}
        # an unlabelled family has one series, which exists from the start like the declared ones
        for labelvalues in family.series if family.labels else ((),):
            self._add_series(labelvalues)

    def _add_series(self, labelvalues: tuple[str, ...]) -> tuple[Any, dict[str, str]]:
        if len(self._series) >= MAX_SERIES:
            labelvalues = (OVERFLOW,) * len(labelvalues)
            if labelvalues in self._series:
                return self._series[labelvalues]
            log.warning("jh_otel: %s has %d series; recording new ones as %s", self.family.name, MAX_SERIES, OVERFLOW)
        child = self.prometheus.labels(*labelvalues) if labelvalues else self.prometheus
        entry = (getattr(child, self._method), dict(zip(self.family.labels, labelvalues)))
        self._series[labelvalues] = entry
        return entry

    def declare(self, labelvalues: tuple[str, ...]) -> None:
        """Make the series of ``labelvalues`` exist at zero, so that ``rate()`` counts its first event."""
        if labelvalues not in self._series:
            self._add_series(labelvalues)

    def record(self, value: float, labelvalues: tuple[str, ...] = ()) -> None:
        """Add ``value`` (counter) or observe it (histogram) in the series of ``labelvalues``."""
        try:
            prom, attributes = self._series[labelvalues]
        except KeyError:
            prom, attributes = self._add_series(labelvalues)
        if self._exemplar is None:
            prom(value)
        else:
            prom(value, self._exemplar())
        if self._otel is not None:
            self._otel(value, attributes)

    def _observe(self, options: CallbackOptions) -> list[Observation]:
        """The counter's cumulative values, for OpenTelemetry's collection (none while the hub is not served)."""
        if not self._serving():
            return []
        try:
            return [
                Observation(sample.value, sample.labels)
                for metric in self.prometheus.collect()
                for sample in metric.samples
                if sample.name.endswith("_total")
            ]
        except Exception:
            log.warning("jh_otel: could not observe %s", self.family.name, exc_info=True)
            return []


class Instruments:
    """Every catalogue family, created once from one meter; gauges observe ``snapshot()``.

    ``serving`` says whether the hub's telemetry is installed: while it is not (before the hub attaches, after a
    failed install, after detach) OpenTelemetry's collection observes nothing of the catalogue, so no reader
    reports zeros that JupyterHub never counted.
    """

    serving = True

    def __init__(
        self,
        catalogue: Catalogue,
        meter: Meter,
        snapshot: Callable[[], Snapshot | None],
        exemplar: Callable[[], dict[str, str] | None] | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.recorders: dict[str, Recorder] = {}
        self.gauges: dict[str, Callable[[], list[tuple[tuple[str, ...], float]]]] = {}
        self._live: dict[str, dict[tuple[str, ...], float]] = {}
        for family in catalogue:
            if family.kind is Kind.GAUGE:
                read = reader(family, snapshot) if family.snapshot else self._live_reader(family.name)
                self.gauges[family.name] = read
                meter.create_observable_gauge(
                    family.instrument(catalogue.prefix),
                    callbacks=[_observe(family, read, self._is_serving)],
                    unit=family.unit,
                    description=family.help,
                )
            else:
                self.recorders[family.name] = Recorder(family, catalogue.prefix, meter, exemplar, self._is_serving)

    def _is_serving(self) -> bool:
        return self.serving

    def __getitem__(self, name: str) -> Recorder:
        return self.recorders[name]

    def _live_reader(self, name: str) -> Callable[[], list[tuple[tuple[str, ...], float]]]:
        self._live[name] = {}
        # list() of a dict's items runs in C under the GIL: safe against a writer on another thread
        return lambda: list(self._live[name].items())

    def set_gauge(self, name: str, labelvalues: tuple[str, ...], value: float) -> None:
        """Set one series of a gauge that a hook sets (no snapshot); bounded like the recorders' series."""
        series = self._live[name]
        if labelvalues not in series and len(series) >= MAX_SERIES:
            labelvalues = (OVERFLOW,) * len(labelvalues)
        series[labelvalues] = value

    def replace_gauge(self, name: str, readings: dict[tuple[str, ...], float]) -> None:
        """All series of a hook-set gauge at once (series not in ``readings`` disappear)."""
        if len(readings) > MAX_SERIES:
            readings = dict(list(readings.items())[:MAX_SERIES])
        self._live[name] = dict(readings)

    def collector(self) -> CatalogueCollector:
        return CatalogueCollector(self)


def _observe(
    family: Family, read: Callable[[], list[tuple[tuple[str, ...], float]]], serving: Callable[[], bool]
) -> Callable[..., Any]:
    def callback(options: CallbackOptions) -> list[Observation]:
        if not serving():
            return []
        try:
            return [Observation(value, dict(zip(family.labels, labels))) for labels, value in read()]
        except Exception:
            log.warning("jh_otel: could not observe %s", family.name, exc_info=True)
            return []

    return callback


class CatalogueCollector:
    """A ``prometheus_client`` collector exposing every catalogue family exactly once."""

    def __init__(self, instruments: Instruments) -> None:
        self._instruments = instruments

    def _gauge(self, family: Family, read: Callable[[], list[tuple[tuple[str, ...], float]]] | None) -> Metric:
        metric = GaugeMetricFamily(
            family.prometheus(self._instruments.catalogue.prefix), family.help, labels=family.labels
        )
        for labels, value in read() if read else ():
            metric.add_metric(list(labels), value)
        return metric

    def collect(self) -> Iterator[Metric]:
        for family in self._instruments.catalogue:
            if family.kind is Kind.GAUGE:
                try:
                    metric = self._gauge(family, self._instruments.gauges[family.name])
                    if metric.samples or not family.snapshot:  # a snapshot gauge is absent before the first one
                        yield metric
                except Exception:
                    log.warning("jh_otel: could not read %s", family.name, exc_info=True)
            else:
                yield from self._instruments.recorders[family.name].prometheus.collect()

    def describe(self) -> Iterator[Metric]:
        for family in self._instruments.catalogue:
            if family.kind is Kind.GAUGE:
                yield self._gauge(family, None)
            else:
                yield from self._instruments.recorders[family.name].prometheus.describe()
