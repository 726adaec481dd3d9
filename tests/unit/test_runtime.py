"""The wiring: parts installed all or nothing, in order, undone in reverse; parts left out by settings or by
JupyterHub functions that are not as expected."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from opentelemetry.metrics import NoOpMeterProvider
from prometheus_client import CollectorRegistry

from jh_otel import runtime
from jh_otel.compat import Expect
from jh_otel.runtime import PARTS, HubTelemetry, Part
from jh_otel.settings import parse_settings

EVENTS: list[str] = []


class _Recording(Part):
    def install(self) -> None:
        EVENTS.append(f"install {self.name}")
        self.on_uninstall(lambda: EVENTS.append(f"uninstall {self.name}"))

    def start(self) -> None:
        EVENTS.append(f"start {self.name}")


class First(_Recording):
    name = "first"


class Second(_Recording):
    name = "second"


class Broken(_Recording):
    name = "broken"

    def install(self) -> None:
        super().install()  # half done when it fails: its own undo runs too
        raise RuntimeError("no route to host")


class Unwanted(_Recording):
    name = "unwanted"

    def wanted(self) -> bool:
        return False


class Mismatched(_Recording):
    name = "mismatched"
    expects = (Expect("os.path", "split", ("path", "more")),)


class Third(_Recording):
    name = "third"


def telemetry(*parts: type[Part]) -> HubTelemetry:
    meter = NoOpMeterProvider().get_meter("test")
    return HubTelemetry(parse_settings({}), meter, CollectorRegistry(), None, parts)


@pytest.fixture(autouse=True)
def events() -> None:
    EVENTS.clear()


def test_parts_install_in_order_start_and_uninstall_in_reverse() -> None:
    """Every wanted part installs in the declared order, starts with the hub, and is undone in reverse order."""
    hub = telemetry(First, Second, Third)
    assert hub.attach(SimpleNamespace())
    hub.start()
    hub.detach()
    assert EVENTS == [
        "install first",
        "install second",
        "install third",
        "start first",
        "start second",
        "start third",
        "uninstall third",
        "uninstall second",
        "uninstall first",
    ]
    assert hub.installed == [] and hub.app is None


def test_a_failing_part_undoes_everything_installed_with_one_error_line(caplog: pytest.LogCaptureFixture) -> None:
    """A part that raises: what it did and every part before it are undone in reverse, no later part installs,
    nothing starts, and one error line names the part and the reason."""
    hub = telemetry(First, Second, Broken, Third)
    with caplog.at_level(logging.DEBUG, logger="jh_otel"):
        assert not hub.attach(SimpleNamespace())
    hub.start()
    assert EVENTS == [
        "install first",
        "install second",
        "install broken",
        "uninstall broken",
        "uninstall second",
        "uninstall first",
    ]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "jh_otel: could not install broken (RuntimeError: no route to host); jh_otel is off for this hub, which "
        "serves JupyterHub's own metrics as without it"
    ]


def test_parts_the_settings_do_not_want_or_whose_functions_differ_are_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A part the settings switch off is skipped silently; one whose JupyterHub function differs is skipped with
    one warning; neither stops the others."""
    hub = telemetry(First, Unwanted, Mismatched, Third)
    with caplog.at_level(logging.WARNING, logger="jh_otel"):
        assert hub.attach(SimpleNamespace())
    assert EVENTS == ["install first", "install third"]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("jh_otel: leaving out mismatched: os.path.split takes (p), not (path, more)")


def test_the_declared_parts_each_have_a_name_and_only_wrap_what_they_check() -> None:
    """Every part of the real wiring has a name for its log lines; those that wrap JupyterHub functions declare
    them, and each declared function exists in the installed JupyterHub with the parameters read."""
    from jh_otel.compat import problem

    names = [part.name for part in PARTS]
    assert all(names) and len(set(names)) == len(names)
    for part in PARTS:
        for expect in part.expects:
            assert problem(expect) is None, (part.name, problem(expect))


def test_before_the_first_snapshot_the_snapshot_gauges_are_absent() -> None:
    """A telemetry whose hub-state snapshot has not been taken yet serves no snapshot gauge: no zero that looks
    like a reading."""
    hub = telemetry()
    text = "\n".join(sample.name for metric in hub.instruments.collector().collect() for sample in metric.samples)
    assert "jupyterhub_total_users" not in text and "jupyterhub_running_servers" not in text
    assert "jupyterhub_hub_response_duration_seconds_count" in text  # recorders are there from the start


def test_each_part_is_addressable_for_failure_injection() -> None:
    """The end-to-end test makes each part fail by its class name from a hub's config: every part is a class of
    this module listed in PARTS."""
    for part in PARTS:
        assert getattr(runtime, part.__name__) is part


def test_startup_objects_are_frozen_out_of_full_collections_once_started() -> None:
    """With the default setting the hub's objects at start are left out of later full collections (gc.freeze),
    and detaching puts them back; ``OTEL_PYTHON_JUPYTERHUB_GC_FREEZE=off`` leaves the collector alone."""
    import gc

    from jh_otel.runtime import StartupObjectsFrozen

    hub = HubTelemetry(parse_settings({}), None, CollectorRegistry(), None, [StartupObjectsFrozen])
    assert hub.attach(SimpleNamespace())
    try:
        hub.start()
        assert gc.get_freeze_count() > 1000
    finally:
        hub.detach()
    assert gc.get_freeze_count() == 0
    off = HubTelemetry(parse_settings({"OTEL_PYTHON_JUPYTERHUB_GC_FREEZE": "off"}), None, CollectorRegistry(), None)
    assert not StartupObjectsFrozen(off, None).wanted()


def test_the_request_record_replaces_jupyterhubs_log_method_only_when_it_can_prove_it_is_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """jh_otel's request record stands in for JupyterHub's ``prometheus_log_method`` only while the catalogue serves
    JupyterHub's histogram in its place, ``jupyterhub.log`` calls JupyterHub's own function and that function does
    nothing but its observation; otherwise JupyterHub's function keeps running."""
    from jupyterhub import log, metrics

    from jh_otel.exposition import Exposition
    from jh_otel.instruments import Instruments

    t = telemetry()
    registry = CollectorRegistry()
    registry.register(metrics.REQUEST_DURATION_SECONDS)
    exposition = Exposition(Instruments(t.catalogue, lambda: None).collector(), t.catalogue.names(), registry)
    assert not runtime.replaceable_log_method(None)
    assert not runtime.replaceable_log_method(exposition)  # the native histogram is still served
    exposition.install()
    try:
        assert runtime.replaceable_log_method(exposition)
        with monkeypatch.context() as patch:  # someone else wrapped JupyterHub's function
            patch.setattr(log, "prometheus_log_method", lambda handler: metrics.prometheus_log_method(handler))
            assert not runtime.replaceable_log_method(exposition)

        def does_more(handler):  # a JupyterHub whose function records something else too
            metrics.REQUEST_DURATION_SECONDS.labels("GET", "h", "200").observe(1)
            metrics.TOTAL_USERS.inc()

        with monkeypatch.context() as patch:
            patch.setattr(metrics, "prometheus_log_method", does_more)
            patch.setattr(log, "prometheus_log_method", does_more)
            assert not runtime.replaceable_log_method(exposition)
    finally:
        exposition.uninstall()
