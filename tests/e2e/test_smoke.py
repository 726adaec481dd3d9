"""Smoke run on whichever JupyterHub is installed (CI runs it on 6.x and on the latest 5.x), both ways of setting
jh_otel up: ``opentelemetry-instrument`` and the one line in ``jupyterhub_config.py``. OTLP over HTTP here (the
main suite uses gRPC). Ends with a shutdown while the collector hangs."""

from __future__ import annotations

import re
import socket
import time

import jupyterhub
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from hubproc import PASSWORD, Hub, free_port, otel_env
from jh_otel.catalogue import build_catalogue
from jh_otel.settings import parse_settings
from otlp_receiver import OTLPReceiver

pytestmark = pytest.mark.e2e

CATALOGUE = build_catalogue(parse_settings({}))
NAMES = set(CATALOGUE.names())
MAJOR = int(jupyterhub.__version__.split(".")[0])


def family_counts(text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        counts[family.name] = counts.get(family.name, 0) + 1
    return counts


def sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise AssertionError(f"no {name}{labels}")


class BlackHole:
    """A collector that accepts connections and never answers: the worst kind of unreachable."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(64)
        self.endpoint = f"http://127.0.0.1:{self.socket.getsockname()[1]}"

    def close(self) -> None:
        self.socket.close()


@pytest.mark.parametrize("setup", ["opentelemetry-instrument", "config-line"])
def test_smoke(setup: str, tmp_path) -> None:
    """Spawn, stop and login are exported exactly once on both endpoints and over OTLP/HTTP, the spawn is one trace;
    a bad setting is one log line and changes nothing else."""
    exporter_port = free_port()
    with OTLPReceiver() as receiver:
        settings = {
            "OTEL_PYTHON_JUPYTERHUB_REFRESH_INTERVAL": "1",
            "OTEL_PYTHON_JUPYTERHUB_SHUTDOWN_TIMEOUT": "forever",  # bad: reported, default kept, hub serves
        }
        env = otel_env(receiver.http_endpoint, traces="otlp", exporter_port=exporter_port, extra=settings)
        wrapper = setup == "opentelemetry-instrument"
        extra = "" if wrapper else "import jh_otel; jh_otel.configure()"
        with Hub(tmp_path, env, wrapper=wrapper, extra_config=extra) as hub:
            assert hub.api("POST", "/users/alice").status_code == 201
            assert hub.login("alice", PASSWORD).status_code == 302
            assert hub.api("POST", "/users/alice/server").status_code in (201, 202)
            hub.wait_server("alice", ready=True)
            assert hub.api("DELETE", "/users/alice/server").status_code in (202, 204)
            hub.wait_server("alice", ready=False)
            time.sleep(1.5)
            for text in (hub.scrape(), requests.get(f"http://127.0.0.1:{exporter_port}/metrics", timeout=10).text):
                counts = family_counts(text)
                assert {name: counts.get(name, 0) for name in NAMES} == dict.fromkeys(NAMES, 1)
                assert sample(text, "jupyterhub_spawn_success_total") == 1
                assert sample(text, "jupyterhub_login_success_total") == 1
                assert sample(text, "jupyterhub_server_stop_seconds_count", status="success") == 1
                assert sample(text, "jupyterhub_server_spawn_duration_seconds_count", status="success") == 1
                assert sample(text, "jupyterhub_total_users") == len(hub.api("GET", "/users").json())
                assert sample(text, "jupyterhub_running_servers") == 0
                if MAJOR >= 6:
                    assert sample(text, "jupyterhub_login_duration_seconds_count", status="LoginStatus.success") == 1
            assert receiver.wait_for(lambda r: r.latest_metric("jupyterhub.spawn.success").data_points, 10)
            point = receiver.latest_metric("jupyterhub.spawn.success").data_points[0]
            assert point.value == 1 and point.attributes == {"spawner_class": "SimpleLocalProcessSpawner"}
            assert all(m.transport == "http" for m in receiver.metrics())
            assert_spawn_trace(receiver)
            assert (
                "jh_otel: OTEL_PYTHON_JUPYTERHUB_SHUTDOWN_TIMEOUT='forever' is invalid: expected a number of "
                "seconds from 0 to 30; using the default 0.5\n" in hub.log()
            )


def assert_spawn_trace(receiver: OTLPReceiver) -> None:
    """One trace from the request to the proxy route, with its SQL, on JupyterHub 5 (tornado's client; CI runs it
    with SQLAlchemy 2.0) as on 6 (aiohttp, SQLAlchemy 2.1)."""
    assert receiver.wait_for(lambda r: "jupyterhub.stop" in r.span_names(), 10)
    spans = receiver.spans()
    (spawn,) = [s for s in spans if s.name == "jupyterhub.spawn"]
    (request,) = [s for s in spans if s.span_id == spawn.parent_span_id]
    assert request.name == "POST /hub/api/users/{user_name}/server"
    children = {s.name: s for s in spans if s.parent_span_id == spawn.span_id}
    assert {"jupyterhub.spawner.start", "jupyterhub.server.wait_up", "jupyterhub.proxy.add_route"} <= children.keys()
    wait = children["jupyterhub.server.wait_up"]
    assert wait.attributes["jupyterhub.server.polls"] >= 1
    assert not [s for s in spans if s.parent_span_id == wait.span_id]  # no span per readiness poll
    (client,) = [s for s in spans if s.parent_span_id == children["jupyterhub.proxy.add_route"].span_id]
    assert client.kind == "CLIENT" and client.attributes["http.response.status_code"] == 201
    assert not [s.name for s in spans if "%" in s.name]
    sql = [s for s in spans if s.trace_id == spawn.trace_id and s.attributes.get("db.system") == "sqlite"]
    assert sql and all(re.fullmatch(r"(SELECT|INSERT|UPDATE|DELETE)( \w+)?", s.name) for s in sql)


def test_shutdown_is_quick_while_the_collector_hangs(tmp_path) -> None:
    """With the OTLP collector accepting connections but never answering, the hub still exits promptly."""
    hole = BlackHole()
    extra = {"OTEL_METRIC_EXPORT_INTERVAL": "500", "OTEL_PYTHON_JUPYTERHUB_TRACE_PROBES": "on"}  # spans to export
    env = otel_env(hole.endpoint, metrics="otlp", traces="otlp", extra=extra)
    try:
        hub = Hub(tmp_path, env).start()
        for _ in range(20):
            requests.get(f"{hub.url}/hub/health", timeout=10)
        time.sleep(1)  # an export is now stuck waiting on the black hole
        took = hub.stop()
        # the providers either give up on their own at the deadline or are abandoned by jh_otel
        assert re.search(r"jh_otel: telemetry (providers shut down in 0\.\d+s|not flushed within 0\.5s)", hub.log())
        # the target (2 s) is measured by benchmarks/; without jh_otel this takes 10 s or more
        assert took < 5, took
    finally:
        hole.close()
