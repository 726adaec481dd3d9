"""End to end: JupyterHub 6 under ``opentelemetry-instrument`` with jh_otel, the real proxy, real single-user
servers, a real Prometheus and an OTLP receiver. One drive, many assertions."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from hubproc import FAILING_USER, PASSWORD, SERVICE_TOKEN, Hub, free_port, otel_env
from jh_otel.catalogue import Kind, build_catalogue
from jh_otel.hooks.singleuser import auto_instrumentation_dir
from jh_otel.settings import parse_settings
from otlp_receiver import OTLPReceiver
from promserver import Prometheus, promtool_check

pytestmark = pytest.mark.e2e

CATALOGUE = build_catalogue(parse_settings({}))
SPAWNER = "SimpleLocalProcessSpawner"
GOOD_LOGINS = ("alice", "bob")
BAD_LOGINS = 3
BAD_API_REQUESTS = 2


def families(text: str) -> dict[str, list]:
    """Family name -> every family of that name in the exposition (to count duplicates)."""
    found: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        found.setdefault(family.name, []).append(family)
    return found


def value(text: str, sample_name: str, **labels: str) -> float:
    """Sum of the samples called ``sample_name`` whose labels include ``labels``."""
    total, seen = 0.0, False
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
                seen = True
    assert seen, f"no sample {sample_name}{labels}"
    return total


@dataclass
class Stack:
    hub: Hub
    receiver: OTLPReceiver
    exporter_url: str
    workdir: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    exporter_port = free_port()
    workdir = tmp_path_factory.mktemp("hub")
    with OTLPReceiver() as receiver:
        env = otel_env(
            receiver.grpc_endpoint,
            protocol="grpc",
            exporter_port=exporter_port,
            extra={"OTEL_PYTHON_JUPYTERHUB_REFRESH_INTERVAL": "1"},
        )
        with Hub(workdir, env) as hub:
            stack = Stack(hub, receiver, f"http://127.0.0.1:{exporter_port}/metrics", workdir)
            drive(stack)
            yield stack


def drive(stack: Stack) -> None:
    hub = stack.hub
    names = [*GOOD_LOGINS, FAILING_USER]
    assert hub.api("POST", "/users", json={"usernames": names}).status_code == 201
    for name in GOOD_LOGINS:
        assert hub.login(name, PASSWORD).status_code == 302
    for _ in range(BAD_LOGINS):
        assert hub.refused(hub.login("alice", "wrong-password"))
    for _ in range(BAD_API_REQUESTS):
        assert hub.api("POST", "/users", data="{not json").status_code == 400
    assert hub.api("GET", "/no-such-endpoint").status_code == 404
    # two spawns that succeed, one stop, one spawn whose server process dies at once
    for name in GOOD_LOGINS:
        assert hub.api("POST", f"/users/{name}/server").status_code in (201, 202)
        hub.wait_server(name, ready=True)
    assert hub.api("DELETE", "/users/bob/server").status_code in (202, 204)
    hub.wait_server("bob", ready=False)
    hub.api("POST", f"/users/{FAILING_USER}/server")  # 202, or 500 when the server dies before the reply
    hub.wait_server(FAILING_USER, ready=False)
    # let the snapshot (1 s) and the OTLP export (1 s) catch up
    time.sleep(2.5)


def test_every_family_exactly_once_on_both_endpoints(stack: Stack) -> None:
    """/hub/metrics and the exporter port each expose every catalogue family once, with its type and labels."""
    for text in (stack.hub.scrape(), requests.get(stack.exporter_url, timeout=10).text):
        found = families(text)
        for family in CATALOGUE:
            name = f"{CATALOGUE.prefix}_{family.name}"
            assert len(found.get(name, [])) == 1, f"{name} appears {len(found.get(name, []))} times"
            (exposed,) = found[name]
            assert exposed.type == family.kind.value
            for sample in exposed.samples:
                assert set(sample.labels) - {"le"} == set(family.labels), sample
        # nothing else is named like a catalogue family (OpenTelemetry's own rendering of our meter is withheld)
        assert not [n for n, fams in found.items() if len(fams) > 1]


def test_histograms_have_second_scale_buckets(stack: Stack) -> None:
    """Every histogram exposes exactly the catalogue's buckets, in seconds, rendered as prometheus_client does."""
    text = stack.hub.scrape()
    found = families(text)
    for family in CATALOGUE:
        if family.kind is not Kind.HISTOGRAM or family.hook == "custom":  # custom: recorded by operators' code only
            continue
        (exposed,) = found[f"{CATALOGUE.prefix}_{family.name}"]
        bounds = {s.labels["le"] for s in exposed.samples if s.name.endswith("_bucket")}
        assert bounds == {str(float(b)) for b in family.buckets} | {"+Inf"}, family.name
        assert max(family.buckets) <= 600


def test_promtool_accepts_both_endpoints(stack: Stack) -> None:
    """`promtool check metrics` finds nothing wrong on either endpoint."""
    for text in (stack.hub.scrape(), requests.get(stack.exporter_url, timeout=10).text):
        result = promtool_check(text)
        assert result.returncode == 0, result.stdout + result.stderr


def test_hub_metrics_still_needs_read_metrics(stack: Stack) -> None:
    """/hub/metrics refuses a request without a token, as JupyterHub does by default."""
    response = requests.get(f"{stack.hub.url}/hub/metrics", timeout=10)
    assert response.status_code == 403


def test_gauges_equal_the_rest_api(stack: Stack) -> None:
    """Users and running servers equal what the REST API reports."""
    users = stack.hub.api("GET", "/users").json()
    running = sum(1 for u in users for s in u.get("servers", {}).values() if s.get("ready"))
    text = stack.hub.scrape()
    assert value(text, "jupyterhub_total_users") == len(users) == 4  # alice, bob, broken and the demo's admin
    assert value(text, "jupyterhub_running_servers") == running == 1
    assert value(text, "jupyterhub_pending_servers") == 0
    assert all(value(text, "jupyterhub_pending_servers_by_kind", kind=k) == 0 for k in ("spawn", "stop", "check"))
    # alice and bob logged in, so they were active in the last 24 h
    assert value(text, "jupyterhub_active_users", period="24h") >= len(GOOD_LOGINS)
    assert value(text, "jupyterhub_hub_memory_usage_bytes") > 10 * 2**20
    assert value(text, "jupyterhub_hub_memory_total_bytes") >= value(text, "jupyterhub_hub_memory_usage_bytes")


def test_login_and_spawn_counts_equal_the_drive(stack: Stack) -> None:
    """Logins, spawns and stops are counted once each, by outcome."""
    text = stack.hub.scrape()
    assert value(text, "jupyterhub_login_success_total") == len(GOOD_LOGINS)
    assert value(text, "jupyterhub_login_failure_total") == BAD_LOGINS
    assert value(text, "jupyterhub_login_duration_seconds_count", status="LoginStatus.success") == len(GOOD_LOGINS)
    assert value(text, "jupyterhub_login_duration_seconds_count", status="LoginStatus.failure") == BAD_LOGINS
    assert value(text, "jupyterhub_spawn_success_total", spawner_class=SPAWNER) == len(GOOD_LOGINS)
    assert value(text, "jupyterhub_spawn_failure_total", spawner_class=SPAWNER) == 1
    assert value(text, "jupyterhub_spawn_duration_seconds_count", spawner_class=SPAWNER) == len(GOOD_LOGINS) + 1
    assert value(text, "jupyterhub_server_spawn_duration_seconds_count", status="success") == len(GOOD_LOGINS)
    assert value(text, "jupyterhub_server_stop_seconds_count", status="success") == 1
    assert value(text, "jupyterhub_proxy_add_duration_seconds_count", status="success") == len(GOOD_LOGINS)
    assert value(text, "jupyterhub_proxy_delete_duration_seconds_count", status="success") >= 1
    assert value(text, "jupyterhub_hub_startup_duration_seconds_count") == 1
    assert value(text, "jupyterhub_init_spawners_duration_seconds_count") == 1
    assert value(text, "jupyterhub_event_loop_interval_seconds_count") > 0


def test_requests_are_counted_once_errors_included(stack: Stack) -> None:
    """Each request is counted once: the count family equals the histogram count, errors by their own code."""
    text = stack.hub.scrape()
    counts: Counter[tuple] = Counter()
    durations: Counter[tuple] = Counter()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.labels.get("method"), s.labels.get("handler"), s.labels.get("code"))
            if s.name == "jupyterhub_request_count_total":
                counts[key] += s.value
            elif s.name == "jupyterhub_request_duration_seconds_count":
                durations[key] += s.value
    assert counts and counts == durations
    users_handler = "jupyterhub.apihandlers.users.UserListAPIHandler"
    assert counts[("POST", users_handler, "400")] == BAD_API_REQUESTS
    assert counts[("POST", "jupyterhub.handlers.login.LoginHandler", "403")] == BAD_LOGINS
    assert (
        value(
            text,
            "jupyterhub_api_request_duration_seconds_count",
            method="POST",
            endpoint="/hub/api/users",
            status="400",
        )
        == BAD_API_REQUESTS
    )
    assert (
        value(text, "jupyterhub_api_request_duration_seconds_count", method="GET", endpoint="unmatched", status="404")
        == 1
    )
    assert (
        value(text, "jupyterhub_api_request_duration_seconds_count", endpoint="/hub/api/users/{user_name}/server") >= 3
    )
    endpoints = {
        s.labels["endpoint"]
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "jupyterhub_api_request_duration_seconds_count"
    }
    assert not [e for e in endpoints if e != "unmatched" and not e.startswith("/hub/api")]
    assert "/hub/api/users/alice" not in endpoints
    # pages and API partition all requests
    total = sum(counts.values())
    api = value(text, "jupyterhub_api_request_duration_seconds_count")
    pages = value(text, "jupyterhub_hub_response_duration_seconds_count")
    assert api + pages == total


def test_a_real_prometheus_scrapes_both_and_answers_dashboard_queries(stack: Stack) -> None:
    """Prometheus scrapes /hub/metrics (token) and the exporter port without error; dashboard queries answer."""
    token_file = stack.workdir / "token"
    token_file.write_text(SERVICE_TOKEN)
    hub_target = f"127.0.0.1:{stack.hub.port}"
    exporter_target = stack.exporter_url.split("/")[2]
    prometheus = Prometheus(
        stack.workdir / "prometheus",
        [
            {
                "job_name": "hub",
                "metrics_path": "/hub/metrics",
                "static_configs": [{"targets": [hub_target]}],
                "authorization": {"credentials_file": str(token_file)},
            },
            {"job_name": "exporter", "static_configs": [{"targets": [exporter_target]}]},
        ],
    ).start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            targets = prometheus.targets()
            if len(targets) == 2 and all(t["health"] == "up" for t in targets):
                break
            time.sleep(0.5)
        assert [
            (t["labels"]["job"], t["health"], t["lastError"]) for t in sorted(targets, key=lambda t: t["labels"]["job"])
        ] == [("exporter", "up", ""), ("hub", "up", "")]
        time.sleep(3)  # a few scrapes, for rate()
        queries = [
            "jupyterhub_running_servers",
            'jupyterhub_active_users{period="24h"}',
            "sum(jupyterhub_active_users) by (period)",
            "histogram_quantile(0.99, sum(rate(jupyterhub_request_duration_seconds_bucket[1m])) by (le))",
            "sum(rate(jupyterhub_request_duration_seconds_count[1m])) by (code)",
            "sum(rate(jupyterhub_request_duration_seconds_count[1m])) by (handler)",
            "histogram_quantile(0.99, sum(rate(jupyterhub_server_spawn_duration_seconds_bucket[1m])) by (le))",
            "sum(jupyterhub_server_spawn_duration_seconds_count) by (status)",
        ]
        for query in queries:
            assert prometheus.query(query), query
        running = prometheus.query("jupyterhub_running_servers")
        assert {r["metric"]["job"]: float(r["value"][1]) for r in running} == {"hub": 1.0, "exporter": 1.0}
        spawns = prometheus.query('sum(jupyterhub_server_spawn_duration_seconds_count{status="success"}) by (job)')
        assert {float(r["value"][1]) for r in spawns} == {float(len(GOOD_LOGINS))}
    finally:
        prometheus.stop()


def test_otlp_receives_the_same_catalogue(stack: Stack) -> None:
    """The OTLP receiver gets the catalogue under OpenTelemetry names and units, with the same values."""
    receiver = stack.receiver
    # custom families are recorded by operators' code only (tests/unit/test_custom.py), resource usage is off here
    expected = {
        f.instrument(CATALOGUE.prefix)
        for f in CATALOGUE
        if (f.kind is not Kind.HISTOGRAM or f.series == ()) and f.hook not in ("custom", "resources")
    }
    assert receiver.wait_for(
        lambda r: (
            expected
            - {"jupyterhub.logout.duration", "jupyterhub.check_routes.duration", "jupyterhub.proxy.poll.duration"}
            <= set(r.metric_names())
        ),
        15,
    )

    def latest(name: str, **attributes: str) -> float:
        metric = receiver.latest_metric(name)
        points = [p for p in metric.data_points if all(p.attributes.get(k) == v for k, v in attributes.items())]
        assert points, (name, attributes)
        return sum(p.count if metric.kind == "histogram" else p.value for p in points)

    assert latest("jupyterhub.login.success") == len(GOOD_LOGINS)
    assert latest("jupyterhub.login.failure") == BAD_LOGINS
    assert latest("jupyterhub.spawn.success", spawner_class=SPAWNER) == len(GOOD_LOGINS)
    assert latest("jupyterhub.total_users") == 4
    assert latest("jupyterhub.running_servers") == 1
    assert latest("jupyterhub.server.spawn.duration", status="success") == len(GOOD_LOGINS)
    text = stack.hub.scrape()
    for family, labels in [
        ("server_spawn_duration_seconds", {"status": "success"}),
        ("server_stop_seconds", {"status": "success"}),
        ("proxy_add_duration_seconds", {"status": "success"}),
        ("login_duration_seconds", {"status": "LoginStatus.failure"}),
        ("spawn_duration_seconds", {"spawner_class": SPAWNER}),
    ]:
        instrument = CATALOGUE[family].instrument(CATALOGUE.prefix)
        assert latest(instrument, **labels) == value(text, f"jupyterhub_{family}_count", **labels), family
    duration = receiver.latest_metric("jupyterhub.request.duration")
    assert duration.unit == "s" and duration.kind == "histogram"
    assert list(duration.data_points[0].explicit_bounds) == [
        float(b) for b in CATALOGUE["request_duration_seconds"].buckets
    ]
    assert receiver.latest_metric("jupyterhub.hub.memory.usage").unit == "By"
    assert all(m.resource.get("service.name") == "jupyterhub" for m in receiver.metrics("jupyterhub.total_users"))


def test_single_user_servers_do_not_inherit_the_wrapper(stack: Stack) -> None:
    """A spawned server's PYTHONPATH no longer carries opentelemetry-instrument's sitecustomize."""
    wrapper_dir = auto_instrumentation_dir()
    hub_env = psutil.Process(stack.hub.proc.pid).environ()
    assert wrapper_dir in hub_env.get("PYTHONPATH", "")
    servers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if any("jupyterhub-singleuser" in a for a in p.info["cmdline"] or [])
    ]
    alice = [p for p in servers if p.environ().get("JUPYTERHUB_USER") == "alice"]
    assert len(alice) == 1
    assert wrapper_dir not in alice[0].environ().get("PYTHONPATH", "")


def test_failed_spawn_is_reported_by_type(stack: Stack) -> None:
    """The spawn whose server died is one spawn_failure with the exception's class name."""
    text = stack.hub.scrape()
    failures = [
        s
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "jupyterhub_spawn_failure_total" and s.value
    ]
    assert len(failures) == 1 and failures[0].value == 1
    assert failures[0].labels["error_type"] not in ("", "_other")
