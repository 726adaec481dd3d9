"""Grafana provisioning: the data sources, links and dashboard folder that the dashboard and compose file name."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "collector-config" / "grafana"
DATASOURCES = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "datasources.yml").read_text())["datasources"]
PROVIDERS = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "dashboards.yml").read_text())["providers"]
DASHBOARD = json.loads((GRAFANA / "dashboards" / "jupyterhub.json").read_text())
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def uids() -> dict[str, str]:
    return {source["uid"]: source["type"] for source in DATASOURCES}


def test_prometheus_tempo_and_jaeger_each_once() -> None:
    """The data sources are one Prometheus, one Tempo and one Jaeger, Prometheus the only default."""
    assert sorted(uids().values()) == ["jaeger", "prometheus", "tempo"]
    assert [s["name"] for s in DATASOURCES if s.get("isDefault")] == ["Prometheus"]


def test_every_link_between_data_sources_names_one_that_exists() -> None:
    """Every ``datasourceUid`` in the data sources names a provisioned one, and Prometheus's one exemplar link sends
    ``trace_id`` to Tempo."""
    links = re.findall(r"'datasourceUid': '([^']*)'", str(DATASOURCES))
    assert links and set(links) <= set(uids())
    prometheus = next(s for s in DATASOURCES if s["type"] == "prometheus")
    (exemplar,) = prometheus["jsonData"]["exemplarTraceIdDestinations"]
    # the label jh_otel's exemplars carry (jh_otel.hooks.exemplars.current_exemplar)
    assert exemplar == {"name": "trace_id", "datasourceUid": "tempo"}


def test_data_source_urls_name_compose_services_and_their_ports() -> None:
    """Each data source URL names a compose service and its port (Prometheus 9090, Tempo 3200, Jaeger 16686)."""
    ports = {"prometheus": 9090, "tempo": 3200, "jaeger": 16686}
    for source in DATASOURCES:
        host, port = re.fullmatch(r"http://([\w-]+):(\d+)", source["url"]).groups()
        assert host in COMPOSE["services"], source["url"]
        assert int(port) == ports[host]


def test_the_dashboard_queries_the_provisioned_prometheus() -> None:
    """The dashboard's data-source variable defaults to the provisioned Prometheus, and every panel's and target's data
    source is unset or ``${datasource}`` of type ``prometheus``."""
    (variable,) = [v for v in DASHBOARD["templating"]["list"] if v["type"] == "datasource"]
    assert variable["current"]["value"] in uids() and uids()[variable["current"]["value"]] == "prometheus"
    for panel in DASHBOARD["panels"]:
        for source in [panel.get("datasource")] + [t["datasource"] for t in panel.get("targets", [])]:
            assert source in (None, {"type": "prometheus", "uid": "${datasource}"}), panel["title"]


def test_the_dashboard_folder_is_where_compose_mounts_the_dashboards() -> None:
    """The one dashboard provider reads the folder where compose mounts ``collector-config/grafana/dashboards``, and the
    provisioning folder is mounted at ``/etc/grafana/provisioning``."""
    (provider,) = PROVIDERS
    mounts = [m.split(":") for m in COMPOSE["services"]["grafana"]["volumes"]]
    targets = {host: target for host, target, *_ in mounts}
    assert targets["./collector-config/grafana/dashboards"] == provider["options"]["path"]
    assert targets["./collector-config/grafana/provisioning"] == "/etc/grafana/provisioning"


def test_panel_ids_are_unique_and_the_grid_does_not_overlap() -> None:
    """Panel ids are unique, and every panel fits the 24 columns without sharing a grid cell with another."""
    panels = DASHBOARD["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine


def test_the_dashboard_file_is_what_the_generator_writes() -> None:
    """``scripts/grafana_dashboard.py --check`` exits 0: the dashboard file is what the generator writes."""
    script = ROOT / "scripts" / "grafana_dashboard.py"
    checked = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
