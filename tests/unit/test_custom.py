"""The custom-metrics API: the spec's helpers, declared instruments in both exports, bounded user labels."""

from __future__ import annotations

import asyncio
import logging

import pytest
from opentelemetry.sdk.metrics.export import AggregationTemporality
from prometheus_client import CollectorRegistry, generate_latest

from jh_otel import custom
from jh_otel.catalogue import build_catalogue
from jh_otel.instruments import Instruments
from jh_otel.producer import CatalogueProducer
from jh_otel.settings import parse_settings
from jh_otel.snapshot import Snapshot

D = custom.Declarations()
"""This module's declarations: its tests record and declare here, never into the process-wide default."""


def installed(registry: CollectorRegistry, cap: int = 3) -> custom.CustomMetrics:
    instruments = Instruments(build_catalogue(parse_settings({})), lambda: Snapshot())
    registry.register(instruments.collector())
    metrics = custom.CustomMetrics(instruments, custom.UserLabels(cap), registry, declarations=D)
    metrics.install()
    return metrics


@pytest.fixture
def bound():
    registry = CollectorRegistry()
    metrics = installed(registry)
    yield registry, metrics
    metrics.uninstall()
    D.instruments.clear()


def lines(registry: CollectorRegistry, prefix: str) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines() if line.startswith(prefix)]


def otel_names(metrics: custom.CustomMetrics) -> set[str]:
    """The instrument names the OTLP export would have: the catalogue's and the declared instruments'."""
    producer = CatalogueProducer(lambda: metrics.instruments.families() + metrics.families())
    return {m.name for m in producer.metrics(lambda kind: AggregationTemporality.CUMULATIVE)}


def test_the_spec_helpers_record_the_spec_families(bound) -> None:
    """``record_custom_event`` and ``update_custom_gauge`` record into ``jupyterhub_custom_events_total`` and
    ``jupyterhub_custom_resource_usage`` (user ``anonymous`` or ``system`` when none is given), both also in the OTLP
    export."""
    registry, reader = bound
    custom.record_custom_event("user_login", "alice", declarations=D)
    custom.record_custom_event("cleanup", declarations=D)
    custom.update_custom_gauge("gpu_memory", 2.5, "alice", declarations=D)
    custom.update_custom_gauge("disk", 7, declarations=D)
    assert lines(registry, "jupyterhub_custom_events_total") == [
        'jupyterhub_custom_events_total{event_type="user_login",user="alice"} 1.0',
        'jupyterhub_custom_events_total{event_type="cleanup",user="anonymous"} 1.0',
    ]
    assert sorted(lines(registry, "jupyterhub_custom_resource_usage")) == [
        'jupyterhub_custom_resource_usage{resource_type="disk",user="system"} 7.0',
        'jupyterhub_custom_resource_usage{resource_type="gpu_memory",user="alice"} 2.5',
    ]
    assert {"jupyterhub.custom.events", "jupyterhub.custom.resource_usage"} <= otel_names(reader)


def test_timed_operations_sync_async_decorator_and_block(bound) -> None:
    """``time_custom_operation`` as a sync or async decorator and as a sync or async block counts one operation each,
    with status ``success``, ``error`` when it raises, or the status given."""
    registry, _ = bound

    @custom.time_custom_operation("sync_fn", declarations=D)
    def work() -> int:
        return 3

    @custom.time_custom_operation("async_fn", declarations=D)
    async def awork() -> int:
        await asyncio.sleep(0)
        return 4

    @custom.time_custom_operation("failing", declarations=D)
    def fail() -> None:
        raise ValueError("no")

    async def blocks() -> None:
        async with custom.time_custom_operation("async_block", declarations=D):
            pass

    assert work() == 3 and asyncio.run(awork()) == 4
    with pytest.raises(ValueError):
        fail()
    with custom.time_custom_operation("sync_block", status="partial", declarations=D):
        pass
    asyncio.run(blocks())
    counts = lines(registry, "jupyterhub_custom_operation_duration_seconds_count")
    assert sorted(counts) == sorted(
        f'jupyterhub_custom_operation_duration_seconds_count{{operation="{op}",status="{status}"}} 1.0'
        for op, status in [
            ("sync_fn", "success"),
            ("async_fn", "success"),
            ("failing", "error"),
            ("sync_block", "partial"),
            ("async_block", "success"),
        ]
    )


def test_declared_instruments_land_in_both_exports(bound) -> None:
    """A declared counter, histogram and gauge record into the Prometheus scrape and appear under their OpenTelemetry
    names in the OTLP export."""
    registry, reader = bound
    logins = custom.counter("user_login", "Total user logins", ["username", "authenticator"], declarations=D)
    launches = custom.histogram(
        "notebook_launch_duration_seconds", "Time to launch", ["username", "spawner_type"], declarations=D
    )
    quota = custom.gauge("quota_bytes", "Quota", ["username"], declarations=D)
    logins.inc(username="bob", authenticator="PAMAuthenticator")
    launches.observe(2.0, username="bob", spawner_type="LocalProcessSpawner")
    with launches.time(username="carol", spawner_type="LocalProcessSpawner"):
        pass
    quota.set(10, username="bob")
    assert lines(registry, "jupyterhub_user_login_total") == [
        'jupyterhub_user_login_total{authenticator="PAMAuthenticator",username="bob"} 1.0'
    ]
    assert len(lines(registry, "jupyterhub_notebook_launch_duration_seconds_count")) == 2
    assert lines(registry, "jupyterhub_quota_bytes") == ['jupyterhub_quota_bytes{username="bob"} 10.0']
    assert {
        "jupyterhub.user_login",
        "jupyterhub.notebook_launch_duration",
        "jupyterhub.quota_bytes",
    } <= otel_names(reader)


def test_instruments_declared_before_the_hub_is_instrumented_are_served_after() -> None:
    """An instrument declared in the config before the hub is instrumented records nothing until the custom-metrics
    part installs, is served while it is installed, and records nothing (without error) after it uninstalls."""
    early = custom.counter("early_events", "declared in jupyterhub_config.py", declarations=D)
    early.inc()  # nothing to record into yet: ignored
    registry = CollectorRegistry()
    metrics = installed(registry)
    try:
        early.inc(2)
        assert lines(registry, "jupyterhub_early_events_total") == ["jupyterhub_early_events_total 2.0"]
        metrics.uninstall()
        assert lines(registry, "jupyterhub_early_events_total") == []
        early.inc()  # after uninstall: ignored, no error
        custom.record_custom_event("late", declarations=D)  # likewise
    finally:
        metrics.uninstall()
        D.instruments.clear()


def test_a_flood_of_user_names_stays_within_the_cap(bound, caplog) -> None:
    """Fifty user names leave three plus ``_other`` (47 events) on the custom events and four series on a declared
    counter, with one ``distinct user names`` warning per family."""
    registry, _ = bound
    logins = custom.counter("user_login", "Total user logins", ["username"], declarations=D)
    with caplog.at_level(logging.WARNING):
        for i in range(50):
            custom.record_custom_event("login", f"user{i}", declarations=D)
            logins.inc(username=f"user{i}")
    events = lines(registry, "jupyterhub_custom_events_total")
    assert len(events) == 4  # the cap of 3, and _other
    assert 'jupyterhub_custom_events_total{event_type="login",user="_other"} 47.0' in events
    assert len(lines(registry, "jupyterhub_user_login_total")) == 4
    assert caplog.text.count("distinct user names") == 2  # once per family


@pytest.mark.parametrize(
    ("name", "labels", "problem"),
    [("bad-name", [], "name 'bad-name'"), ("ok", ["le"], "label 'le'"), ("ok", ["a b"], "label 'a b'")],
)
def test_a_bad_declaration_logs_one_line_and_records_nothing(bound, caplog, name, labels, problem) -> None:
    """A declaration with a bad name or label logs one single-line error naming the problem and adds nothing to the
    scrape."""
    registry, _ = bound
    before = generate_latest(registry)
    metric = custom.counter(name, "x", labels, declarations=D)
    metric.inc(**dict.fromkeys(labels, "v"))
    assert generate_latest(registry) == before
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert problem in record.getMessage() and "\n" not in record.getMessage()


def test_a_name_already_served_is_refused_without_raising(bound, caplog) -> None:
    """A declared counter whose name the catalogue already serves logs ``cannot serve``, records nothing and does not
    raise."""
    registry, _ = bound
    clash = custom.counter("custom_events", "clashes with the catalogue", ["event_type", "user"], declarations=D)
    clash.inc(event_type="x", user="y")
    assert "cannot serve jupyterhub_custom_events_total" in caplog.text
    assert lines(registry, "jupyterhub_custom_events_total") == []
