"""NativeMirror: every observation of JupyterHub's metric objects is mirrored, label values as prometheus_client
renders them; uninstall restores the objects."""

from __future__ import annotations

import enum
from types import SimpleNamespace

from prometheus_client import CollectorRegistry, Counter, Histogram

from jh_otel.catalogue import build_catalogue
from jh_otel.hooks.native import NativeMirror
from jh_otel.settings import parse_settings

CATALOGUE = build_catalogue(parse_settings({}))


class PollStatus(enum.Enum):  # like jupyterhub.metrics.ServerPollStatus: no __str__
    running = "running"


class Recorded:
    """Stands in for Instruments: remembers what each family recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float, tuple[str, ...]]] = []

    def __getitem__(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(record=lambda value, labels=(): self.calls.append((name, value, labels)))


def natives(labels_5x: bool = False):
    registry = CollectorRegistry()
    spawn_labels = ["status"] if labels_5x else ["status", "reason"]
    return SimpleNamespace(
        SERVER_SPAWN_DURATION_SECONDS=Histogram(
            "jupyterhub_server_spawn_duration_seconds", "d", spawn_labels, registry=registry
        ),
        SERVER_POLL_DURATION_SECONDS=Histogram(
            "jupyterhub_server_poll_duration_seconds", "d", ["status"], registry=registry
        ),
        LOGOUT_DURATION_SECONDS=Histogram("jupyterhub_logout_duration_seconds", "d", registry=registry),
        CSP_REPORT_COUNT=Counter("jupyterhub_csp_reports", "d", registry=registry),
    ), registry


def test_labelled_unlabelled_timer_and_counter_are_mirrored() -> None:
    """labels().observe, labels().time(), observe, time() and inc all reach the catalogue once, native too."""
    module, registry = natives()
    recorded = Recorded()
    NativeMirror(module, CATALOGUE, recorded).install()
    module.SERVER_SPAWN_DURATION_SECONDS.labels(status="failure", reason="throttled").observe(2.0)
    module.SERVER_POLL_DURATION_SECONDS.labels(status=PollStatus.running).observe(0.5)
    with module.SERVER_POLL_DURATION_SECONDS.labels(PollStatus.running).time():
        pass
    module.LOGOUT_DURATION_SECONDS.observe(0.25)
    with module.LOGOUT_DURATION_SECONDS.time():
        pass
    module.CSP_REPORT_COUNT.inc()
    names = [(name, labels) for name, _, labels in recorded.calls]
    assert names == [
        ("server_spawn_duration_seconds", ("failure", "throttled")),
        ("server_poll_duration_seconds", ("PollStatus.running",)),
        ("server_poll_duration_seconds", ("PollStatus.running",)),
        ("logout_duration_seconds", ()),
        ("logout_duration_seconds", ()),
        ("csp_reports", ()),
    ]
    assert recorded.calls[0][1] == 2.0 and recorded.calls[-1][1] == 1
    # the native objects recorded exactly as before
    assert (
        registry.get_sample_value("jupyterhub_server_poll_duration_seconds_count", {"status": "PollStatus.running"})
        == 2
    )
    assert registry.get_sample_value("jupyterhub_logout_duration_seconds_count") == 2
    assert registry.get_sample_value("jupyterhub_csp_reports_total") == 1


def test_missing_labels_of_older_jupyterhub_are_empty() -> None:
    """JupyterHub 5's spawn histogram has no reason label: the mirror records reason=""."""
    module, _ = natives(labels_5x=True)
    recorded = Recorded()
    NativeMirror(module, CATALOGUE, recorded).install()
    module.SERVER_SPAWN_DURATION_SECONDS.labels("success").observe(3.0)
    assert recorded.calls == [("server_spawn_duration_seconds", 3.0, ("success", ""))]


def test_a_failing_mirror_never_reaches_jupyterhub() -> None:
    """When recording raises, the native call still happens and nothing is raised."""
    module, registry = natives()

    class Broken:
        def __getitem__(self, name):
            return SimpleNamespace(record=lambda *a: 1 / 0)

    NativeMirror(module, CATALOGUE, Broken()).install()
    module.CSP_REPORT_COUNT.inc()
    module.SERVER_POLL_DURATION_SECONDS.labels(status="x").observe(1)
    assert registry.get_sample_value("jupyterhub_csp_reports_total") == 1


def test_uninstall_restores_the_native_objects() -> None:
    """After uninstall nothing is mirrored and the objects have no instance attributes left."""
    module, _ = natives()
    recorded = Recorded()
    mirror = NativeMirror(module, CATALOGUE, recorded)
    mirror.install()
    mirror.uninstall()
    module.CSP_REPORT_COUNT.inc()
    module.SERVER_POLL_DURATION_SECONDS.labels(status="x").observe(1)
    assert recorded.calls == []
    assert "labels" not in vars(module.SERVER_POLL_DURATION_SECONDS)
    assert "inc" not in vars(module.CSP_REPORT_COUNT)


def test_the_catalogue_follows_the_installed_jupyterhubs_labels_and_buckets() -> None:
    """Where the installed JupyterHub defines a native metric otherwise (5.x's spawn histogram without ``reason``,
    5.0's event-loop buckets from 0.025), the served family takes its labels and buckets, zero series projected."""
    from types import SimpleNamespace

    from prometheus_client import Histogram

    from jh_otel.catalogue import build_catalogue
    from jh_otel.hooks.native import follow
    from jh_otel.settings import parse_settings

    catalogue = build_catalogue(parse_settings({}))
    jupyterhub_5_0 = SimpleNamespace(
        SERVER_SPAWN_DURATION_SECONDS=Histogram("s", "s", ["status"], registry=None, buckets=(1, 10)),
        EVENT_LOOP_INTERVAL_SECONDS=Histogram("e", "e", registry=None, buckets=(0.025, 0.05, 1)),
    )
    followed = follow(catalogue, jupyterhub_5_0)
    spawn, loop = followed["server_spawn_duration_seconds"], followed["event_loop_interval_seconds"]
    assert spawn.labels == ("status",) and spawn.series == (("success",), ("failure",), ("error",))
    assert spawn.buckets == (1.0, 10.0) and loop.buckets == (0.025, 0.05, 1.0)
    assert followed["request_duration_seconds"] == catalogue["request_duration_seconds"]  # not native: unchanged
