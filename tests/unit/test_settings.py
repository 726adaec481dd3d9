"""Settings: one pure parser, table-driven."""

from __future__ import annotations

import pytest

from jh_otel.settings import DEFAULT_SPAWN_BUCKETS, Settings, parse_settings

VALID = [
    ({}, Settings()),
    ({"OTEL_PYTHON_JUPYTERHUB_REFRESH_INTERVAL": "2.5"}, Settings(refresh_interval=2.5)),
    ({"OTEL_PYTHON_JUPYTERHUB_REFRESH_INTERVAL": "  "}, Settings()),
    ({"OTEL_PYTHON_JUPYTERHUB_SHUTDOWN_TIMEOUT": "0"}, Settings(shutdown_timeout=0.0)),
    ({"OTEL_PYTHON_JUPYTERHUB_SINGLEUSER_INSTRUMENTATION": "INHERIT"}, Settings(singleuser_instrumentation="inherit")),
    ({"JUPYTERHUB_METRICS_PREFIX": "myhub"}, Settings(metrics_prefix="myhub")),
    ({"OTEL_PYTHON_JUPYTERHUB_TRACES": "Off"}, Settings(traces="off")),
    ({"OTEL_PYTHON_JUPYTERHUB_LOG_CORRELATION": "on"}, Settings(log_correlation="on")),
    ({"OTEL_PYTHON_JUPYTERHUB_EXEMPLARS": " ON"}, Settings(exemplars="on")),
    ({"JUPYTERHUB_SERVER_SPAWN_DURATION_SECONDS_BUCKETS": "1,2,inf"}, Settings(spawn_buckets=(1.0, 2.0))),
    ({"JUPYTERHUB_SERVER_STOP_DURATION_SECONDS_BUCKETS": "0.5, 1"}, Settings(stop_buckets=(0.5, 1.0))),
]

INVALID = [
    ("OTEL_PYTHON_JUPYTERHUB_REFRESH_INTERVAL", "fast", "a number of seconds from 0.5 to 3600", "15.0"),
    ("OTEL_PYTHON_JUPYTERHUB_REFRESH_INTERVAL", "0", "a number of seconds from 0.5 to 3600", "15.0"),
    ("OTEL_PYTHON_JUPYTERHUB_REFRESH_INTERVAL", "nan", "a number of seconds from 0.5 to 3600", "15.0"),
    ("OTEL_PYTHON_JUPYTERHUB_SHUTDOWN_TIMEOUT", "-1", "a number of seconds from 0 to 30", "0.5"),
    ("OTEL_PYTHON_JUPYTERHUB_SINGLEUSER_INSTRUMENTATION", "yes", "one of off, inherit", "'off'"),
    ("JUPYTERHUB_METRICS_PREFIX", "my-hub", "a Prometheus name", "'jupyterhub'"),
    ("OTEL_PYTHON_JUPYTERHUB_TRACES", "true", "one of on, off", "'on'"),
    ("OTEL_PYTHON_JUPYTERHUB_LOG_CORRELATION", "1", "one of on, off", "'off'"),
    ("OTEL_PYTHON_JUPYTERHUB_EXEMPLARS", "yes", "one of on, off", "'off'"),
    ("JUPYTERHUB_SERVER_SPAWN_DURATION_SECONDS_BUCKETS", "2,1", "comma-separated increasing numbers", "(0.5,"),
    ("JUPYTERHUB_SERVER_STOP_DURATION_SECONDS_BUCKETS", "a,b", "comma-separated increasing numbers", "(0.005,"),
]


@pytest.mark.parametrize(("environ", "expected"), VALID)
def test_valid_values_are_parsed(environ: dict[str, str], expected: Settings) -> None:
    """Each accepted spelling gives the expected setting and no error."""
    settings = parse_settings(environ)
    assert settings == expected
    assert settings.errors == ()


@pytest.mark.parametrize(("variable", "raw", "accepted", "default"), INVALID)
def test_invalid_values_give_one_line_and_the_default(variable: str, raw: str, accepted: str, default: str) -> None:
    """A bad value yields one line naming the variable, the value, the accepted values and the default kept."""
    settings = parse_settings({variable: raw})
    assert settings == Settings()
    (error,) = settings.errors
    assert "\n" not in error
    assert error.startswith(f"jh_otel: {variable}={raw!r} is invalid: expected ")
    assert accepted in error
    assert f"using the default {default}" in error


@pytest.mark.parametrize(
    ("value", "pushes"),
    [
        (None, True),
        ("otlp", True),
        ("prometheus", False),
        ("prometheus, none", False),
        ("prometheus,otlp", True),
        ("console", True),
    ],
)
def test_whether_metrics_are_pushed_follows_otel_metrics_exporter(value: str | None, pushes: bool) -> None:
    """Only a pull-only OTEL_METRICS_EXPORTER (prometheus, none) means nothing is pushed."""
    environ = {} if value is None else {"OTEL_METRICS_EXPORTER": value}
    assert parse_settings(environ).pushes_metrics is pushes


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_PYTHON_JUPYTERHUB_TRACES": "off"}, False),
        ({"OTEL_TRACES_EXPORTER": "console,none"}, True),
    ],
)
def test_whether_jh_otel_traces_follows_its_switch_and_otel_traces_exporter(environ: dict[str, str], on: bool) -> None:
    """jh_otel makes spans unless switched off or no traces exporter is configured (the distro's default is otlp)."""
    assert parse_settings(environ).traces_on is on


def test_one_bad_variable_does_not_spoil_the_others() -> None:
    """Valid variables still apply when another one is rejected."""
    settings = parse_settings(
        {"OTEL_PYTHON_JUPYTERHUB_REFRESH_INTERVAL": "3", "OTEL_PYTHON_JUPYTERHUB_SHUTDOWN_TIMEOUT": "forever"}
    )
    assert settings.refresh_interval == 3.0
    assert settings.shutdown_timeout == 0.5
    assert len(settings.errors) == 1
    assert settings.spawn_buckets == DEFAULT_SPAWN_BUCKETS
