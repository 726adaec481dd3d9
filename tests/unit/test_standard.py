"""The standard OTEL_* values that would stop the SDK's configuration: each found with one line naming it, the
accepted values and what is used instead, and left out so the rest of the configuration applies."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from jh_otel import standard
from jh_otel.environment_variables import prepare, sqlalchemy_outside_contrib_range

GOOD = {
    "OTEL_SERVICE_NAME": "jupyterhub",
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_METRICS_EXPORTER": "otlp",
    "OTEL_LOGS_EXPORTER": "none",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
    "OTEL_EXPORTER_OTLP_TIMEOUT": "10000",
    "OTEL_PROPAGATORS": "tracecontext,baggage",
}

# (variables changed, what the environment becomes for them: None is removed, the first line's start)
CASES = [
    (
        {"OTEL_METRICS_EXPORTER": "bogus"},
        {"OTEL_METRICS_EXPORTER": "none"},
        "jh_otel: OTEL_METRICS_EXPORTER='bogus' is invalid: unknown exporter 'bogus', expected any of console, none, ",
    ),
    (
        {"OTEL_METRICS_EXPORTER": "otlp,statsd"},
        {"OTEL_METRICS_EXPORTER": "otlp"},
        "jh_otel: OTEL_METRICS_EXPORTER='otlp,statsd' is invalid: unknown exporter 'statsd'",
    ),
    (
        {"OTEL_TRACES_EXPORTER": "jaeger,zipkin"},
        {"OTEL_TRACES_EXPORTER": "none"},
        "jh_otel: OTEL_TRACES_EXPORTER='jaeger,zipkin' is invalid: unknown exporter 'jaeger', 'zipkin'",
    ),
    (
        {"OTEL_LOGS_EXPORTER": "file"},
        {"OTEL_LOGS_EXPORTER": "none"},
        "jh_otel: OTEL_LOGS_EXPORTER='file' is invalid",
    ),
    (
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "http"},
        {"OTEL_EXPORTER_OTLP_PROTOCOL": None},
        "jh_otel: OTEL_EXPORTER_OTLP_PROTOCOL='http' is invalid: expected one of grpc, http/protobuf; using the "
        "default grpc",
    ),
    (
        {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
        {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": None},
        "jh_otel: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='http/json' is invalid: expected one of grpc, http/protobuf; "
        "using the shared protocol",
    ),
    (
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": None},
        "jh_otel: OTEL_EXPORTER_OTLP_ENDPOINT='collector:4318' is invalid for traces over http/protobuf, metrics over "
        "http/protobuf: expected a URL such as http://collector:4318; using the default",
    ),
    (
        {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://collector:port"},
        {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": None},
        "jh_otel: OTEL_EXPORTER_OTLP_METRICS_ENDPOINT='http://collector:port' is invalid",
    ),
    (
        {"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"},
        {"OTEL_EXPORTER_OTLP_TIMEOUT": None},
        "jh_otel: OTEL_EXPORTER_OTLP_TIMEOUT='soon' is invalid: expected a number of milliseconds; using the default",
    ),
    (
        {"OTEL_EXPORTER_PROMETHEUS_PORT": "99999"},
        {"OTEL_EXPORTER_PROMETHEUS_PORT": None},
        "jh_otel: OTEL_EXPORTER_PROMETHEUS_PORT='99999' is invalid: expected a port from 1 to 65535; using the "
        "default 9464",
    ),
    (
        {"OTEL_EXPORTER_PROMETHEUS_PORT": "metrics"},
        {"OTEL_EXPORTER_PROMETHEUS_PORT": None},
        "jh_otel: OTEL_EXPORTER_PROMETHEUS_PORT='metrics' is invalid",
    ),
    (
        {"OTEL_PROPAGATORS": "tracecontext,b3"},
        {"OTEL_PROPAGATORS": "tracecontext"},
        "jh_otel: OTEL_PROPAGATORS='tracecontext,b3' is invalid: unknown propagator 'b3'",
    ),
]


@pytest.mark.parametrize(("changed", "expected", "line"), CASES, ids=[next(iter(c)) for c, _, _ in CASES])
def test_a_bad_standard_value_is_left_out_with_one_line(changed: dict, expected: dict, line: str) -> None:
    """One bad standard value gives exactly one line starting as expected, and only that variable changes."""
    environ = GOOD | changed
    lines = standard.sanitize(environ)
    assert len(lines) == 1 and lines[0].startswith(line), lines
    for variable, value in expected.items():
        assert environ.get(variable) == value
    assert {k: v for k, v in environ.items() if k not in expected} == {
        k: v for k, v in GOOD.items() if k not in expected
    }


def test_a_good_configuration_is_left_as_it_is() -> None:
    """Valid values, a bare host:port for gRPC and http/protobuf included, give no line and no change."""
    for environ in (
        dict(GOOD),
        GOOD | {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": "hub:4317"},
    ):
        before = dict(environ)
        assert standard.sanitize(environ) == []
        assert environ == before


def test_a_bare_endpoint_shared_by_grpc_and_http_signals_keeps_serving_grpc() -> None:
    """A bare host:port is right for the gRPC signals and wrong for the HTTP one: it stays for gRPC, and the HTTP
    signal gets the default endpoint of its own."""
    environ = GOOD | {
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
    }
    (line,) = standard.sanitize(environ)
    assert line.endswith("traces use the default http://localhost:4318/v1/traces")
    assert environ["OTEL_EXPORTER_OTLP_ENDPOINT"] == "collector:4317"
    assert environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == "http://localhost:4318/v1/traces"


def test_a_prometheus_port_in_use_leaves_the_exporter_out() -> None:
    """A Prometheus exporter port already taken (which would stop the configuration) leaves that exporter out and
    keeps the others."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        environ = GOOD | {
            "OTEL_METRICS_EXPORTER": "prometheus,otlp",
            "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
            "OTEL_EXPORTER_PROMETHEUS_PORT": str(port),
        }
        (line,) = standard.sanitize(environ)
    assert f"cannot listen on 127.0.0.1:{port}" in line
    assert environ["OTEL_METRICS_EXPORTER"] == "otlp"


def test_the_contrib_sqlalchemy_instrumentor_is_disabled_only_where_it_cannot_apply() -> None:
    """Beyond the contrib instrumentor's SQLAlchemy range it is added to the disabled instrumentations (it would log
    an error and do nothing), keeping the operator's own entries; within the range nothing is added."""
    environ = {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "requests"}
    prepare(environ)
    if sqlalchemy_outside_contrib_range():
        assert environ["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] == "requests,sqlalchemy"
        assert environ["JH_OTEL_ADDED_DISABLED"] == "sqlalchemy"  # jh_otel's entry, not the operator's
    else:
        assert environ["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] == "requests"
        assert "JH_OTEL_ADDED_DISABLED" not in environ


@pytest.mark.parametrize(
    "argv",
    [
        ["--disabled_instrumentations", "requests", "jupyterhub"],
        ["--disabled_instrumentations=requests", "jupyterhub"],
        ["--disabled", "requests", "jupyterhub"],
    ],
)
def test_the_wrappers_own_disabled_option_is_left_to_the_wrapper(argv: list[str]) -> None:
    """When the wrapper's command line sets ``--disabled_instrumentations`` (which replaces the variable after jh_otel
    ran), nothing is added or marked: the operator's option is the whole list."""
    environ = {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "requests"}
    prepare(environ, argv)
    assert environ == {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "requests"}


def test_the_operators_own_sqlalchemy_entry_is_not_marked_as_jh_otels() -> None:
    """An operator who disabled ``sqlalchemy`` keeps that entry as theirs: nothing is added or marked."""
    environ = {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "sqlalchemy"}
    prepare(environ)
    assert environ == {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "sqlalchemy"}


def test_under_the_wrapper_a_bad_value_costs_only_that_setting() -> None:
    """``opentelemetry-instrument`` with an unknown metrics exporter: one jh_otel line, no configurator failure,
    and the program runs with the SDK configured (a real MeterProvider and TracerProvider)."""
    wrapper = Path(sys.executable).parent / "opentelemetry-instrument"
    env = dict(os.environ) | {
        "OTEL_METRICS_EXPORTER": "bogus",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_SERVICE_NAME": "test",
    }
    program = (
        "from opentelemetry import metrics, trace; import os; "
        "print(type(metrics.get_meter_provider()).__name__, type(trace.get_tracer_provider()).__name__, "
        "os.environ['OTEL_METRICS_EXPORTER'])"
    )
    done = subprocess.run(
        [wrapper, sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["MeterProvider", "TracerProvider", "none"]
    assert [line for line in done.stderr.splitlines() if line.startswith("jh_otel:")] == [
        line for line in done.stderr.splitlines() if "OTEL_METRICS_EXPORTER='bogus' is invalid" in line
    ]
    assert "Failed to auto initialize" not in done.stderr and "Traceback" not in done.stderr
