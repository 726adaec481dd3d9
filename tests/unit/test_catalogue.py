"""The catalogue's name contract: Prometheus names, OTel names and units, JupyterHub's native metrics, the docs."""

from __future__ import annotations

import re
from pathlib import Path

import jupyterhub
import jupyterhub.metrics as native
import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics.export import AggregationTemporality
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from jh_otel.catalogue import Kind, build_catalogue
from jh_otel.hooks.native import follow
from jh_otel.instruments import Instruments
from jh_otel.producer import CatalogueProducer, merged
from jh_otel.settings import parse_settings
from jh_otel.snapshot import Snapshot

CATALOGUE = build_catalogue(parse_settings({}))
README = Path(__file__).parents[2] / "README.md"

SEED = {
    "jupyterhub_total_users": (Kind.GAUGE, ()),
    "jupyterhub_running_servers": (Kind.GAUGE, ()),
    "jupyterhub_pending_servers": (Kind.GAUGE, ()),  # all pending servers, no labels: alerts written from the spec
    "jupyterhub_request_duration_seconds": (Kind.HISTOGRAM, ("method", "handler", "code")),
    "jupyterhub_request_count_total": (Kind.COUNTER, ("method", "handler", "code")),
    "jupyterhub_login_success_total": (Kind.COUNTER, ()),
    "jupyterhub_login_failure_total": (Kind.COUNTER, ()),
    "jupyterhub_spawn_duration_seconds": (Kind.HISTOGRAM, ("spawner_class",)),
    "jupyterhub_spawn_success_total": (Kind.COUNTER, ("spawner_class",)),
    "jupyterhub_spawn_failure_total": (Kind.COUNTER, ("spawner_class", "error_type")),
    "jupyterhub_hub_response_duration_seconds": (Kind.HISTOGRAM, ()),
    "jupyterhub_api_request_duration_seconds": (Kind.HISTOGRAM, ("method", "endpoint", "status")),
    "jupyterhub_active_users": (Kind.GAUGE, ("period",)),
    "jupyterhub_hub_memory_usage_bytes": (Kind.GAUGE, ()),
    "jupyterhub_hub_memory_total_bytes": (Kind.GAUGE, ()),
    "jupyterhub_hub_cpu_usage_percent": (Kind.GAUGE, ()),
    "jupyterhub_custom_events_total": (Kind.COUNTER, ("event_type", "user")),
    "jupyterhub_custom_resource_usage": (Kind.GAUGE, ("resource_type", "user")),
    "jupyterhub_custom_operation_duration_seconds": (Kind.HISTOGRAM, ("operation", "status")),
    "jupyterhub_resource_usage": (Kind.GAUGE, ("resource_type", "username", "server_name")),
}


def test_otel_names_translate_to_the_prometheus_names() -> None:
    """OpenTelemetry's own Prometheus exporter, fed the catalogue's OTLP export (what jh_otel.producer makes of the
    one store), names every family as documented: a collector re-exporting OTLP gives the same families back."""
    registry = CollectorRegistry()
    reader = PrometheusMetricReader(registry=registry, disable_target_info=True)
    instruments = Instruments(CATALOGUE, Snapshot)
    for recorder in instruments.recorders.values():
        recorder.record(1, ("x",) * len(recorder.family.labels))
    for family in CATALOGUE:
        if family.kind is Kind.GAUGE and not family.snapshot:  # set by a hook
            instruments.set_gauge(family.name, ("x",) * len(family.labels), 1)
    produced = CatalogueProducer(instruments.families).metrics(lambda kind: AggregationTemporality.CUMULATIVE)
    reader._receive_metrics(merged(None, produced, Resource.create({})))
    exposed = {metric.name for metric in registry.collect()}
    assert exposed == set(CATALOGUE.names())


def test_seed_spec_names_types_and_labels() -> None:
    """Every metric of the seed spec is in the catalogue with its type and labels."""
    exposed = {f.prometheus(CATALOGUE.prefix): (f.kind, f.labels) for f in CATALOGUE}
    for name, expected in SEED.items():
        assert exposed[name] == expected, name


def _native_objects() -> list[MetricWrapperBase]:
    return [v for v in vars(native).values() if isinstance(v, MetricWrapperBase)]


SERVED = follow(CATALOGUE, native)
"""The catalogue as a hub of the installed JupyterHub serves it (its native families as this JupyterHub has them)."""
JUPYTERHUB_6 = int(jupyterhub.__version__.split(".")[0]) >= 6


@pytest.mark.parametrize("metric", _native_objects(), ids=lambda m: m._name)
def test_every_native_metric_has_the_same_family(metric: MetricWrapperBase) -> None:
    """Each of JupyterHub's own metrics is a served family with its name, type, labels and buckets; on JupyterHub 6
    the documented catalogue is exactly that, on 5.x the served one follows 5.x's own definitions."""
    name = metric._name
    family = next(f for f in SERVED if f"{SERVED.prefix}_{f.name}" == name)
    documented = next(f for f in CATALOGUE if f.name == family.name)
    assert documented.kind == family.kind and documented.otel == family.otel
    if JUPYTERHUB_6:
        assert documented == family
    assert family.kind.value == metric._type
    assert family.labels == tuple(metric._labelnames)
    if family.kind is Kind.HISTOGRAM:
        assert list(family.buckets) + [float("inf")] == list(metric._upper_bounds)
    if family.native:
        assert getattr(native, family.native) is metric


def test_native_series_created_at_startup_are_declared() -> None:
    """Label values JupyterHub creates at zero are among the catalogue's zero series (enum reprs included)."""
    for metric in _native_objects():
        family = next(f for f in SERVED if f"{SERVED.prefix}_{f.name}" == metric._name)
        if metric._labelnames and family.native:
            assert set(metric._metrics) <= set(family.series), family.name


def test_names_are_unique_and_prefixed() -> None:
    """No two families share a Prometheus or an OTLP name, and the prefix setting renames them all."""
    assert len({f.prometheus(CATALOGUE.prefix) for f in CATALOGUE}) == len(CATALOGUE.families)
    assert len({f.otel for f in CATALOGUE}) == len(CATALOGUE.families)
    custom = build_catalogue(parse_settings({"JUPYTERHUB_METRICS_PREFIX": "myhub"}))
    assert all(n.startswith("myhub_") for n in custom.names())


def test_bucket_settings_reach_the_spawn_and_stop_families() -> None:
    """JupyterHub's two bucket variables set the buckets of its families, of the seed spawn histogram and of the
    spawn-phase and per-profile histograms."""
    custom = build_catalogue(
        parse_settings(
            {
                "JUPYTERHUB_SERVER_SPAWN_DURATION_SECONDS_BUCKETS": "1,10",
                "JUPYTERHUB_SERVER_STOP_DURATION_SECONDS_BUCKETS": "2,20",
            }
        )
    )
    assert custom["server_spawn_duration_seconds"].buckets == (1.0, 10.0)
    assert custom["spawn_duration_seconds"].buckets == (1.0, 10.0)
    assert custom["spawn_phase_duration_seconds"].buckets == (1.0, 10.0)
    assert custom["spawn_profile_duration_seconds"].buckets == (1.0, 10.0)
    assert custom["server_stop_seconds"].buckets == (2.0, 20.0)


def test_every_histogram_in_seconds_has_second_scale_buckets() -> None:
    """No histogram uses the SDK's millisecond defaults."""
    for family in CATALOGUE:
        if family.kind is Kind.HISTOGRAM:
            assert family.unit == "s" and family.buckets and max(family.buckets) <= 600, family.name


def test_readme_table_is_generated_from_the_catalogue() -> None:
    """README.md carries exactly the table the catalogue renders."""
    text = README.read_text()
    match = re.search(r"<!-- metrics-table:start -->\n(.*?)<!-- metrics-table:end -->", text, re.S)
    assert match, "README.md has no generated metrics table"
    assert match.group(1) == CATALOGUE.markdown()
