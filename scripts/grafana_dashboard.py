"""Writes collector-config/grafana/dashboards/jupyterhub.json, the provisioned JupyterHub dashboard.

The panels are declared once below (title, kind, queries); this script lays them out and renders Grafana's JSON.
``tests/unit/test_stack_dashboard.py`` fails when the committed JSON differs from what this script writes, and
``tests/e2e/test_dashboard.py`` runs every query of the JSON against a real Prometheus scraping a driven hub.

    python scripts/grafana_dashboard.py          # rewrite the JSON
    python scripts/grafana_dashboard.py --check  # exit 1 if the JSON is stale
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

OUTPUT = Path(__file__).resolve().parents[1] / "collector-config" / "grafana" / "dashboards" / "jupyterhub.json"
PROMETHEUS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'job=~"$job", instance=~"$instance"'
"""Every hub query's selector: the dashboard's job and instance variables."""
PROXY = 'job="configurable-http-proxy"'
"""The proxy row's selector: configurable-http-proxy's own metrics (prometheus.yml's job of that name)."""


def rate(metric: str, by: str = "", extra: str = "", window: str = "$__rate_interval", selector: str = SEL) -> str:
    labels = f"{selector}, {extra}" if extra else selector
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({metric}{{{labels}}}[{window}]))"


def quantile(q: float, histogram: str, by: str = "") -> str:
    return f"histogram_quantile({q}, {rate(histogram + '_bucket', ', '.join(filter(None, ['le', by])))})"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    exemplar: bool = False
    """Show exemplars (points that open the trace of one observation) on this query."""


@dataclass(frozen=True)
class Panel:
    title: str
    kind: str  # stat, timeseries, heatmap
    queries: tuple[Query, ...]
    description: str = ""
    unit: str = "short"
    width: int = 8
    options: dict = field(default_factory=dict)


def q(expr: str, legend: str = "", exemplar: bool = False) -> Query:
    return Query(expr, legend, exemplar)


def phases_panel(q_: float, description: str) -> Panel:
    """The spawn phases at quantile ``q_``, stacked per profile."""
    return Panel(
        f"Spawn phases p{round(q_ * 100)} by profile",
        "timeseries",
        (q(quantile(q_, "jupyterhub_spawn_phase_duration_seconds", "phase, profile"), "{{profile}}: {{phase}}"),),
        description,
        unit="s",
        width=12,
        options={"stacking": {"mode": "normal"}},
    )


ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    (
        "Users",
        (
            Panel(
                "Active users (24 h)",
                "stat",
                (q(f'max(jupyterhub_active_users{{{SEL}, period="24h"}})'),),
                "Users whose last activity is within the last 24 hours (the hub's own count, refreshed every "
                "OTEL_PYTHON_JUPYTERHUB_REFRESH_INTERVAL).",
                width=6,
            ),
            Panel("Total users", "stat", (q(f"max(jupyterhub_total_users{{{SEL}}})"),), width=6),
            Panel(
                "Active users by period",
                "timeseries",
                (q(f"max by (period) (jupyterhub_active_users{{{SEL}}})", "{{period}}"),),
                width=6,
            ),
            Panel(
                "Logins",
                "timeseries",
                (
                    q(rate("jupyterhub_login_success_total"), "success"),
                    q(rate("jupyterhub_login_failure_total"), "failure"),
                ),
                "Login attempts per second, by outcome.",
                unit="reqps",
                width=6,
            ),
        ),
    ),
    (
        "Servers",
        (
            Panel("Running servers", "stat", (q(f"sum(jupyterhub_running_servers{{{SEL}}})"),), width=4),
            Panel(
                "Average spawn time",
                "stat",
                (
                    q(
                        f"{rate('jupyterhub_spawn_duration_seconds_sum', window='$__range')} / "
                        f"{rate('jupyterhub_spawn_duration_seconds_count', window='$__range')}"
                    ),
                ),
                "Mean duration of the spawns in the dashboard's time range (User.spawn, successful or not).",
                unit="s",
                width=4,
            ),
            Panel(
                "Spawn success rate",
                "stat",
                (
                    q(
                        f"{rate('jupyterhub_spawn_success_total', window='$__range')} / "
                        f"{rate('jupyterhub_spawn_duration_seconds_count', window='$__range')}"
                    ),
                ),
                "Successful spawns over all spawn attempts (User.spawn calls) in the time range.",
                unit="percentunit",
                width=4,
            ),
            Panel(
                "Pending servers",
                "timeseries",
                (
                    q(f"max(jupyterhub_pending_servers{{{SEL}}})", "all"),
                    q(f"sum by (kind) (jupyterhub_pending_servers_by_kind{{{SEL}}})", "{{kind}}"),
                ),
                "Servers with an operation in progress: all of them, and by kind (spawn, stop, check).",
                width=6,
            ),
            Panel(
                "Spawns and stops",
                "timeseries",
                (
                    q(rate("jupyterhub_spawn_success_total"), "spawned"),
                    q(
                        f"{rate('jupyterhub_spawn_duration_seconds_count')} - {rate('jupyterhub_spawn_success_total')}",
                        "failed",
                    ),
                    q(rate("jupyterhub_server_stop_seconds_count", "status"), "stopped: {{status}}"),
                ),
                "Spawn attempts that failed are attempts minus successes (jupyterhub_spawn_failure_total has the "
                "error types, but a new error type's first failure is invisible to rate()).",
                unit="ops",
                width=6,
            ),
            Panel(
                "Spawn duration",
                "heatmap",
                (q(rate("jupyterhub_server_spawn_duration_seconds_bucket", "le"), "{{le}}"),),
                "JupyterHub's own spawn histogram (Spawner.start until the server answers), per bucket.",
                unit="s",
                width=12,
                options={"calculate": False, "yAxis": {"unit": "s"}, "cellGap": 1},
            ),
            Panel(
                "Server polls",
                "timeseries",
                (q(rate("jupyterhub_server_poll_duration_seconds_count", "status"), "{{status}}"),),
                "Spawner.poll calls per second, by what they found.",
                unit="ops",
                width=12,
            ),
        ),
    ),
    (
        "Spawn phases",
        (
            phases_panel(
                0.5,
                "Median time of each phase of a spawn, stacked, per profile (the profile a spawn's user_options "
                "name; empty without one): prepare, start, wait_up, proxy for every spawner; scheduling, image_pull "
                "and container_start from KubeSpawner's Kubernetes events.",
            ),
            phases_panel(0.95, "95th percentile of each phase, stacked, per profile."),
            Panel(
                "Slowest phase",
                "timeseries",
                (q(f"topk(1, {quantile(0.95, 'jupyterhub_spawn_phase_duration_seconds', 'phase')})", "{{phase}}"),),
                "The phase with the highest 95th percentile over time: where spawns lose their time.",
                unit="s",
            ),
            Panel(
                "Spawn time by profile",
                "timeseries",
                (
                    q(
                        quantile(0.5, "jupyterhub_spawn_profile_duration_seconds", "profile"),
                        "p50 {{profile}}",
                        True,
                    ),
                    q(quantile(0.95, "jupyterhub_spawn_profile_duration_seconds", "profile"), "p95 {{profile}}", True),
                ),
                "Whole spawns (User.spawn until the route is added) per profile. The points are exemplars: each "
                "opens the trace of one spawn (OTEL_PYTHON_JUPYTERHUB_EXEMPLARS=on); its jupyterhub.spawn log "
                "record has the same phases.",
                unit="s",
            ),
            Panel(
                "Spawn success rate by profile",
                "timeseries",
                (
                    q(
                        f"sum by (profile) (rate(jupyterhub_spawn_profile_duration_seconds_count{{{SEL}, "
                        f'status="success"}}[$__range])) / sum by (profile) '
                        f"(rate(jupyterhub_spawn_profile_duration_seconds_count{{{SEL}}}[$__range]) > 0)",
                        "{{profile}}",
                    ),
                ),
                "Spawns that ended with their route added, over all spawns of the profile, in the time range.",
                unit="percentunit",
            ),
        ),
    ),
    (
        "Performance",
        (
            Panel(
                "API request rate",
                "stat",
                (q(rate("jupyterhub_api_request_duration_seconds_count")),),
                "REST API requests per second (under /hub/api/).",
                unit="reqps",
                width=6,
            ),
            Panel(
                "Requests by status",
                "timeseries",
                (q(rate("jupyterhub_request_duration_seconds_count", "code"), "{{code}}"),),
                unit="reqps",
                width=6,
            ),
            Panel(
                "Request latency p95 by handler",
                "timeseries",
                (q(quantile(0.95, "jupyterhub_request_duration_seconds", "handler"), "{{handler}}", True),),
                "95th percentile of every request the hub answers, by tornado handler. The points are exemplars: "
                "each opens the trace of one request (OTEL_PYTHON_JUPYTERHUB_EXEMPLARS=on).",
                unit="s",
                width=12,
            ),
            Panel(
                "API latency p95 by endpoint",
                "timeseries",
                (
                    q(
                        quantile(0.95, "jupyterhub_api_request_duration_seconds", "method, endpoint"),
                        "{{method}} {{endpoint}}",
                        True,
                    ),
                ),
                unit="s",
                width=12,
            ),
            Panel(
                "Page latency p95",
                "timeseries",
                (q(quantile(0.95, "jupyterhub_hub_response_duration_seconds"), "p95", True),),
                "Requests outside the REST API: what a browser waits for.",
                unit="s",
                width=12,
            ),
            Panel(
                "Proxy operations",
                "timeseries",
                (
                    q(rate("jupyterhub_proxy_add_duration_seconds_count", "status"), "add route: {{status}}"),
                    q(rate("jupyterhub_proxy_delete_duration_seconds_count", "status"), "delete route: {{status}}"),
                    q(rate("jupyterhub_proxy_poll_duration_seconds_count"), "poll routes"),
                    q(rate("jupyterhub_check_routes_duration_seconds_count"), "check routes"),
                ),
                unit="ops",
                width=12,
            ),
            Panel(
                "Health checks",
                "timeseries",
                (
                    q(f"min(up{{{SEL}}})", "scraped (1 = up)"),
                    q(f"min by (check) (jupyterhub_health_check_status{{{SEL}}})", "check {{check}}"),
                    q(
                        rate(
                            "jupyterhub_request_duration_seconds_count",
                            "code",
                            'handler="jupyterhub.handlers.pages.HealthCheckHandler"',
                        ),
                        "/hub/health: {{code}}",
                    ),
                ),
                "Whether Prometheus can scrape the hub, jh_otel's health checks (1 healthy, 0 unhealthy, -1 error: "
                "details at /hub/api/jh-otel/health), and the answers of /hub/health (what load balancers and "
                "Kubernetes probes ask).",
                width=12,
            ),
        ),
    ),
    (
        "Proxy",
        (
            Panel(
                "Proxied requests by status",
                "timeseries",
                (q(rate("requests_proxy", "status", selector=PROXY), "{{status}}"),),
                "Requests configurable-http-proxy forwarded (to the hub and to user servers), by the status the "
                "user got: 503 is a route to a server that is gone, 502 a target that refused the connection.",
                unit="reqps",
            ),
            Panel(
                "Route lookup latency",
                "timeseries",
                (
                    q(
                        f"{rate('find_target_for_req_sum', selector=PROXY)} / "
                        f"{rate('find_target_for_req_count', selector=PROXY)}",
                        "mean",
                    ),
                    q(f'max(find_target_for_req{{{PROXY}, quantile="0.99"}})', "p99 since the proxy started"),
                ),
                "Time the proxy takes to find the target of a request in its routing table, on every request it "
                "forwards (its summary's quantiles cover the proxy's whole life, the mean the rate window).",
                unit="s",
            ),
            Panel(
                "Route API calls",
                "timeseries",
                (
                    q(rate("api_route_add", selector=PROXY), "add"),
                    q(rate("api_route_delete", selector=PROXY), "delete"),
                    q(rate("api_route_get", selector=PROXY), "get"),
                    q(rate("requests_api", "status", selector=PROXY), "API answers: {{status}}"),
                ),
                "The hub's calls to the proxy's REST API: routes added at spawns, deleted at stops, read at route "
                "checks; and the API's answers by status.",
                unit="ops",
            ),
            Panel(
                "Proxy and hub restarts",
                "timeseries",
                (
                    q(f"sum(changes(process_start_time_seconds{{{PROXY}}}[$__range]))", "proxy"),
                    q(f"sum(changes(process_start_time_seconds{{{SEL}}}[$__range]))", "hub"),
                ),
                "Process starts within the dashboard's time range (alerts ConfigurableHTTPProxyRestarted and "
                "JupyterHubRestarted): a proxy restart loses its routes until the hub restores them.",
                width=12,
            ),
            Panel(
                "Last-activity updates",
                "timeseries",
                (
                    q(
                        f"{rate('last_activity_updating_sum', selector=PROXY)} / "
                        f"{rate('last_activity_updating_count', selector=PROXY)}",
                        "mean",
                    ),
                ),
                "Time the proxy spends recording a route's last activity (what the hub reads to cull idle servers).",
                unit="s",
                width=12,
            ),
        ),
    ),
    (
        "System",
        (
            Panel(
                "Hub memory",
                "timeseries",
                (
                    q(f"max(jupyterhub_hub_memory_usage_bytes{{{SEL}}})", "resident"),
                    q(f"max(jupyterhub_hub_memory_total_bytes{{{SEL}}})", "limit"),
                ),
                "The hub process's resident memory, and the host's memory or the hub's cgroup limit if lower.",
                unit="bytes",
            ),
            Panel(
                "Hub CPU",
                "timeseries",
                (q(f"max(jupyterhub_hub_cpu_usage_percent{{{SEL}}})", "hub process"),),
                "Percent of one core.",
                unit="percent",
            ),
            Panel(
                "Event-loop lag",
                "timeseries",
                (
                    q(quantile(0.5, "jupyterhub_event_loop_interval_seconds"), "p50"),
                    q(quantile(0.99, "jupyterhub_event_loop_interval_seconds"), "p99"),
                ),
                "JupyterHub's own measure of its event loop's tick interval: a healthy hub stays near the "
                "resolution (50 ms); above it the loop was blocked.",
                unit="s",
            ),
        ),
    ),
)


def _target(query: Query, ref: str, kind: str) -> dict:
    return {
        "datasource": PROMETHEUS,
        "expr": query.expr,
        "legendFormat": query.legend or "__auto",
        "refId": ref,
        "exemplar": query.exemplar,
        "range": True,
        "instant": False,
        **({"format": "heatmap"} if kind == "heatmap" else {}),
    }


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict:
    height = 4 if panel.kind == "stat" else 8
    body: dict = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": PROMETHEUS,
        "gridPos": {"h": height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": dict(panel.options),
        "targets": [_target(query, chr(ord("A") + i), panel.kind) for i, query in enumerate(panel.queries)],
    }
    if panel.kind == "stat":
        body["options"].update({"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}})
    return body


def _variable(name: str, label: str, query: str, include_all: bool, current: str) -> dict:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": PROMETHEUS,
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,
        "includeAll": include_all,
        "multi": include_all,
        "allValue": ".*" if include_all else None,
        "current": {"text": current, "value": current},
        "sort": 1,
    }


def dashboard() -> dict:
    panels: list[dict] = []
    y = 0
    for row_title, row_panels in ROWS:
        panels.append(
            {
                "id": len(panels) + 1,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        y, x, line_height = y + 1, 0, 0
        for panel in row_panels:
            if x + panel.width > 24:
                y, x, line_height = y + line_height, 0, 0
            rendered = _panel(panel, len(panels) + 1, x, y)
            panels.append(rendered)
            x += panel.width
            line_height = max(line_height, rendered["gridPos"]["h"])
        y += line_height
    return {
        "uid": "jupyterhub-otel",
        "title": "JupyterHub",
        "description": "JupyterHub instrumented with jh_otel: users, servers, spawn phases, performance, the proxy, "
        "system.",
        "tags": ["jupyterhub", "jh_otel"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {"text": "Prometheus", "value": "prometheus"},
                },
                _variable("job", "Job", "label_values(jupyterhub_total_users, job)", False, "jupyterhub"),
                _variable(
                    "instance",
                    "Instance",
                    'label_values(jupyterhub_total_users{job=~"$job"}, instance)',
                    include_all=True,
                    current="$__all",
                ),
            ]
        },
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is stale: run python scripts/grafana_dashboard.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
