"""The docker-compose operator stack (docker-compose.yml, Dockerfile, collector-config/) holds together: every
component the collector names exists and is used, every address one service gives another names a compose service
and a port that service listens on, every published port stays on loopback, every mounted file exists and is what
the program reading it expects, the hub's config grants its token ``read:metrics``, and the alert webhook logs
what Alertmanager sends. Fast, no network beyond loopback, no Docker engine (``docker-compose config`` only)."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from traitlets.config import Config

from jh_otel.settings import VARIABLES, parse_settings

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "collector-config"
COMPOSE_FILE = ROOT / "docker-compose.yml"
HUB_CONFIG = CONFIG_DIR / "hub" / "jupyterhub_config.py"
HUB_ENTRYPOINT = CONFIG_DIR / "hub" / "entrypoint.sh"
WEBHOOK = CONFIG_DIR / "alert-webhook.py"
DEFAULT_TOKEN_FILE = "/srv/jupyterhub/secrets/jupyterhub-metrics-token"
ADMIN_PASSWORD = "compose-admin-password-0123456789abcdef"
try:
    SHARED_PASSWORD = importlib.util.find_spec("jupyterhub.authenticators.shared") is not None
except ModuleNotFoundError:  # JupyterHub before 5.3 has no jupyterhub.authenticators package at all
    SHARED_PASSWORD = False
"""Whether this JupyterHub has SharedPasswordAuthenticator (5.3+), which the hub config then uses."""

# Components of otelcol-contrib (https://github.com/open-telemetry/opentelemetry-collector-releases, distribution
# otelcol-contrib) this stack may use, by kind: a typo or a component only another distribution ships fails here
# instead of at the collector's start. Extend it when the config needs more.
CONTRIB_COMPONENTS = {
    "receivers": {"otlp", "prometheus", "hostmetrics", "filelog", "jaeger", "zipkin", "docker_stats", "httpcheck"},
    "processors": {
        "memory_limiter",
        "batch",
        "tail_sampling",
        "probabilistic_sampler",
        "attributes",
        "resource",
        "resourcedetection",
        "transform",
        "filter",
        "groupbytrace",
    },
    "exporters": {"otlp", "otlphttp", "prometheus", "prometheusremotewrite", "debug", "file", "loadbalancing"},
    "extensions": {"health_check", "pprof", "zpages", "file_storage", "basicauth", "bearertokenauth"},
    "connectors": {"spanmetrics", "servicegraph", "forward", "count"},
}
PIPELINE_KINDS = ("receivers", "processors", "exporters")
# Exporters that listen (someone scrapes them) rather than send: their endpoint is a bind address.
LISTENING_EXPORTERS = {"prometheus"}
ANY_ADDRESS = {"0.0.0.0", "::", "[::]", ""}

# Ports the images listen on with their defaults (not configured by a file of this repository).
IMAGE_PORTS = {
    "prom/prometheus": {9090},
    "prom/alertmanager": {9093},
    "jaegertracing/all-in-one": {4317, 4318, 16686},
    "grafana/grafana": {3000},
}
# What the file each program reads with --config.file (or -config.file, --config) must contain at its top level.
CONFIG_KIND = {
    "otel/opentelemetry-collector-contrib": "service",
    "grafana/tempo": "distributor",
    "prom/prometheus": "scrape_configs",
    "prom/alertmanager": "route",
}
CONFIG_FLAG = re.compile(r"^--?config(?:\.file)?=(?P<path>.+)$")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


COMPOSE = load_yaml(COMPOSE_FILE)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
COLLECTOR = load_yaml(CONFIG_DIR / "otel-collector.yml")
TEMPO = load_yaml(CONFIG_DIR / "tempo.yml")
PROMETHEUS = load_yaml(CONFIG_DIR / "prometheus.yml")
ALERTMANAGER = load_yaml(CONFIG_DIR / "alertmanager.yml")


# --- helpers ---------------------------------------------------------------------------------------------------


def component_type(component_id: str) -> str:
    return component_id.split("/", 1)[0]


def host_port(address: str) -> tuple[str, int]:
    """``host:port`` or a URL (``http://host:port/path``; the scheme's port when none is given)."""
    if "://" in address:
        parts = urlsplit(address)
        port = parts.port or {"http": 80, "https": 443}[parts.scheme]
        return parts.hostname or "", port
    host, _, port = address.rpartition(":")
    return host, int(port)


def image_repo(service: dict[str, Any]) -> str:
    image = service.get("image", "")
    name, _, tag = image.rpartition(":")
    return name if name and "/" not in tag else image


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else [str(arg) for arg in cmd]


def mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(type, source, target) of each volume entry: type "bind" or "volume"."""
    result = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            result.append((entry["type"], str(entry.get("source", "")), entry["target"]))
            continue
        source, target = entry.split(":")[:2]
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        result.append((kind, source, target))
    return result


def bind_mounts() -> list[tuple[str, str, str]]:
    """(service, host path, container path) of every bind mount."""
    return [
        (name, source, target)
        for name, service in SERVICES.items()
        for kind, source, target in mounts(service)
        if kind == "bind"
    ]


def published_ports(service: dict[str, Any]) -> list[tuple[str | None, int]]:
    """(host ip or None, container port) of each published port."""
    result: list[tuple[str | None, int]] = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            result.append((entry.get("host_ip"), int(entry["target"])))
            continue
        parts = str(entry).split("/", 1)[0].split(":")
        ip = parts[0] if len(parts) == 3 else None
        result.append((ip, int(parts[-1])))
    return result


def exec_hub_config(token_file: Path | None = None, **env: str) -> Config:
    """Run collector-config/hub/jupyterhub_config.py the way JupyterHub's loader does, with a fresh Config."""
    config = Config()
    saved = dict(os.environ)
    try:
        os.environ.pop("JUPYTERHUB_METRICS_TOKEN_FILE", None)
        os.environ.pop("JUPYTERHUB_DEMO_PASSWORD", None)
        # a fixed admin password unless the test says otherwise: the default data dir does not exist here
        os.environ["JUPYTERHUB_DEMO_ADMIN_PASSWORD"] = ADMIN_PASSWORD
        if token_file is not None:
            os.environ["JUPYTERHUB_METRICS_TOKEN_FILE"] = str(token_file)
        os.environ.update(env)
        namespace = {"get_config": lambda: config, "__file__": str(HUB_CONFIG), "__name__": "__main__"}
        exec(compile(HUB_CONFIG.read_text(), str(HUB_CONFIG), "exec"), namespace)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return config


def _bound(endpoint: str, where: str) -> int:
    host, port = host_port(endpoint)
    assert host in ANY_ADDRESS, f"{where} listens on {host}: other containers cannot reach it, use 0.0.0.0"
    return port


def collector_ports() -> set[int]:
    ports = set()
    for receiver_id, receiver in (COLLECTOR.get("receivers") or {}).items():
        for protocol, settings in ((receiver or {}).get("protocols") or {}).items():
            ports.add(_bound(settings["endpoint"], f"collector receiver {receiver_id} {protocol}"))
    for exporter_id, exporter in (COLLECTOR.get("exporters") or {}).items():
        if component_type(exporter_id) in LISTENING_EXPORTERS:
            ports.add(_bound(exporter["endpoint"], f"collector exporter {exporter_id}"))
    for extension_id, extension in (COLLECTOR.get("extensions") or {}).items():
        if extension and "endpoint" in extension:
            ports.add(_bound(extension["endpoint"], f"collector extension {extension_id}"))
    metrics = COLLECTOR["service"].get("telemetry", {}).get("metrics", {})
    if "address" in metrics:
        ports.add(_bound(metrics["address"], "collector telemetry"))
    for reader in metrics.get("readers", []):
        prometheus = reader.get("pull", {}).get("exporter", {}).get("prometheus")
        if prometheus:
            ports.add(_bound(f"{prometheus.get('host', 'localhost')}:{prometheus['port']}", "collector telemetry"))
    return ports


def proxy_metrics_ports(hub_config: Config) -> set[int]:
    """The port configurable-http-proxy serves its metrics on, from the flags of the hub's proxy command."""
    command = list(hub_config.ConfigurableHTTPProxy.get("command", []))
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in command[1:] if arg.startswith("--") and "=" in arg)
    if "metrics-port" not in flags:
        return set()
    assert flags.get("metrics-ip") in ANY_ADDRESS, f"proxy metrics on {flags.get('metrics-ip')!r}: not reachable"
    return {int(flags["metrics-port"])}


def tempo_ports() -> set[int]:
    ports = {int(TEMPO["server"]["http_listen_port"])}
    for protocol, settings in TEMPO["distributor"]["receivers"]["otlp"]["protocols"].items():
        ports.add(_bound(settings["endpoint"], f"tempo otlp {protocol}"))
    return ports


@pytest.fixture
def hub_config(tmp_path: Path) -> Config:
    token = tmp_path / "jupyterhub-metrics-token"
    token.write_text("0123456789abcdef0123456789abcdef\n")
    return exec_hub_config(token)


@pytest.fixture
def listening(hub_config: Config) -> dict[str, set[int]]:
    """The ports each compose service listens on, read from the configs (or the image's defaults)."""
    ports: dict[str, set[int]] = {}
    for name, service in SERVICES.items():
        repo = image_repo(service)
        env = environment(service)
        found = set(IMAGE_PORTS.get(repo, set()))
        if name == "hub":
            found.add(int(hub_config.JupyterHub.port))
            found |= proxy_metrics_ports(hub_config)
        elif repo == "otel/opentelemetry-collector-contrib":
            found |= collector_ports()
        elif repo == "grafana/tempo":
            found |= tempo_ports()
        elif name == "alert-webhook":
            found.add(int(env.get("ALERT_WEBHOOK_PORT", "5001")))
        ports[name] = found
    return ports


def assert_reaches(address: str, listening: dict[str, set[int]], who: str) -> str:
    host, port = host_port(address)
    assert host in SERVICES, f"{who}: {address!r} names {host!r}, not a service of docker-compose.yml"
    assert port in listening[host], f"{who}: {address!r}: {host} listens on {sorted(listening[host])}, not {port}"
    return host


# --- the collector ---------------------------------------------------------------------------------------------


def test_every_collector_component_is_defined_and_used() -> None:
    """The receivers, processors and exporters the collector defines are exactly those its pipelines use, its extensions
    exactly those enabled, and every pipeline has receivers and exporters."""
    pipelines = COLLECTOR["service"]["pipelines"]
    for kind in PIPELINE_KINDS:
        defined = set(COLLECTOR.get(kind) or {})
        used = {component for pipeline in pipelines.values() for component in pipeline.get(kind, [])}
        assert used <= defined, f"{kind} used but not defined: {sorted(used - defined)}"
        assert defined <= used, f"{kind} defined but in no pipeline: {sorted(defined - used)}"
    defined = set(COLLECTOR.get("extensions") or {})
    used = set(COLLECTOR["service"].get("extensions") or [])
    assert used == defined, f"extensions defined {sorted(defined)}, enabled {sorted(used)}"
    for name, pipeline in pipelines.items():
        assert pipeline.get("receivers") and pipeline.get("exporters"), f"pipeline {name} is incomplete"


def test_every_pipeline_starts_with_memory_limiter_and_ends_with_batch() -> None:
    """Every collector pipeline's processors start with a ``memory_limiter`` and end with a ``batch``."""
    for name, pipeline in COLLECTOR["service"]["pipelines"].items():
        processors = [component_type(p) for p in pipeline.get("processors", [])]
        assert processors[:1] == ["memory_limiter"], f"pipeline {name}: {processors}"
        assert processors[-1:] == ["batch"], f"pipeline {name}: {processors}"


def test_collector_components_ship_with_otelcol_contrib() -> None:
    """Every collector component is of a type otelcol-contrib ships, and every pipeline is of type ``traces``,
    ``metrics`` or ``logs``."""
    for kind, allowed in CONTRIB_COMPONENTS.items():
        for component_id in COLLECTOR.get(kind) or {}:
            assert component_type(component_id) in allowed, f"{kind} {component_id!r} is not in otelcol-contrib"
    for name in COLLECTOR["service"]["pipelines"]:
        assert component_type(name) in {"traces", "metrics", "logs"}, name


def test_tail_sampling_keeps_errors_and_slow_traces() -> None:
    """A ``tail_sampling`` processor keeps ERROR traces (``status_code`` policy) and slow ones (``latency`` policy with
    a positive threshold), and every traces pipeline uses one."""
    samplers = [p for p_id, p in COLLECTOR["processors"].items() if component_type(p_id) == "tail_sampling"]
    assert samplers, "no tail_sampling processor"
    policies = samplers[0]["policies"]
    assert any(
        policy["type"] == "status_code" and "ERROR" in policy["status_code"]["status_codes"] for policy in policies
    ), policies
    assert any(policy["type"] == "latency" and policy["latency"]["threshold_ms"] > 0 for policy in policies), policies
    traces = [p for name, p in COLLECTOR["service"]["pipelines"].items() if component_type(name) == "traces"]
    for pipeline in traces:
        assert "tail_sampling" in map(component_type, pipeline["processors"])


def test_traces_are_exported_to_tempo_and_jaeger() -> None:
    """Every traces pipeline exports to a compose service of a ``grafana`` image (Tempo) and to one of a
    ``jaegertracing`` image."""
    for name, pipeline in COLLECTOR["service"]["pipelines"].items():
        if component_type(name) != "traces":
            continue
        images = set()
        for exporter_id in pipeline["exporters"]:
            endpoint = COLLECTOR["exporters"][exporter_id].get("endpoint")
            if endpoint and host_port(endpoint)[0] in SERVICES:
                images.add(image_repo(SERVICES[host_port(endpoint)[0]]).split("/")[0])
        assert {"grafana", "jaegertracing"} <= images, f"pipeline {name} reaches {images}"


def test_collector_exporters_reach_compose_services(listening: dict[str, set[int]]) -> None:
    """Each collector exporter with an endpoint reaches a compose service on a port it listens on, except a listening
    ``prometheus`` exporter, which binds every address."""
    for exporter_id, exporter in COLLECTOR["exporters"].items():
        endpoint = (exporter or {}).get("endpoint")
        if endpoint is None:
            continue
        if component_type(exporter_id) in LISTENING_EXPORTERS:
            assert host_port(endpoint)[0] in ANY_ADDRESS, f"{exporter_id} must listen on 0.0.0.0 for Prometheus"
        else:
            assert_reaches(endpoint, listening, f"collector exporter {exporter_id}")


# --- docker-compose.yml ----------------------------------------------------------------------------------------


def test_docker_compose_accepts_the_file() -> None:
    """``docker-compose config -q`` accepts the compose file with exit 0 and no warning."""
    executable = shutil.which("docker-compose") or "/usr/bin/docker-compose"
    if not Path(executable).exists():
        pytest.fail("docker-compose not found: .ci/install-system.sh installs Debian's docker-compose (1.29)")
    env = {key: value for key, value in os.environ.items() if not key.startswith("COMPOSE_")}
    result = subprocess.run(
        [executable, "config", "-q"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stderr, result.stderr


def test_every_published_port_is_on_loopback_and_served(listening: dict[str, set[int]]) -> None:
    """Every published port is bound to ``127.0.0.1`` and is one its service listens on, with at least eight published
    in all."""
    published = 0
    for name, service in SERVICES.items():
        for ip, port in published_ports(service):
            published += 1
            assert ip == "127.0.0.1", f"{name} publishes {port} on {ip or 'every interface'}: bind 127.0.0.1"
            assert port in listening[name], f"{name} publishes {port} but listens on {sorted(listening[name])}"
    assert published >= 8


def test_named_volumes_are_declared() -> None:
    """The named volumes the services mount are exactly those the compose file declares."""
    declared = set(COMPOSE.get("volumes") or {})
    used = {source for service in SERVICES.values() for kind, source, _ in mounts(service) if kind == "volume"}
    assert used == declared, f"used {sorted(used)}, declared {sorted(declared)}"


@pytest.mark.parametrize(
    ("service", "source", "target"), bind_mounts(), ids=[f"{s}:{src}" for s, src, _ in bind_mounts()]
)
def test_bind_mounted_paths_exist(service: str, source: str, target: str) -> None:
    """Each bind-mounted host path exists inside the repository, a YAML file being a mapping and a Python file
    compiling."""
    # collector-config/grafana/ is written separately; these cases fail until it is in the tree.
    path = (ROOT / source).resolve()
    assert path.is_relative_to(ROOT), f"{service} mounts {source}, outside the repository"
    assert path.exists(), f"{service} mounts {source} at {target}, but it does not exist"
    if path.is_file() and path.suffix in {".yml", ".yaml"}:
        assert isinstance(load_yaml(path), dict), f"{source} is not a YAML mapping"
    if path.is_file() and path.suffix == ".py":
        compile(path.read_text(), str(path), "exec")


def test_every_config_flag_reads_a_mounted_file_of_its_kind() -> None:
    """Each ``--config.file``-style flag of a service reads a bind-mounted file with its program's top-level key,
    checked for the collector, Tempo, Prometheus and Alertmanager each."""
    checked = set()
    for name, service in SERVICES.items():
        binds = {target: source for kind, source, target in mounts(service) if kind == "bind"}
        for arg in command(service):
            match = CONFIG_FLAG.match(arg)
            if not match:
                continue
            target = match["path"]
            assert target in binds, f"{name} reads {target}, which no bind mount provides"
            kind = CONFIG_KIND[image_repo(service)]
            assert kind in load_yaml(ROOT / binds[target]), f"{name}: {binds[target]} has no {kind!r}"
            checked.add(image_repo(service))
    assert checked == set(CONFIG_KIND), f"config files checked for {sorted(checked)}"


def test_alert_webhook_runs_the_mounted_script() -> None:
    """The ``alert-webhook`` service runs a ``.py`` path that a bind mount provides from
    ``collector-config/alert-webhook.py``."""
    service = SERVICES["alert-webhook"]
    binds = {target: source for kind, source, target in mounts(service) if kind == "bind"}
    scripts = [arg for arg in command(service) if arg.endswith(".py")]
    assert scripts and scripts[0] in binds, command(service)
    assert (ROOT / binds[scripts[0]]).resolve() == WEBHOOK


# --- addresses between services --------------------------------------------------------------------------------


def test_prometheus_targets_are_compose_services_and_their_ports(listening: dict[str, set[int]]) -> None:
    """Every Prometheus scrape and alerting target is a compose service on a port it listens on, the hub and the
    collector's ``prometheus`` exporter among those scraped."""
    reached = set()
    for job in PROMETHEUS["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                reached.add(assert_reaches(target, listening, f"scrape job {job['job_name']}"))
    for alertmanager in PROMETHEUS["alerting"]["alertmanagers"]:
        for static in alertmanager["static_configs"]:
            for target in static["targets"]:
                assert_reaches(target, listening, "alerting")
    assert {"hub", "otel-collector"} <= reached
    scraped = {t for job in PROMETHEUS["scrape_configs"] for s in job["static_configs"] for t in s["targets"]}
    collector_metrics = f"otel-collector:{host_port(COLLECTOR['exporters']['prometheus']['endpoint'])[1]}"
    assert collector_metrics in scraped, f"nothing scrapes the collector's prometheus exporter ({collector_metrics})"


def test_collector_scrape_targets_are_compose_services_and_their_ports(listening: dict[str, set[int]]) -> None:
    """Every prometheus receiver of the collector scrapes a service on a port it listens on."""
    receivers = {i: r for i, r in COLLECTOR["receivers"].items() if component_type(i) == "prometheus"}
    assert receivers, "no prometheus receiver for configurable-http-proxy's metrics"
    for receiver_id, receiver in receivers.items():
        for job in receiver["config"]["scrape_configs"]:
            for static in job["static_configs"]:
                for target in static["targets"]:
                    assert_reaches(target, listening, f"collector {receiver_id} job {job['job_name']}")


def test_prometheus_scrapes_the_proxy_metrics_the_hub_turns_on(hub_config: Config) -> None:
    """The hub starts configurable-http-proxy with its metrics on the port of Prometheus' proxy job."""
    (job,) = [job for job in PROMETHEUS["scrape_configs"] if job["job_name"] == "configurable-http-proxy"]
    targets = [host_port(t) for s in job["static_configs"] for t in s["targets"]]
    assert targets == [("hub", port) for port in proxy_metrics_ports(hub_config)], targets


def test_urls_between_services_name_services_and_ports(listening: dict[str, set[int]]) -> None:
    """The hub's OTLP endpoint reaches the collector, Tempo's remote write reaches Prometheus and Alertmanager's
    webhooks reach ``alert-webhook``, each on a port that service listens on."""
    hub_env = environment(SERVICES["hub"])
    assert assert_reaches(hub_env["OTEL_EXPORTER_OTLP_ENDPOINT"], listening, "hub OTLP") == "otel-collector"
    for remote_write in TEMPO["metrics_generator"]["storage"]["remote_write"]:
        assert assert_reaches(remote_write["url"], listening, "tempo remote_write") == "prometheus"
    for receiver in ALERTMANAGER["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            assert assert_reaches(webhook["url"], listening, f"alertmanager {receiver['name']}") == "alert-webhook"


def test_services_depend_only_on_services() -> None:
    """Every ``depends_on`` entry names another compose service, never the service itself."""
    for name, service in SERVICES.items():
        depends = service.get("depends_on") or []
        for other in depends:
            assert other in SERVICES and other != name, f"{name} depends on {other}"


# --- the hub ---------------------------------------------------------------------------------------------------


def test_hub_config_gives_the_metrics_service_its_token_and_read_metrics(hub_config: Config) -> None:
    """The compose hub's config: its ports, the metrics service's token and role, its spawner and passwords."""
    assert hub_config.JupyterHub.port == 8000
    assert hub_config.JupyterHub.ip == "0.0.0.0"  # Prometheus scrapes hub:8000 from another container
    assert hub_config.JupyterHub.hub_ip == "127.0.0.1"
    services = {service["name"]: service for service in hub_config.JupyterHub.services}
    assert services["metrics"]["api_token"] == "0123456789abcdef0123456789abcdef"
    roles = [role for role in hub_config.JupyterHub.load_roles if "metrics" in role.get("services", [])]
    assert roles and all(role["scopes"] == ["read:metrics"] for role in roles), roles
    assert hub_config.JupyterHub.spawner_class == "simple"
    assert "--allow-root" in hub_config.Spawner.args
    if SHARED_PASSWORD:  # JupyterHub 5.3+ (the compose image's JupyterHub 6)
        assert hub_config.JupyterHub.authenticator_class.__name__ == "SharedPasswordAuthenticator"
        assert hub_config.SharedPasswordAuthenticator.user_password == "jh-otel-demo"
        assert hub_config.SharedPasswordAuthenticator.admin_password == ADMIN_PASSWORD
        assert "DummyAuthenticator" not in hub_config  # its password is deprecated since JupyterHub 5.3
    else:  # JupyterHub 5.0 to 5.2
        assert hub_config.JupyterHub.authenticator_class.__name__ == "DummyAuthenticator"
        assert hub_config.DummyAuthenticator.password == "jh-otel-demo"
    assert hub_config.Authenticator.admin_users == {"admin"}
    data = {target for kind, _, target in mounts(SERVICES["hub"]) if kind == "volume"}
    assert str(PurePosixPath(hub_config.JupyterHub.db_url.removeprefix("sqlite:///")).parent) in data
    assert str(PurePosixPath(hub_config.JupyterHub.cookie_secret_file).parent) in data


def test_hub_config_takes_the_password_from_the_environment(tmp_path: Path) -> None:
    """$JUPYTERHUB_DEMO_PASSWORD is the users' password."""
    token = tmp_path / "token"
    token.write_text("t" * 32)
    config = exec_hub_config(token, JUPYTERHUB_DEMO_PASSWORD="s3cret-passw0rd")
    section = (
        config.SharedPasswordAuthenticator.user_password if SHARED_PASSWORD else config.DummyAuthenticator.password
    )
    assert section == "s3cret-passw0rd"


@pytest.mark.skipif(
    not SHARED_PASSWORD,
    reason="admin passwords are SharedPasswordAuthenticator's (JupyterHub 5.3+, the compose image's JupyterHub 6)",
)
def test_hub_config_makes_an_admin_password_once_for_the_owner_only(tmp_path: Path) -> None:
    """Without $JUPYTERHUB_DEMO_ADMIN_PASSWORD, the first start writes one (0600, 32+ characters), later starts read it."""
    token = tmp_path / "token"
    token.write_text("t" * 32)
    env = {"JUPYTERHUB_DEMO_ADMIN_PASSWORD": "", "JUPYTERHUB_DATA_DIR": str(tmp_path)}
    first = exec_hub_config(token, **env).SharedPasswordAuthenticator.admin_password
    kept = tmp_path / "admin-password"
    assert len(first) >= 32 and kept.read_text() == first
    assert kept.stat().st_mode & 0o777 == 0o600
    assert exec_hub_config(token, **env).SharedPasswordAuthenticator.admin_password == first


def test_the_token_the_hub_writes_is_the_one_prometheus_reads() -> None:
    """The hub config without a token file fails on the default token path, which the entrypoint also uses, and
    Prometheus reads its ``credentials_file`` of that name from the hub's token volume, mounted read-only."""
    # the config's default path, the entrypoint's, and the volumes: hub writes, Prometheus reads
    with pytest.raises(FileNotFoundError) as missing:
        exec_hub_config(None)
    assert missing.value.filename == DEFAULT_TOKEN_FILE
    assert f"${{JUPYTERHUB_METRICS_TOKEN_FILE:-{DEFAULT_TOKEN_FILE}}}" in HUB_ENTRYPOINT.read_text()
    token_dir = str(PurePosixPath(DEFAULT_TOKEN_FILE).parent)
    hub_volume = {target: source for kind, source, target in mounts(SERVICES["hub"]) if kind == "volume"}[token_dir]

    prometheus = SERVICES["prometheus"]
    config_file = next(CONFIG_FLAG.match(arg)["path"] for arg in command(prometheus) if CONFIG_FLAG.match(arg))
    [job] = [job for job in PROMETHEUS["scrape_configs"] if job["job_name"] == "jupyterhub"]
    credentials = PurePosixPath(config_file).parent / job["authorization"]["credentials_file"]
    entries = [entry for entry in prometheus["volumes"] if isinstance(entry, str)]
    [volume_entry] = [entry for entry in entries if entry.split(":")[0] == hub_volume]
    source, target, *mode = volume_entry.split(":")
    assert credentials.parent == PurePosixPath(target), f"Prometheus reads {credentials}, the volume is at {target}"
    assert credentials.name == PurePosixPath(DEFAULT_TOKEN_FILE).name
    assert mode == ["ro"], "Prometheus only reads the token"


def test_hub_environment_is_valid_jh_otel_settings() -> None:
    """The hub service's ``OTEL_PYTHON_JUPYTERHUB_*`` variables are all known settings, and its environment parses
    without error, metrics exported over OTLP only and exemplars on."""
    env = environment(SERVICES["hub"])
    known = {variable.name for variable in VARIABLES}
    unknown = {key for key in env if key.startswith("OTEL_PYTHON_JUPYTERHUB_") and key not in known}
    assert not unknown, f"not jh_otel settings: {sorted(unknown)}"
    settings = parse_settings(env)
    assert settings.errors == ()
    # pushed over OTLP; Prometheus scrapes /hub/metrics (the exporter port would serve the same registry again)
    assert settings.metrics_exporters == ("otlp",)
    assert settings.exemplars == "on"  # the dashboard's latency panels open traces through them


def test_dockerfile_copies_files_that_exist_and_are_not_ignored() -> None:
    """The Dockerfile copies ``pyproject.toml``, ``src/`` and the hub config, every path it copies exists and none is
    excluded by ``.dockerignore``, and the hub config passes ``--allow-root``."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    sources = []
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            sources += [arg for arg in line.split()[1:-1] if not arg.startswith("--")]
    assert {"pyproject.toml", "src/", "collector-config/hub/jupyterhub_config.py"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
        parts = PurePosixPath(source).parts
        prefixes = {"/".join(parts[: i + 1]) for i in range(len(parts))}
        assert not prefixes & ignored, f"the Dockerfile copies {source}, which .dockerignore excludes"
    assert '"--allow-root"' in HUB_CONFIG.read_text()  # the image runs everything as root


# --- the alert webhook -----------------------------------------------------------------------------------------


def load_webhook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("alert_webhook", WEBHOOK)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def webhook() -> Iterator[tuple[str, io.StringIO]]:
    out = io.StringIO()
    server = load_webhook().make_server("127.0.0.1", 0, out)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", out
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def post(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


NOTIFICATION = {
    "version": "4",
    "groupKey": '{}:{alertname="JupyterHubDown"}',
    "truncatedAlerts": 0,
    "status": "firing",
    "receiver": "webhook",
    "groupLabels": {"alertname": "JupyterHubDown"},
    "commonLabels": {"alertname": "JupyterHubDown", "job": "jupyterhub", "severity": "critical"},
    "commonAnnotations": {},
    "externalURL": "http://alertmanager:9093",
    "alerts": [
        {
            "status": "firing",
            "labels": {
                "alertname": "JupyterHubDown",
                "instance": "hub:8000",
                "job": "jupyterhub",
                "severity": "critical",
            },
            "annotations": {"summary": "JupyterHub hub:8000 is down", "description": "two\nlines"},
            "startsAt": "2024-11-20T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph",
            "fingerprint": "0123456789abcdef",
        }
    ],
}


def test_alert_webhook_logs_one_line_per_alert(webhook: tuple[str, io.StringIO]) -> None:
    """The webhook logs one line per alert with its name, status, instance and summary, a newline in a summary not
    splitting the line."""
    url, out = webhook
    assert post(f"{url}/alerts", json.dumps(NOTIFICATION).encode()) == 200
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert "alertname=JupyterHubDown" in lines[0]
    assert "status=firing" in lines[0]
    assert "instance=hub:8000" in lines[0]
    assert 'summary="JupyterHub hub:8000 is down"' in lines[0]

    resolved = dict(NOTIFICATION, status="resolved")
    resolved["alerts"] = [
        dict(NOTIFICATION["alerts"][0], status="resolved"),
        {"status": "resolved", "labels": {"alertname": "JupyterHubSlowSpawns"}, "annotations": {"summary": "a\nb"}},
    ]
    assert post(f"{url}/alerts", json.dumps(resolved).encode()) == 200
    lines = out.getvalue().splitlines()[1:]
    assert len(lines) == 2, lines  # a newline in a summary does not split an alert's line
    assert all("status=resolved" in line for line in lines)
    assert "alertname=JupyterHubSlowSpawns" in lines[1]


def test_alert_webhook_rejects_what_is_not_a_notification(webhook: tuple[str, io.StringIO]) -> None:
    """The webhook answers 400 to a body that is not JSON or not a notification and 404 on another path, logging
    nothing."""
    url, out = webhook
    assert post(f"{url}/alerts", b"not json") == 400
    assert post(f"{url}/alerts", b'{"status": "firing"}') == 400
    assert post(f"{url}/elsewhere", json.dumps(NOTIFICATION).encode()) == 404
    assert out.getvalue() == ""


def test_alert_webhook_listens_where_alertmanager_sends() -> None:
    """Alertmanager's one webhook URL has the path the webhook script serves (``PATH``)."""
    [url] = [w["url"] for r in ALERTMANAGER["receivers"] for w in r.get("webhook_configs", [])]
    assert urlsplit(url).path == load_webhook().PATH
