"""Instruments: one recording lands in the Prometheus family, and the OTLP export produced from that one store shows
it (jh_otel.producer); series bounded."""

from __future__ import annotations

from opentelemetry.sdk.metrics.export import AggregationTemporality
from prometheus_client import CollectorRegistry, generate_latest

from jh_otel import instruments as instruments_module
from jh_otel.catalogue import build_catalogue
from jh_otel.instruments import OVERFLOW, Instruments
from jh_otel.producer import CatalogueProducer
from jh_otel.settings import parse_settings
from jh_otel.snapshot import Snapshot

CATALOGUE = build_catalogue(parse_settings({}))


def make(snapshot=Snapshot):
    instruments = Instruments(CATALOGUE, snapshot)
    registry = CollectorRegistry()
    registry.register(instruments.collector())
    return instruments, registry, CatalogueProducer(instruments.families)


def otel_points(producer: CatalogueProducer, name: str) -> list:
    """The data points of ``name`` in what the OTLP reader would export now."""
    metrics = producer.metrics(lambda kind: AggregationTemporality.CUMULATIVE)
    return [p for m in metrics if m.name == name for p in m.data.data_points]


def lines(registry: CollectorRegistry, prefix: str) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines() if line.startswith(prefix)]


def test_a_histogram_observation_reaches_both_sides() -> None:
    """One record() is one Prometheus observation in the right bucket, and the OTLP export shows the same count,
    sum, bucket counts and bounds."""
    instruments, registry, reader = make()
    instruments["request_duration_seconds"].record(0.3, ("GET", "jupyterhub.handlers.pages.HomeHandler", "200"))
    exposed = lines(registry, "jupyterhub_request_duration_seconds_")
    code, handler = 'code="200"', 'handler="jupyterhub.handlers.pages.HomeHandler"'
    assert f'jupyterhub_request_duration_seconds_bucket{{{code},{handler},le="0.25",method="GET"}} 0.0' in exposed
    assert f'jupyterhub_request_duration_seconds_bucket{{{code},{handler},le="0.5",method="GET"}} 1.0' in exposed
    assert f'jupyterhub_request_duration_seconds_sum{{{code},{handler},method="GET"}} 0.3' in exposed
    (point,) = otel_points(reader, "jupyterhub.request.duration")
    assert point.count == 1 and point.sum == 0.3
    bounds = CATALOGUE["request_duration_seconds"].buckets
    assert list(point.bucket_counts) == [1 if b == 0.5 else 0 for b in bounds] + [0]
    assert dict(point.attributes) == {
        "method": "GET",
        "handler": "jupyterhub.handlers.pages.HomeHandler",
        "code": "200",
    }
    assert list(point.explicit_bounds) == list(CATALOGUE["request_duration_seconds"].buckets)


def test_known_series_exist_at_zero_on_both_sides() -> None:
    """Declared label values are exposed at zero before anything happens; unlabelled counters too."""
    instruments, registry, reader = make()
    assert 'jupyterhub_proxy_add_duration_seconds_count{status="failure"} 0.0' in lines(registry, "jupyterhub_proxy")
    assert "jupyterhub_login_failure_total 0.0" in lines(registry, "jupyterhub_login_failure_total")
    (point,) = otel_points(reader, "jupyterhub.login.failure")
    assert point.value == 0
    assert not otel_points(reader, "jupyterhub.request.count")
    instruments.serving = False  # the hub's telemetry not installed: nothing of the catalogue is exported
    assert otel_points(reader, "jupyterhub.login.failure") == []


def test_gauges_read_the_current_snapshot_on_both_sides() -> None:
    """Gauges show the snapshot of the moment they are collected, with every known label value."""
    current = [Snapshot(total_users=7, active_users={("24h",): 3})]
    instruments, registry, reader = make(lambda: current[0])
    assert "jupyterhub_total_users 7.0" in lines(registry, "jupyterhub_total_users")
    assert lines(registry, "jupyterhub_active_users{") == [
        'jupyterhub_active_users{period="24h"} 3.0',
        'jupyterhub_active_users{period="7d"} 0.0',
        'jupyterhub_active_users{period="30d"} 0.0',
    ]
    current[0] = Snapshot(total_users=9)
    assert "jupyterhub_total_users 9.0" in lines(registry, "jupyterhub_total_users")
    (point,) = otel_points(reader, "jupyterhub.total_users")
    assert point.value == 9


def test_a_failing_snapshot_leaves_the_family_out_not_the_scrape() -> None:
    """A gauge whose reading raises is skipped; the rest of the exposition is served."""

    def broken() -> Snapshot:
        raise RuntimeError("boom")

    instruments, registry, reader = make(broken)
    text = generate_latest(registry).decode()
    assert "jupyterhub_total_users" not in text
    assert "jupyterhub_request_count_total" in text or "jupyterhub_login_success_total" in text
    assert otel_points(reader, "jupyterhub.total_users") == []


def test_series_are_capped_with_an_overflow_series(monkeypatch) -> None:
    """Past the cap, new label sets all record into one `_other` series."""
    monkeypatch.setattr(instruments_module, "MAX_SERIES", 3)
    instruments, registry, reader = make()
    recorder = instruments["spawn_failure"]
    for i in range(10):
        recorder.record(1, ("Spawner", f"Error{i}"))
    exposed = lines(registry, "jupyterhub_spawn_failure_total{")
    assert len(exposed) == 4
    assert f'jupyterhub_spawn_failure_total{{error_type="{OVERFLOW}",spawner_class="{OVERFLOW}"}} 7.0' in exposed


def test_a_declared_series_exists_at_zero_and_counts_once() -> None:
    """A declared series is exposed at zero once, however often declared, and counts from there."""
    instruments, registry, _ = make()
    assert lines(registry, "jupyterhub_spawn_duration_seconds_count") == []
    for _ in range(2):
        instruments["spawn_duration_seconds"].declare(("KubeSpawner",))
        instruments["spawn_success"].declare(("KubeSpawner",))
    assert lines(registry, "jupyterhub_spawn_duration_seconds_count") == [
        'jupyterhub_spawn_duration_seconds_count{spawner_class="KubeSpawner"} 0.0'
    ]
    assert lines(registry, "jupyterhub_spawn_success_total") == [
        'jupyterhub_spawn_success_total{spawner_class="KubeSpawner"} 0.0'
    ]
    instruments["spawn_success"].record(1, ("KubeSpawner",))
    assert lines(registry, "jupyterhub_spawn_success_total") == [
        'jupyterhub_spawn_success_total{spawner_class="KubeSpawner"} 1.0'
    ]
