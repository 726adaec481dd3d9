"""Settings: environment variables -> one frozen :class:`Settings`, parsed once.

Every variable is a named constant here, documented in the package docstring and README, and parsed by
:func:`parse_settings`, a pure function. A bad value never stops the hub: it yields a one-line error naming the
variable and the accepted values, and that setting keeps its default.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields

OTEL_PYTHON_JUPYTERHUB_REFRESH_INTERVAL = "OTEL_PYTHON_JUPYTERHUB_REFRESH_INTERVAL"
OTEL_PYTHON_JUPYTERHUB_SHUTDOWN_TIMEOUT = "OTEL_PYTHON_JUPYTERHUB_SHUTDOWN_TIMEOUT"
OTEL_PYTHON_JUPYTERHUB_SINGLEUSER_INSTRUMENTATION = "OTEL_PYTHON_JUPYTERHUB_SINGLEUSER_INSTRUMENTATION"
OTEL_PYTHON_JUPYTERHUB_TRACES = "OTEL_PYTHON_JUPYTERHUB_TRACES"
OTEL_PYTHON_JUPYTERHUB_LOG_CORRELATION = "OTEL_PYTHON_JUPYTERHUB_LOG_CORRELATION"
OTEL_PYTHON_JUPYTERHUB_EXEMPLARS = "OTEL_PYTHON_JUPYTERHUB_EXEMPLARS"
OTEL_PYTHON_JUPYTERHUB_HEALTH_INTERVAL = "OTEL_PYTHON_JUPYTERHUB_HEALTH_INTERVAL"
OTEL_PYTHON_JUPYTERHUB_MAX_USER_LABELS = "OTEL_PYTHON_JUPYTERHUB_MAX_USER_LABELS"
OTEL_PYTHON_JUPYTERHUB_RESOURCE_USAGE = "OTEL_PYTHON_JUPYTERHUB_RESOURCE_USAGE"
OTEL_PYTHON_JUPYTERHUB_TRACE_PROBES = "OTEL_PYTHON_JUPYTERHUB_TRACE_PROBES"
OTEL_PYTHON_JUPYTERHUB_GC_FREEZE = "OTEL_PYTHON_JUPYTERHUB_GC_FREEZE"
OTEL_PYTHON_JUPYTERHUB_LEAN_SPANS = "OTEL_PYTHON_JUPYTERHUB_LEAN_SPANS"
OTEL_PYTHON_JUPYTERHUB_PROFILE_OPTION = "OTEL_PYTHON_JUPYTERHUB_PROFILE_OPTION"
OTEL_PYTHON_JUPYTERHUB_MAX_PROFILE_LABELS = "OTEL_PYTHON_JUPYTERHUB_MAX_PROFILE_LABELS"
OTEL_PYTHON_JUPYTERHUB_SPAWN_RECORDS = "OTEL_PYTHON_JUPYTERHUB_SPAWN_RECORDS"
OTEL_PYTHON_JUPYTERHUB_SPAN_BUFFER = "OTEL_PYTHON_JUPYTERHUB_SPAN_BUFFER"
OTEL_PYTHON_JUPYTERHUB_SQL_SPAN_MIN_DURATION = "OTEL_PYTHON_JUPYTERHUB_SQL_SPAN_MIN_DURATION"
OTEL_PYTHON_DISABLED_INSTRUMENTATIONS = "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"
JH_OTEL_ADDED_DISABLED = "JH_OTEL_ADDED_DISABLED"
"""The entries jh_otel itself added to ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` (under the wrapper, to quiet a
contrib instrumentor that cannot apply): not the operator's, so they do not switch jh_otel's own spans off."""
# JupyterHub's own variables, honoured so that names and buckets match the native metrics.
JUPYTERHUB_METRICS_PREFIX = "JUPYTERHUB_METRICS_PREFIX"
JUPYTERHUB_SERVER_SPAWN_DURATION_SECONDS_BUCKETS = "JUPYTERHUB_SERVER_SPAWN_DURATION_SECONDS_BUCKETS"
JUPYTERHUB_SERVER_STOP_DURATION_SECONDS_BUCKETS = "JUPYTERHUB_SERVER_STOP_DURATION_SECONDS_BUCKETS"

# JupyterHub's defaults (jupyterhub/metrics.py); +Inf is implied.
DEFAULT_SPAWN_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0)
DEFAULT_STOP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

SINGLEUSER_MODES = ("off", "inherit")
SWITCH = ("on", "off")


@dataclass(frozen=True)
class Settings:
    """What jh_otel was told, after validation."""

    refresh_interval: float = 15.0
    """Seconds between two refreshes of the hub-state snapshot behind the observable gauges."""
    shutdown_timeout: float = 0.5
    """Seconds jh_otel may spend flushing telemetry when the hub shuts down."""
    singleuser_instrumentation: str = "off"
    """``off``: spawned servers do not inherit ``opentelemetry-instrument``; ``inherit``: they do, with an
    OpenTelemetry environment of their own."""
    traces: str = "on"
    """``on``: request, SQL and JupyterHub operation spans (when a traces exporter is configured); ``off``: none."""
    log_correlation: str = "off"
    """``on``: the hub's log lines end with ``trace_id=... span_id=...`` inside a span (records always carry
    ``trace_id`` and ``span_id`` attributes for a format of your own)."""
    exemplars: str = "off"
    """``on``: histogram observations made inside a sampled span carry its ``trace_id`` as an exemplar, and
    ``/hub/metrics`` answers in OpenMetrics (the format that carries exemplars) when the scraper asks for it."""
    health_interval: float = 30.0
    """Seconds between two runs of each built-in health check (database, proxy, spawners)."""
    max_user_labels: int = 200
    """Distinct user names a family records under a user label; later ones are recorded as ``_other``."""
    resource_usage: str = "off"
    """``on``: CPU and memory of each single-user server's process tree (local-process spawners), every
    ``refresh_interval``, in ``jupyterhub_resource_usage``."""
    gc_freeze: str = "on"
    """``on``: once the hub has started, the objects it made at startup are left out of the garbage collector's
    full collections (``gc.freeze``), which otherwise scan the whole heap and stall the event loop for 100-200 ms
    each; ``off``: the interpreter's default."""
    lean_spans: str = "on"
    """``on``: a sampled span whose processors only see its end (the SDK's batch and simple processors) is a lean
    object until it ends or is asked for more than attributes (``jh_otel.tracing.lean``); ``off``: every span is
    the SDK's own."""
    trace_probes: str = "off"
    """``off``: requests to JupyterHub's probes (``/hub/health``, ``/hub/api/health``, ``/hub/metrics``,
    ``/hub/api/metrics``) make no span (they stay in every request metric); ``on``: they are traced like any
    request."""
    profile_option: str = "profile"
    """The key of a spawn's ``user_options`` that names its profile (KubeSpawner's ``profile`` slug by default): the
    ``profile`` label of the spawn-phase and per-profile families and an attribute of the ``jupyterhub.spawn`` span;
    ``""`` when the spawn has none."""
    max_profile_labels: int = 50
    """Distinct profiles the per-profile families record; later ones are recorded as ``_other``."""
    spawn_records: str = "on"
    """``on``: when a spawn ends (ready, failed or cancelled), one ``jupyterhub.spawn`` log record (through
    ``OTEL_LOGS_EXPORTER``, in the spawn's trace) and one hub log line with its outcome and phases; ``off``: neither."""
    span_buffer: int = 4
    """MiB of encoded spans an OTLP span exporter's outbox keeps while the collector does not accept them (newest
    sent first, the oldest dropped past it); ``0``: no outbox, the SDK's own delivery."""
    sql_span_min_duration: float = 0.0
    """Seconds a SQL statement must take to get a span of its own (a failing statement always gets one); ``0``:
    every statement."""
    metrics_prefix: str = "jupyterhub"
    spawn_buckets: tuple[float, ...] = DEFAULT_SPAWN_BUCKETS
    stop_buckets: tuple[float, ...] = DEFAULT_STOP_BUCKETS
    metrics_exporters: tuple[str, ...] = ("otlp",)
    """``OTEL_METRICS_EXPORTER`` (read, not validated: the SDK owns it; default ``otlp`` as in the distro)."""
    traces_exporters: tuple[str, ...] = ("otlp",)
    """``OTEL_TRACES_EXPORTER`` (read, not validated; default ``otlp`` as in the distro)."""
    errors: tuple[str, ...] = field(default=(), compare=False)
    """One line per rejected variable (already applied: the setting kept its default)."""

    @property
    def pushes_metrics(self) -> bool:
        """Whether any metrics exporter besides the Prometheus pull endpoint is configured."""
        return not set(self.metrics_exporters) <= {"prometheus", "none"}

    @property
    def traces_on(self) -> bool:
        """Whether spans are made: tracing not switched off and some traces exporter configured."""
        return self.traces == "on" and not set(self.traces_exporters) <= {"none"}


class _Invalid(ValueError):
    pass


def _seconds(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise _Invalid from None
        if not (low <= value <= high) or math.isnan(value):
            raise _Invalid
        return value

    return parse


def _integer(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise _Invalid from None
        if not low <= value <= high:
            raise _Invalid
        return value

    return parse


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise _Invalid
        return value

    return parse


_PROMETHEUS_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_OPTION_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _option(raw: str) -> str:
    value = raw.strip()
    if not _OPTION_NAME.match(value):
        raise _Invalid
    return value


def _prefix(raw: str) -> str:
    value = raw.strip()
    if not _PROMETHEUS_NAME.match(value):
        raise _Invalid
    return value


def _buckets(raw: str) -> tuple[float, ...]:
    try:
        values = [float(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise _Invalid from None
    finite = tuple(v for v in values if not math.isinf(v))
    if not finite or any(math.isnan(v) for v in finite) or list(finite) != sorted(set(finite)):
        raise _Invalid
    return finite


@dataclass(frozen=True)
class _Variable:
    name: str
    field: str
    parse: Callable[[str], object]
    accepted: str


VARIABLES = (
    _Variable(
        OTEL_PYTHON_JUPYTERHUB_REFRESH_INTERVAL,
        "refresh_interval",
        _seconds(0.5, 3600),
        "a number of seconds from 0.5 to 3600",
    ),
    _Variable(
        OTEL_PYTHON_JUPYTERHUB_SHUTDOWN_TIMEOUT,
        "shutdown_timeout",
        _seconds(0, 30),
        "a number of seconds from 0 to 30",
    ),
    _Variable(
        OTEL_PYTHON_JUPYTERHUB_SINGLEUSER_INSTRUMENTATION,
        "singleuser_instrumentation",
        _choice(SINGLEUSER_MODES),
        "one of " + ", ".join(SINGLEUSER_MODES),
    ),
    _Variable(OTEL_PYTHON_JUPYTERHUB_TRACES, "traces", _choice(SWITCH), "one of on, off"),
    _Variable(OTEL_PYTHON_JUPYTERHUB_LOG_CORRELATION, "log_correlation", _choice(SWITCH), "one of on, off"),
    _Variable(OTEL_PYTHON_JUPYTERHUB_EXEMPLARS, "exemplars", _choice(SWITCH), "one of on, off"),
    _Variable(
        OTEL_PYTHON_JUPYTERHUB_HEALTH_INTERVAL,
        "health_interval",
        _seconds(1, 3600),
        "a number of seconds from 1 to 3600",
    ),
    _Variable(
        OTEL_PYTHON_JUPYTERHUB_MAX_USER_LABELS,
        "max_user_labels",
        _integer(1, 10000),
        "a whole number from 1 to 10000",
    ),
    _Variable(OTEL_PYTHON_JUPYTERHUB_RESOURCE_USAGE, "resource_usage", _choice(SWITCH), "one of on, off"),
    _Variable(OTEL_PYTHON_JUPYTERHUB_TRACE_PROBES, "trace_probes", _choice(SWITCH), "one of on, off"),
    _Variable(OTEL_PYTHON_JUPYTERHUB_GC_FREEZE, "gc_freeze", _choice(SWITCH), "one of on, off"),
    _Variable(OTEL_PYTHON_JUPYTERHUB_LEAN_SPANS, "lean_spans", _choice(SWITCH), "one of on, off"),
    _Variable(
        OTEL_PYTHON_JUPYTERHUB_PROFILE_OPTION,
        "profile_option",
        _option,
        "a user_options key: 1 to 64 letters, digits, _, . or -",
    ),
    _Variable(
        OTEL_PYTHON_JUPYTERHUB_MAX_PROFILE_LABELS,
        "max_profile_labels",
        _integer(1, 10000),
        "a whole number from 1 to 10000",
    ),
    _Variable(OTEL_PYTHON_JUPYTERHUB_SPAWN_RECORDS, "spawn_records", _choice(SWITCH), "one of on, off"),
    _Variable(
        OTEL_PYTHON_JUPYTERHUB_SPAN_BUFFER,
        "span_buffer",
        _integer(0, 256),
        "a whole number of MiB from 0 to 256",
    ),
    _Variable(
        OTEL_PYTHON_JUPYTERHUB_SQL_SPAN_MIN_DURATION,
        "sql_span_min_duration",
        _seconds(0, 60),
        "a number of seconds from 0 to 60",
    ),
    _Variable(
        JUPYTERHUB_METRICS_PREFIX,
        "metrics_prefix",
        _prefix,
        "a Prometheus name: letters, digits and _, not starting with a digit",
    ),
    _Variable(
        JUPYTERHUB_SERVER_SPAWN_DURATION_SECONDS_BUCKETS,
        "spawn_buckets",
        _buckets,
        "comma-separated increasing numbers of seconds",
    ),
    _Variable(
        JUPYTERHUB_SERVER_STOP_DURATION_SECONDS_BUCKETS,
        "stop_buckets",
        _buckets,
        "comma-separated increasing numbers of seconds",
    ),
)


def parse_settings(environ: Mapping[str, str]) -> Settings:
    """Read every jh_otel variable from ``environ``; never raises."""
    defaults = Settings()
    values: dict[str, object] = {}
    errors = []
    for var in VARIABLES:
        raw = environ.get(var.name)
        if raw is None or not raw.strip():
            continue
        try:
            values[var.field] = var.parse(raw)
        except _Invalid:
            errors.append(
                f"jh_otel: {var.name}={raw!r} is invalid: expected {var.accepted}; "
                f"using the default {getattr(defaults, var.field)!r}"
            )
    exporters = environ.get("OTEL_METRICS_EXPORTER", "").split(",")
    values["metrics_exporters"] = tuple(e.strip() for e in exporters if e.strip()) or defaults.metrics_exporters
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").split(",")
    values["traces_exporters"] = tuple(e.strip() for e in exporters if e.strip()) or defaults.traces_exporters
    known = {f.name for f in fields(Settings)}
    assert set(values) <= known
    return Settings(**values, errors=tuple(errors))  # type: ignore[arg-type]


def disabled_by_operator(name: str, environ: Mapping[str, str]) -> bool:
    """Whether the operator's ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` names the instrumentation ``name``; an entry
    jh_otel added itself does not count. ``*`` does not either: under the wrapper it keeps jh_otel from loading at
    all, so jh_otel only sees it when the hub's config file loads it, which asks for it by name."""
    entries = {part.strip() for part in environ.get(OTEL_PYTHON_DISABLED_INSTRUMENTATIONS, "").split(",")}
    added = {part.strip() for part in environ.get(JH_OTEL_ADDED_DISABLED, "").split(",")}
    return name in entries and name not in added
