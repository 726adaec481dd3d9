"""Trust, on real hubs: a locked database never holds the event loop, a hung check never holds the hub's exit,
health checks neither distort JupyterHub's proxy-poll metric nor make spans, a part that fails leaves JupyterHub's
own metrics exactly as without jh_otel, a bad standard setting costs only that setting, and a user's server
inherits no credential of the hub."""

from __future__ import annotations

import re
import time
from pathlib import Path

import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from hubproc import Hub, free_port, otel_env
from jh_otel.runtime import PARTS
from otlp_receiver import OTLPReceiver
from sqlitelock import locked

pytestmark = pytest.mark.e2e


def families(text: str) -> dict[str, tuple[str, frozenset[tuple[str, ...]]]]:
    """JupyterHub's families as served: name -> (type, the label sets of its samples)."""
    found = {}
    for family in text_string_to_metric_families(text):
        if family.name.startswith("jupyterhub_"):
            labels = frozenset(tuple(sorted(s.labels)) for s in family.samples)
            found[family.name] = (family.type, labels)
    return found


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def exporter(port: int) -> str:
    """The Prometheus exporter port's page: the same registry as /hub/metrics, read by the exporter's own thread
    (no request to the hub, so no span, no database query)."""
    return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text


def wait_for(condition, timeout: float, what: str, hub: Hub) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"not {what} within {timeout}s:\n{hub.log()[-3000:]}")


@pytest.fixture
def receiver():
    """A collector of each test's own (what it received is that test's hub's alone)."""
    with OTLPReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory):
    """JupyterHub alone, without the wrapper: what its own metrics look like."""
    with Hub(tmp_path_factory.mktemp("plain"), wrapper=False) as hub:
        yield hub


# --- health checks never block the loop, never hold the exit, never distort ------------------------------------


def test_a_locked_database_never_holds_the_hubs_event_loop(tmp_path: Path, receiver: OTLPReceiver) -> None:
    """Another process holds the hub's SQLite file exclusively: /hub/health keeps answering within 50 ms all the
    while (the database check and the snapshot query run in threads), and the database check turns unhealthy or
    error within its timeout, then healthy again."""
    port = free_port()
    env = otel_env(
        receiver.http_endpoint,
        traces="otlp",
        metrics="prometheus",
        exporter_port=port,
        extra={"OTEL_PYTHON_JUPYTERHUB_HEALTH_INTERVAL": "1", "OTEL_PYTHON_JUPYTERHUB_REFRESH_INTERVAL": "0.5"},
    )
    with Hub(tmp_path, env=env) as hub:
        status = lambda: sample(exporter(port), "jupyterhub_health_check_status", check="database")  # noqa: E731
        wait_for(lambda: status() == 1, 30, "database healthy", hub)
        with locked(tmp_path / "jupyterhub.sqlite", 6):
            locked_at = time.monotonic()
            probe = requests.Session()
            latencies, statuses = [], set()
            while time.monotonic() - locked_at < 5:
                start = time.perf_counter()
                assert probe.get(f"http://127.0.0.1:{hub.hub_port}/hub/health", timeout=10).status_code == 200
                latencies.append(time.perf_counter() - start)
                statuses.add(status())
                time.sleep(0.05)
        assert max(latencies) < 0.05, f"slowest /hub/health {max(latencies) * 1000:.0f} ms"
        assert statuses & {0.0, -1.0}, statuses  # unhealthy or error while locked
        wait_for(lambda: status() == 1, 30, "database healthy again", hub)
        assert re.search(r"health check database: healthy -> (unhealthy|error)", hub.log())


def test_a_hung_sync_check_does_not_delay_the_hubs_exit(tmp_path: Path, receiver: OTLPReceiver) -> None:
    """A registered sync check that sleeps forever is an error after its timeout and does not keep the hub from
    exiting within 2 s of SIGTERM."""
    port = free_port()
    config = """
import time
from jh_otel import health
health.register_check("hangs", lambda: time.sleep(3600), interval=1, timeout=1)
"""
    env = otel_env(receiver.http_endpoint, metrics="prometheus", exporter_port=port)
    hub = Hub(tmp_path, env=env, extra_config=config).start()
    try:
        wait_for(lambda: sample(exporter(port), "jupyterhub_health_check_status", check="hangs") == -1, 30, "hung", hub)
    finally:
        took = hub.stop()
    assert took < 2.0, f"exit took {took:.1f} s\n{hub.log()[-2000:]}"


def test_health_checks_neither_count_as_proxy_polls_nor_make_spans(
    tmp_path: Path, receiver: OTLPReceiver, plain: Hub
) -> None:
    """Over five health intervals of an idle hub, JupyterHub's proxy-poll count stays what it is for JupyterHub
    alone, and no span at all reaches the collector (checks and snapshot queries are untraced)."""
    port = free_port()
    env = otel_env(
        receiver.http_endpoint,
        traces="otlp",
        metrics="prometheus",
        exporter_port=port,
        extra={"OTEL_PYTHON_JUPYTERHUB_HEALTH_INTERVAL": "1"},
    )
    with Hub(tmp_path, env=env) as hub:
        checks = lambda: sample(exporter(port), "jupyterhub_health_check_status", check="proxy")  # noqa: E731
        wait_for(lambda: checks() == 1, 30, "proxy check healthy", hub)
        time.sleep(1.5)  # startup spans flushed (the batch processor's delay is 200 ms here)
        polls = lambda text: sample(text, "jupyterhub_proxy_poll_duration_seconds_count")  # noqa: E731
        before = polls(exporter(port)), polls(plain.scrape())
        spans_before = len(receiver.spans())
        time.sleep(5.5)
        after = polls(exporter(port)), polls(plain.scrape())
        new_spans = receiver.spans()[spans_before:]
    assert before[0] == before[1] and after == before, (before, after)
    assert new_spans == [], sorted({s.name for s in new_spans})


# --- all or nothing ------------------------------------------------------------------------------------------------

FAIL_PART = """
from jh_otel import runtime

def _fail(self):
    raise RuntimeError("injected failure")

runtime.{part}.install = _fail
"""


@pytest.mark.parametrize("part", [p.__name__ for p in PARTS])
def test_a_part_that_fails_leaves_jupyterhubs_own_metrics_as_without_jh_otel(
    tmp_path: Path, receiver: OTLPReceiver, plain: Hub, part: str
) -> None:
    """Each part made to fail in turn: one error line names it, and /hub/metrics serves exactly JupyterHub's own
    families, types and series, as a plain hub does (no catalogue family with a zero that is not true)."""
    env = otel_env(
        receiver.http_endpoint,
        traces="otlp",
        metrics="prometheus,otlp",
        exporter_port=free_port(),
        extra={"OTEL_PYTHON_JUPYTERHUB_EXEMPLARS": "on", "OTEL_PYTHON_JUPYTERHUB_RESOURCE_USAGE": "on"},
    )
    with Hub(tmp_path, env=env, extra_config=FAIL_PART.format(part=part)) as hub:
        served = families(hub.scrape())
        name = next(p.name for p in PARTS if p.__name__ == part)
        errors = [line for line in hub.log().splitlines() if "jh_otel: could not install" in line]
    assert len(errors) == 1 and f"could not install {name} (RuntimeError: injected failure)" in errors[0], errors
    assert served == families(plain.scrape())


# --- a bad standard setting costs only that setting ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_METRICS_EXPORTER", "prometheus,otlp,bogus"),
        ("OTEL_EXPORTER_PROMETHEUS_PORT", "99999"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4318"),
    ],
    ids=["unknown-exporter", "port-out-of-range", "endpoint-without-scheme"],
)
def test_a_bad_standard_setting_costs_only_that_setting(
    tmp_path: Path, receiver: OTLPReceiver, variable: str, value: str
) -> None:
    """One bad standard variable: jh_otel still loads, one line names the variable and the accepted values, the
    SDK is configured (no "Failed to auto initialize"), /hub/metrics serves the catalogue, and the valid OTLP
    metrics exporter delivers."""
    env = otel_env(receiver.http_endpoint, traces="otlp", metrics="prometheus,otlp", exporter_port=free_port())
    env["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"] = receiver.http_metrics_url
    env[variable] = value
    with Hub(tmp_path, env=env) as hub:
        text = hub.scrape()
        wait_for(
            lambda: any(m.name == "jupyterhub.request.duration" for m in receiver.metrics()), 30, "OTLP metrics", hub
        )
        log = hub.log()
    ours = [line for line in log.splitlines() if line.startswith("jh_otel:")]
    # the default Prometheus port may be taken on this machine: then the exporter is left out too, in a line of its own
    busy = [line for line in ours if "the prometheus exporter cannot listen on" in line]
    assert len(ours) == 1 + len(busy) and f"{variable}={value!r} is invalid" in ours[0], ours
    assert "Failed to auto initialize" not in log and "Configuration of configurator failed" not in log
    assert sample(text, "jupyterhub_spawn_duration_seconds_count", spawner_class="SimpleLocalProcessSpawner") == 0


# --- the hub's credentials stay in the hub -----------------------------------------------------------------------

SECRET = "collector-api-key-5f1c9e2a"


def test_a_users_server_inherits_no_credential_of_the_hub(tmp_path: Path, receiver: OTLPReceiver) -> None:
    """In ``inherit`` mode a real spawned server's process environment has the hub's export settings but none of
    its OTLP headers, client keys or certificates, nor any OpenTelemetry variable off the allow-list; what the
    operator sets on the spawner is there."""
    env = otel_env(
        receiver.http_endpoint,
        traces="otlp",
        metrics="otlp",
        extra={
            "OTEL_PYTHON_JUPYTERHUB_SINGLEUSER_INSTRUMENTATION": "inherit",
            "OTEL_EXPORTER_OTLP_HEADERS": f"api-key={SECRET}",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": f"api-key={SECRET}-traces",
            "OTEL_EXPORTER_OTLP_CLIENT_KEY": f"/etc/{SECRET}.key",
            "OTEL_EXPORTER_OTLP_CERTIFICATE": f"/etc/{SECRET}.crt",
            "OTEL_UNHEARD_OF": SECRET,
        },
    )
    config = 'c.Spawner.environment = {"OTEL_EXPORTER_OTLP_METRICS_HEADERS": "api-key=for-user-servers"}'
    with Hub(tmp_path, env=env, extra_config=config) as hub:
        assert hub.api("POST", "/users", json={"usernames": ["alice"]}).status_code == 201
        assert hub.api("POST", "/users/alice/server").status_code in (201, 202)
        hub.wait_server("alice", ready=True)
        assert hub.proc is not None
        servers = [
            p
            for p in psutil.Process(hub.proc.pid).children(recursive=True)
            if "jupyterhub-singleuser" in " ".join(p.cmdline())
        ]
        assert servers, "no single-user server process"
        environ = servers[0].environ()
        hub.api("DELETE", "/users/alice/server")
    otel = {k: v for k, v in environ.items() if k.startswith("OTEL_")}
    assert SECRET not in "\n".join(f"{k}={v}" for k, v in environ.items())
    assert otel["OTEL_SERVICE_NAME"] == "jupyterhub-singleuser"
    assert otel["OTEL_EXPORTER_OTLP_ENDPOINT"] == receiver.http_endpoint
    assert otel["OTEL_EXPORTER_OTLP_METRICS_HEADERS"] == "api-key=for-user-servers"
    assert not [k for k in otel if k != "OTEL_EXPORTER_OTLP_METRICS_HEADERS" and ("HEADERS" in k or "CLIENT" in k)]
    assert "OTEL_UNHEARD_OF" not in otel and "OTEL_EXPORTER_OTLP_CERTIFICATE" not in otel


# --- a collector outage costs no span made while it is up -------------------------------------------------------


def test_spans_made_before_during_and_after_a_collector_outage_arrive(tmp_path: Path, receiver: OTLPReceiver) -> None:
    """The collector goes away (connections refused) for 8 s under traffic and comes back: every request span made
    before and after arrives, those made during it too, each once; the hub log says so in one warning and one
    recovery line, and no batch processor queue filled."""
    env = otel_env(
        receiver.http_endpoint,
        traces="otlp",
        metrics="prometheus",
        exporter_port=free_port(),
        extra={"OTEL_TRACES_SAMPLER": "always_on", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "3"},
    )
    session = requests.Session()

    def traffic(hub: Hub, first: int, count: int, seconds: float) -> None:
        for n in range(first, first + count):
            assert session.get(f"{hub.url}/hub/api?n={n}", timeout=10).status_code == 200
            time.sleep(seconds / count)

    def numbers() -> list[int]:
        return sorted(
            int(s.attributes["url.query"][2:])
            for s in receiver.spans()
            if s.kind == "SERVER" and s.attributes.get("url.query", "").startswith("n=")
        )

    with Hub(tmp_path, env=env) as hub:
        traffic(hub, 0, 20, 1)
        wait_for(lambda: numbers() == list(range(20)), 20, "spans before the outage", hub)
        receiver.stop(grace=0)
        traffic(hub, 20, 40, 4)
        time.sleep(4)  # the exporter's retries fail
        receiver.start()
        traffic(hub, 60, 20, 1)
        wait_for(lambda: set(numbers()) >= set(range(80)), 30, "every span", hub)
        assert numbers() == list(range(80))
        text = hub.log()
    assert text.count("the trace collector is not accepting spans") == 1, text[-3000:]
    assert text.count("the trace collector accepts spans again") == 1
    assert "Queue full" not in text
