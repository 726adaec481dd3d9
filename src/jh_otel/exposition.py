"""Prometheus exposition: every catalogue family exactly once in the registry that the hub serves.

JupyterHub serves ``generate_latest(REGISTRY)`` on ``/hub/metrics`` (behind the ``read:metrics`` scope), and
``OTEL_METRICS_EXPORTER=prometheus`` registers OpenTelemetry's collector in the same global registry and serves it on
the exporter port. Left alone, each family would appear twice on both. :func:`install` makes the registry hold one
source per family: JupyterHub's native collectors for catalogue names are unregistered (jh_otel mirrors every
native observation), OpenTelemetry's collector keeps serving other instrumentations' metrics but no longer the
catalogue's, and :class:`~jh_otel.instruments.CatalogueCollector` serves the catalogue. :meth:`Exposition.uninstall`
puts everything back.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric

log = logging.getLogger(__name__)

_OTEL_COLLECTOR_MODULE = "opentelemetry.exporter.prometheus"


class WithoutFamilies:
    """Another collector's families minus the catalogue's."""

    def __init__(self, collector: Any, names: set[str]) -> None:
        self.wrapped = collector
        self._names = names

    def collect(self) -> Iterator[Metric]:
        for metric in self.wrapped.collect():
            if metric.name not in self._names:
                yield metric


def _registered(registry: CollectorRegistry) -> list[tuple[Any, set[str]]]:
    # prometheus_client has no public listing of collectors; this mapping has been stable since 0.4.
    mapping = getattr(registry, "_collector_to_names", {})
    return [(collector, set(names)) for collector, names in list(mapping.items())]


class Exposition:
    def __init__(self, collector: Any, names: Iterable[str], registry: CollectorRegistry = REGISTRY) -> None:
        self.collector = collector
        self.registry = registry
        self.names = set(names)
        """Family names as collectors yield them (counters without ``_total``)."""
        self._removed: list[Any] = []
        self._added: list[Any] = []
        self._wrappers: dict[int, Any] = {}

    def install(self) -> None:
        for collector, registered in _registered(self.registry):
            if isinstance(collector, MetricWrapperBase) and registered & self.names:
                self._swap(collector, None)
            elif type(collector).__module__.startswith(_OTEL_COLLECTOR_MODULE):
                self._swap(collector, WithoutFamilies(collector, self.names))
        self.registry.register(self.collector)
        self._added.append(self.collector)
        log.info(
            "jh_otel: serving %d metric families in place of %d collectors of JupyterHub and OpenTelemetry",
            len(self.names),
            len(self._removed),
        )

    def replaced(self, collector: Any) -> bool:
        """Whether ``collector`` (a native metric object) is out of the registry, served by the catalogue instead."""
        return any(removed is collector for removed in self._removed) and id(collector) not in self._wrappers

    def _swap(self, old: Any, new: Any) -> None:
        self.registry.unregister(old)
        self._removed.append(old)
        if new is not None:
            self.registry.register(new)
            self._added.append(new)
            self._wrappers[id(old)] = new

    def uninstall(self) -> None:
        for collector in self._added:
            try:
                self.registry.unregister(collector)
            except KeyError:
                pass
        # JupyterHub's own collectors first: OpenTelemetry's collector renders the catalogue's names too, so it comes
        # back unwrapped only where it clashes with none of them (at shutdown it does); otherwise its wrapper stays
        natives = [c for c in self._removed if isinstance(c, MetricWrapperBase)]
        for collector in natives + [c for c in self._removed if not isinstance(c, MetricWrapperBase)]:
            try:
                self.registry.register(collector)
            except ValueError:
                wrapper = self._wrappers.get(id(collector))
                if wrapper is None:
                    log.warning("jh_otel: could not restore collector %r", collector)
                else:
                    self.registry.register(wrapper)
        self._added.clear()
        self._removed.clear()
        self._wrappers.clear()
