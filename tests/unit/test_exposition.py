"""Exposition: each catalogue family exactly once in a registry that also holds JupyterHub's and OTel's collectors."""

from __future__ import annotations

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jh_otel.catalogue import build_catalogue
from jh_otel.exposition import Exposition
from jh_otel.instruments import Instruments
from jh_otel.settings import parse_settings
from jh_otel.snapshot import Snapshot

CATALOGUE = build_catalogue(parse_settings({}))
NAMES = CATALOGUE.names()


def family_counts(registry: CollectorRegistry) -> dict[str, int]:
    counts: dict[str, int] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        counts[family.name] = counts.get(family.name, 0) + 1
    return counts


def setup(auto_describe: bool = False):
    """A registry as a hub under OTEL_METRICS_EXPORTER=prometheus has it: native metrics, OTel's collector."""
    registry = CollectorRegistry(auto_describe=auto_describe)  # the global REGISTRY describes: True
    native = Histogram("jupyterhub_request_duration_seconds", "native", ["method"], registry=registry)
    native.labels("GET").observe(1)
    other = Gauge("unrelated_metric", "someone else's", registry=registry)
    reader = PrometheusMetricReader(registry=registry)
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    meter = provider.get_meter("test")
    instruments = Instruments(CATALOGUE, Snapshot)
    instruments["request_count"].record(1, ("GET", "h", "200"))
    # OpenTelemetry instruments named like catalogue families (another instrumentation's, or an older jh_otel's)
    meter.create_counter("jupyterhub.request.count").add(1)
    meter.create_histogram("jupyterhub.request.duration", unit="s").record(0.1)
    meter.create_counter("tornado.requests").add(1)  # another instrumentation's metric
    return registry, instruments, native, other


def test_without_install_a_family_is_exposed_twice() -> None:
    """The problem install solves: OTel's rendering and JupyterHub's native metric expose the same family."""
    registry, instruments, *_ = setup()
    # an OpenTelemetry instrument named like a catalogue family, beside JupyterHub's native histogram
    counts = family_counts(registry)
    assert counts["jupyterhub_request_duration_seconds"] == 2 and counts["jupyterhub_request_count"] == 1


def test_install_exposes_each_family_once_and_keeps_the_rest() -> None:
    """After install: every catalogue family once, other collectors' families still there."""
    registry, instruments, native, other = setup()
    Exposition(instruments.collector(), NAMES, registry).install()
    counts = family_counts(registry)
    assert all(counts.get(name) == 1 for name in NAMES), {n: counts.get(n) for n in NAMES if counts.get(n) != 1}
    assert counts["unrelated_metric"] == 1
    assert counts["tornado_requests"] == 1
    assert counts["target_info"] == 1


def test_uninstall_restores_the_registry() -> None:
    """Uninstall brings back exactly the collectors that were there before."""
    registry, instruments, native, other = setup()
    before = family_counts(registry)
    exposition = Exposition(instruments.collector(), NAMES, registry)
    exposition.install()
    assert b"# HELP jupyterhub_request_duration_seconds native" not in generate_latest(registry)
    exposition.uninstall()
    assert family_counts(registry) == before
    assert b"# HELP jupyterhub_request_duration_seconds native" in generate_latest(registry)


def test_uninstall_keeps_otels_wrapper_where_its_original_would_clash(caplog) -> None:
    """In the global registry (auto_describe) OpenTelemetry's collector, rendering catalogue names too, cannot come
    back next to JupyterHub's own collectors: JupyterHub's come back, OpenTelemetry's stays wrapped, no warning."""
    registry, instruments, native, other = setup(auto_describe=True)
    instruments["request_duration_seconds"].record(0.1, ("GET", "h", "200"))
    exposition = Exposition(instruments.collector(), NAMES, registry)
    exposition.install()
    exposition.uninstall()
    counts = family_counts(registry)
    assert counts["jupyterhub_request_duration_seconds"] == 1 and counts["tornado_requests"] == 1
    assert b"# HELP jupyterhub_request_duration_seconds native" in generate_latest(registry)
    assert "could not restore" not in caplog.text


def test_declared_custom_instruments_are_served_once() -> None:
    """A custom instrument is recorded once, into the store /hub/metrics serves: OpenTelemetry's own rendering of
    the hub's meter never has it (no OpenTelemetry instrument is made for it)."""
    from jh_otel import custom

    registry = CollectorRegistry(auto_describe=True)
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)], shutdown_on_exit=False)
    instruments = Instruments(CATALOGUE, Snapshot)
    exposition = Exposition(instruments.collector(), NAMES, registry)
    exposition.install()
    declarations = custom.Declarations()
    metrics = custom.CustomMetrics(instruments, custom.UserLabels(10), registry, declarations)
    metrics.install()
    try:
        custom.counter("user_login", "Total user logins", ["username"], declarations=declarations).inc(username="ann")
        assert family_counts(registry)["jupyterhub_user_login"] == 1
    finally:
        metrics.uninstall()
        exposition.uninstall()
        provider.shutdown()


def test_replaced_names_only_the_native_collectors_taken_out() -> None:
    """``replaced`` is true for a native metric object the catalogue serves in its place, and false for one still
    served, for OpenTelemetry's wrapped collector, and after uninstall."""
    registry, instruments, native, other = setup()
    exposition = Exposition(instruments.collector(), NAMES, registry)
    assert not exposition.replaced(native)
    exposition.install()
    otel = next(c for c in exposition._removed if not isinstance(c, Histogram))
    assert exposition.replaced(native)
    assert not exposition.replaced(other) and not exposition.replaced(otel)
    exposition.uninstall()
    assert not exposition.replaced(native)
