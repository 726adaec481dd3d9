"""The only place that creates instruments: each catalogue family becomes one ``prometheus_client`` family.

Each observation is recorded once, into a ``prometheus_client`` metric held outside any registry (about a
microsecond): :class:`CatalogueCollector` serves them to the Prometheus exposition, byte-for-byte what JupyterHub's
own metrics look like (``le="1.0"``, no ``otel_scope_*`` labels), and :mod:`jh_otel.producer` exports the same store
over OTLP when the OTLP reader collects. No OpenTelemetry instrument aggregates a catalogue family on the hub's
event loop. Gauges read the snapshot (or a value a hook set) when collected.

Series are bounded: past ``MAX_SERIES`` label sets a family records into one overflow series whose label values
are all ``_other``, so no input can grow memory without limit.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_left
from collections.abc import Callable, Iterator
from time import monotonic

from prometheus_client import Counter, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from .catalogue import Catalogue, Family, Kind
from .observers import reader
from .snapshot import Snapshot

log = logging.getLogger(__name__)

MAX_SERIES = 1000
EXEMPLAR_INTERVAL = 1.0
"""Seconds a histogram bucket keeps its exemplar before an observation in it sets a new one."""
OVERFLOW = "_other"


class Recorder:
    """Records one counter or histogram family, once, into ``prometheus_client``."""

    def __init__(
        self, family: Family, prefix: str, exemplar: Callable[[], dict[str, str] | None] | None = None
    ) -> None:
        self.family = family
        name = f"{prefix}_{family.name}"
        self.prometheus: Counter | Histogram
        if family.kind is Kind.COUNTER:
            self.prometheus = Counter(name, family.help, family.labels, registry=None)
            self._method = "inc"
            self._exemplar = None
        else:
            self.prometheus = Histogram(name, family.help, family.labels, registry=None, buckets=family.buckets)
            self._method = "observe"
            self._exemplar = exemplar
            """Labels of the exemplar for an observation (``prometheus_client`` keeps one per bucket)."""
        self._series: dict[tuple[str, ...], tuple[Callable[..., None], list[float] | None]] = {}
        """Per series: its record method and, for a histogram with exemplars, when each bucket's exemplar was last
        set."""
        bounds = [float(b) for b in family.buckets or ()]
        self._bounds: list[float] = bounds if bounds and bounds[-1] == math.inf else [*bounds, math.inf]
        """The histogram's bucket bounds as ``prometheus_client`` keeps them (``+Inf`` last)."""
        # an unlabelled family has one series, which exists from the start like the declared ones
        for labelvalues in family.series if family.labels else ((),):
            self._add_series(labelvalues)

    def _add_series(self, labelvalues: tuple[str, ...]) -> tuple[Callable[..., None], list[float] | None]:
        if len(self._series) >= MAX_SERIES:
            labelvalues = (OVERFLOW,) * len(labelvalues)
            if labelvalues in self._series:
                return self._series[labelvalues]
            log.warning("jh_otel: %s has %d series; recording new ones as %s", self.family.name, MAX_SERIES, OVERFLOW)
        child = self.prometheus.labels(*labelvalues) if labelvalues else self.prometheus
        stamps = [-EXEMPLAR_INTERVAL] * len(self._bounds) if self._exemplar is not None else None
        entry = self._series[labelvalues] = (getattr(child, self._method), stamps)
        return entry

    def declare(self, labelvalues: tuple[str, ...]) -> None:
        """Make the series of ``labelvalues`` exist at zero, so that ``rate()`` counts its first event."""
        if labelvalues not in self._series:
            self._add_series(labelvalues)

    def record(self, value: float, labelvalues: tuple[str, ...] = ()) -> None:
        """Add ``value`` (counter) or observe it (histogram) in the series of ``labelvalues``."""
        record, stamps = self._series.get(labelvalues) or self._add_series(labelvalues)
        if stamps is None:
            record(value)
            return
        # a bucket's exemplar is renewed at most every EXEMPLAR_INTERVAL seconds: prometheus_client validates and
        # allocates one per observation (5 us against 0.9), and a scrape or export shows only the last one anyway
        bucket = min(bisect_left(self._bounds, value), len(stamps) - 1)
        now = monotonic()
        if now - stamps[bucket] < EXEMPLAR_INTERVAL:
            record(value)
            return
        exemplar = self._exemplar() if self._exemplar is not None else None
        if exemplar is not None:
            stamps[bucket] = now
        record(value, exemplar)


class Instruments:
    """Every catalogue family, created once; gauges read ``snapshot()`` (or what a hook set) when collected.

    ``serving`` says whether the hub's telemetry is installed: while it is not (before the hub attaches, after a
    failed install, after detach) the OTLP export (:meth:`families`) has nothing of the catalogue, so no reader
    reports zeros that JupyterHub never counted.
    """

    serving = True

    def __init__(
        self,
        catalogue: Catalogue,
        snapshot: Callable[[], Snapshot | None],
        exemplar: Callable[[], dict[str, str] | None] | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.recorders: dict[str, Recorder] = {}
        self.gauges: dict[str, Callable[[], list[tuple[tuple[str, ...], float]]]] = {}
        self._live: dict[str, dict[tuple[str, ...], float]] = {}
        for family in catalogue:
            if family.kind is Kind.GAUGE:
                self.gauges[family.name] = (
                    reader(family, snapshot) if family.snapshot else self._live_reader(family.name)
                )
            else:
                self.recorders[family.name] = Recorder(family, catalogue.prefix, exemplar)

    def families(self) -> list[tuple[Family, str, Metric]]:
        """(family, prefix, its ``prometheus_client`` metric) of every family with data, for the OTLP export."""
        if not self.serving:
            return []
        by_name = {f"{self.catalogue.prefix}_{f.name}": f for f in self.catalogue}
        return [(by_name[m.name], self.catalogue.prefix, m) for m in self.collector().collect() if m.name in by_name]

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
