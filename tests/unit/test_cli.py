"""The jh-otel command: every bad setting caught in one line naming it, a good configuration passing, the catalogue
printed, exit codes as documented."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from jh_otel.catalogue import build_catalogue
from jh_otel.cli import main
from jh_otel.settings import parse_settings


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


GOOD = {
    "OTEL_SERVICE_NAME": "jupyterhub",
    "OTEL_METRICS_EXPORTER": "prometheus,otlp",
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_LOGS_EXPORTER": "none",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
    "OTEL_EXPORTER_PROMETHEUS_PORT": str(_free_port()),  # jh-otel check tells a port in use (9464 may be, here)
    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
    "OTEL_TRACES_SAMPLER_ARG": "0.25",
    "OTEL_METRIC_EXPORT_INTERVAL": "15000",
    "OTEL_PYTHON_JUPYTERHUB_REFRESH_INTERVAL": "15",
    "OTEL_PYTHON_JUPYTERHUB_EXEMPLARS": "on",
    "OTEL_PYTHON_JUPYTERHUB_MAX_USER_LABELS": "500",
}

BAD = [
    ("OTEL_PYTHON_JUPYTERHUB_REFRESH_INTERVAL", "often"),
    ("OTEL_PYTHON_JUPYTERHUB_SHUTDOWN_TIMEOUT", "90"),
    ("OTEL_PYTHON_JUPYTERHUB_SINGLEUSER_INSTRUMENTATION", "yes"),
    ("OTEL_PYTHON_JUPYTERHUB_TRACES", "true"),
    ("OTEL_PYTHON_JUPYTERHUB_LOG_CORRELATION", "1"),
    ("OTEL_PYTHON_JUPYTERHUB_EXEMPLARS", "enabled"),
    ("OTEL_PYTHON_JUPYTERHUB_HEALTH_INTERVAL", "0"),
    ("OTEL_PYTHON_JUPYTERHUB_MAX_USER_LABELS", "lots"),
    ("OTEL_PYTHON_JUPYTERHUB_RESOURCE_USAGE", "sometimes"),
    ("OTEL_PYTHON_JUPYTERHUB_SQL_SPAN_MIN_DURATION", "1ms"),
    ("JUPYTERHUB_METRICS_PREFIX", "my-hub"),
    ("JUPYTERHUB_SERVER_SPAWN_DURATION_SECONDS_BUCKETS", "10,5"),
    ("JUPYTERHUB_SERVER_STOP_DURATION_SECONDS_BUCKETS", "fast"),
    ("OTEL_METRICS_EXPORTER", "prometheus,statsd"),
    ("OTEL_TRACES_EXPORTER", "zipkin"),
    ("OTEL_LOGS_EXPORTER", "file"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http"),
    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "udp"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
    ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://collector:port"),
    ("OTEL_TRACES_SAMPLER", "sometimes"),
    ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
    ("OTEL_EXPORTER_PROMETHEUS_PORT", "99999"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "-5"),
    ("OTEL_BSP_MAX_QUEUE_SIZE", "many"),
    ("OTEL_SERVICE_NAME", ""),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),  # the SDK's configurator has no http/json exporter
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
    ("OTEL_PROPAGATORS", "tracecontext,b3"),
]


def check(environ: dict[str, str], *args: str, capsys) -> tuple[int, list[str]]:
    code = main(["check", *args], environ)
    return code, capsys.readouterr().out.splitlines()


@pytest.mark.parametrize(("variable", "value"), BAD, ids=[f"{v}={x}" for v, x in BAD])
def test_check_catches_every_bad_setting_in_one_line(variable: str, value: str, capsys) -> None:
    """``jh-otel check --no-network`` exits 1 on each bad setting, printing exactly one line that names the variable and
    the offending value."""
    environ = GOOD | {variable: value}
    code, lines = check(environ, "--no-network", capsys=capsys)
    assert code == 1
    (line,) = lines
    assert variable in line
    assert value.split(",")[-1] in line  # the offending value


def test_check_passes_a_good_configuration_with_a_reachable_collector(capsys) -> None:
    """``jh-otel check`` exits 0 on a good configuration with a listening collector, printing one ``ok`` line that names
    both endpoints reachable."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
        code, lines = check(GOOD | {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}, capsys=capsys)
    assert code == 0, lines
    assert lines == [f"ok: settings valid; traces to {endpoint}, metrics to {endpoint} (reachable)"]


def test_a_bare_host_and_port_is_accepted_for_grpc_only(capsys) -> None:
    """A bare ``host:port`` endpoint passes ``check`` over gRPC (shown as ``http://host:port``) but exits 1 with a line
    calling it invalid once traces use ``http/protobuf``."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        bare = f"127.0.0.1:{listener.getsockname()[1]}"
        grpc = GOOD | {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": bare}
        code, lines = check(grpc, capsys=capsys)
        assert code == 0, lines
        assert lines == [f"ok: settings valid; traces to http://{bare}, metrics to http://{bare} (reachable)"]
        code, lines = check(grpc | {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, capsys=capsys)
        assert code == 1 and lines[0] == (
            f"OTEL_EXPORTER_OTLP_ENDPOINT={bare!r} is invalid for traces over http/protobuf: "
            "expected a URL such as http://collector:4318; traces use the default http://localhost:4318/v1/traces"
        )


def test_check_names_each_unreachable_endpoint(capsys) -> None:
    """``check`` exits 1 with one ``is not reachable`` line for traces and then one for metrics when the collector's
    port refuses connections."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, not listening: refused
        environ = GOOD | {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{port}/v1/traces",
        }
        code, lines = check(environ, "--timeout", "1", capsys=capsys)
    assert code == 1
    assert [line.split(":")[0] for line in lines] == ["traces", "metrics"]
    assert all("is not reachable" in line for line in lines)


def test_metrics_prints_the_catalogue_as_markdown_and_json(capsys) -> None:
    """``jh-otel metrics`` prints the catalogue's Markdown, and with ``--format json`` its families in order under the
    prefix, the spawn histogram with its type, labels and first bucket."""
    catalogue = build_catalogue(parse_settings({"JUPYTERHUB_METRICS_PREFIX": "myhub"}))
    assert main(["metrics"], {"JUPYTERHUB_METRICS_PREFIX": "myhub"}) == 0
    assert capsys.readouterr().out == catalogue.markdown()
    assert main(["metrics", "--format", "json"], {"JUPYTERHUB_METRICS_PREFIX": "myhub"}) == 0
    families = json.loads(capsys.readouterr().out)
    assert [f["name"] for f in families] == [f.prometheus("myhub") for f in catalogue]
    spawn = next(f for f in families if f["name"] == "myhub_server_spawn_duration_seconds")
    assert spawn["type"] == "histogram" and spawn["labels"] == ["status", "reason"] and spawn["buckets"][0] == 0.5


def test_the_installed_command_and_its_exit_codes() -> None:
    """The installed ``jh-otel`` exits 0 on ``--help``, 2 with ``invalid choice`` on an unknown command, and 0 on
    ``demo --help``, which lists ``--exporter-port``."""
    command = Path(sys.executable).parent / "jh-otel"
    assert subprocess.run([command, "--help"], capture_output=True, timeout=60).returncode == 0
    usage = subprocess.run([command, "frobnicate"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "invalid choice" in usage.stderr
    demo = subprocess.run([command, "demo", "--help"], capture_output=True, text=True, timeout=60)
    assert demo.returncode == 0 and "--exporter-port" in demo.stdout
