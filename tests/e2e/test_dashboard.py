"""The provisioned Grafana dashboard, proven against the real thing: a real Prometheus on the shipped config scrapes
a driven hub (logins, a spawn, API calls, health checks, a stop, a failed spawn) and its configurable-http-proxy's
own metrics, and every PromQL query read from the dashboard's JSON returns data; its variables list the hub; the
latency panels' exemplars open traces that the hub really sent."""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from hubproc import FAILING_USER, PASSWORD, SERVICE_TOKEN, Hub, free_port, otel_env
from otlp_receiver import OTLPReceiver
from promserver import CONFIG_DIR, copy_config, shipped_config, start_prometheus, stop

pytestmark = pytest.mark.e2e

DASHBOARD = CONFIG_DIR / "grafana" / "dashboards" / "jupyterhub.json"
USER = "dana"
# what Grafana puts in place of the variables: the test's job, every instance, windows covering the drive
VARIABLES = {
    "$__rate_interval": "2m",
    "$__range": "10m",
    "$job": "jupyterhub",
    "$instance": ".*",
    "${datasource}": "prometheus",
}


@dataclass(frozen=True)
class Target:
    panel: str
    expr: str
    exemplar: bool

    @property
    def promql(self) -> str:
        expr = self.expr
        for name, value in VARIABLES.items():
            expr = expr.replace(name, value)
        assert "$" not in expr, f"a variable the test does not know in {self.panel}: {expr}"
        return expr


def dashboard_targets() -> list[Target]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [
        Target(panel["title"], target["expr"], target.get("exemplar", False))
        for panel in panels
        for target in panel.get("targets", [])
    ]


@dataclass
class Stack:
    prometheus: str
    receiver: OTLPReceiver
    hub: Hub


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("dashboard")
    exporter_port = free_port()
    with OTLPReceiver() as receiver:
        env = otel_env(
            receiver.http_endpoint,
            metrics="prometheus",
            traces="otlp",
            exporter_port=exporter_port,
            extra={"OTEL_PYTHON_JUPYTERHUB_EXEMPLARS": "on", "OTEL_PYTHON_JUPYTERHUB_REFRESH_INTERVAL": "1"},
        )
        proxy_metrics = free_port()
        # configurable-http-proxy's own metrics, turned on as the shipped hub config does (on loopback here)
        proxy_command = f"""
        c.ConfigurableHTTPProxy.command = [
            "configurable-http-proxy", "--metrics-ip=127.0.0.1", "--metrics-port={proxy_metrics}"
        ]
        """
        with Hub(tmp / "hub", env, extra_config=proxy_command) as hub:
            config = shipped_config(
                copy_config(tmp / "prometheus", SERVICE_TOKEN),
                {
                    "jupyterhub": hub.url.removeprefix("http://"),
                    "configurable-http-proxy": f"127.0.0.1:{proxy_metrics}",
                },
            )
            proc, url = start_prometheus(config, tmp, "--enable-feature=exemplar-storage")
            try:
                wait_for(url, 'up{job="jupyterhub"} == 1', hub)  # the zeros are in before the first event
                wait_for(url, 'up{job="configurable-http-proxy"} == 1', hub)
                drive(hub)
                wait_for(url, 'sum(jupyterhub_spawn_failure_total{job="jupyterhub"}) > 0', hub)  # the last event
                time.sleep(2)  # two more scrapes for the rates
                yield Stack(url, receiver, hub)
            finally:
                stop(proc)


def drive(hub: Hub) -> None:
    """What an operator's hub sees in a few minutes, in a few seconds."""
    assert hub.api("POST", "/users", json={"usernames": [USER, FAILING_USER]}).status_code == 201
    assert hub.login(USER, PASSWORD).status_code == 302
    assert hub.refused(hub.login(USER, "wrong-password"))
    assert hub.api("POST", f"/users/{USER}/server").status_code in (201, 202)
    hub.wait_server(USER, ready=True)
    for _ in range(5):
        assert hub.api("GET", "/users").status_code == 200
        assert requests.get(f"{hub.url}/hub/health", timeout=10).status_code == 200
    assert hub.api("DELETE", f"/users/{USER}/server").status_code in (202, 204)
    hub.wait_server(USER, ready=False)
    hub.api("POST", f"/users/{FAILING_USER}/server")  # 202, or 500 when the server dies before the reply
    hub.wait_server(FAILING_USER, ready=False)


def query(url: str, promql: str) -> list[dict[str, Any]]:
    body = requests.get(f"{url}/api/v1/query", params={"query": promql}, timeout=10).json()
    assert body["status"] == "success", (promql, body)
    return body["data"]["result"]


def wait_for(url: str, promql: str, hub: Hub, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if query(url, promql):
            return
        time.sleep(0.5)
    raise AssertionError(f"Prometheus has nothing for {promql} after {timeout}s:\n{hub.log()[-3000:]}")


def test_the_dashboard_has_its_groups_and_the_spec_queries() -> None:
    """The rows are users, servers, spawn phases, performance, the proxy and system, with the seed spec's four
    queries."""
    board = json.loads(DASHBOARD.read_text())
    rows = [panel["title"] for panel in board["panels"] if panel["type"] == "row"]
    assert rows == ["Users", "Servers", "Spawn phases", "Performance", "Proxy", "System"]
    titles = {panel["title"] for panel in board["panels"]}
    for spec_query in ("Active users (24 h)", "Average spawn time", "Spawn success rate", "API request rate"):
        assert spec_query in titles
    kinds = {panel["title"]: panel["type"] for panel in board["panels"]}
    assert kinds["Spawn duration"] == "heatmap"
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource", "job", "instance"]
    assert {t.panel for t in dashboard_targets() if t.exemplar} >= {"Request latency p95 by handler"}


@pytest.mark.parametrize("target", dashboard_targets(), ids=lambda t: f"{t.panel}: {t.expr[:60]}")
def test_every_dashboard_query_returns_data(stack: Stack, target: Target) -> None:
    """Each PromQL query of the dashboard, its variables filled in, returns data from Prometheus with at least one
    finite value."""
    result = query(stack.prometheus, target.promql)
    assert result, f"no data for {target.panel!r}: {target.promql}"
    values = [float(sample["value"][1]) for sample in result]
    assert any(math.isfinite(v) for v in values), f"{target.panel!r} gives only {values}: {target.promql}"


def test_the_spec_figures_are_right(stack: Stack) -> None:
    """One successful and one failed spawn: half the attempts succeeded; a user active; nothing running."""
    figures = {}
    for target in dashboard_targets():
        if target.panel in ("Spawn success rate", "Active users (24 h)", "Running servers", "Total users"):
            (sample,) = query(stack.prometheus, target.promql)
            figures[target.panel] = float(sample["value"][1])
    assert figures["Spawn success rate"] == pytest.approx(0.5, abs=0.01)
    assert figures["Total users"] == 3  # the two driven users and the config's admin
    assert figures["Active users (24 h)"] >= 1
    assert figures["Running servers"] == 0


def test_the_variables_list_the_hub(stack: Stack) -> None:
    """The ``job`` and ``instance`` variables are ``label_values`` queries whose values in Prometheus include
    ``jupyterhub`` and the hub's host and port."""
    board = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in board["templating"]["list"]}
    for name, expected in (("job", "jupyterhub"), ("instance", stack.hub.url.removeprefix("http://"))):
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", variables[name]["definition"])
        assert match, variables[name]["definition"]
        selector, label = match.group(1).replace("$job", "jupyterhub"), match.group(2)
        body = requests.get(
            f"{stack.prometheus}/api/v1/label/{label}/values", params={"match[]": selector}, timeout=10
        ).json()
        assert expected in body["data"], (name, body)


def test_latency_exemplars_open_traces_the_hub_sent(stack: Stack) -> None:
    """Each exemplar query finds exemplars in Prometheus, and their trace ids are traces the OTLP receiver got."""
    sent = {span.trace_id for span in stack.receiver.spans()}
    now = time.time()
    for target in dashboard_targets():
        if not target.exemplar:
            continue
        body = requests.get(
            f"{stack.prometheus}/api/v1/query_exemplars",
            params={"query": target.promql, "start": now - 600, "end": now},
            timeout=10,
        ).json()
        assert body["status"] == "success", body
        trace_ids = {e["labels"]["trace_id"] for series in body["data"] for e in series["exemplars"]}
        assert trace_ids, f"no exemplar for {target.panel!r}"
        assert trace_ids <= sent | _late(stack, trace_ids), f"{target.panel!r}: exemplars of unknown traces"
        assert {len(t) for t in trace_ids} == {32}


def _late(stack: Stack, wanted: set[str], timeout: float = 10) -> set[str]:
    """Trace ids of spans still in the hub's export queue: wait for them a little."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = {span.trace_id for span in stack.receiver.spans()}
        if wanted <= got:
            return got
        time.sleep(0.5)
    return {span.trace_id for span in stack.receiver.spans()}
