"""The metric catalogue: one declarative table behind the instruments, the docs table and the name tests.

Naming. Every family is ``<prefix>_<name>`` in Prometheus, the prefix being ``JUPYTERHUB_METRICS_PREFIX``
(default ``jupyterhub``), exactly as JupyterHub names its native metrics. Over OTLP the same family is the
instrument ``<prefix>.<otel>`` with an OpenTelemetry unit, chosen so that the standard OpenTelemetry -> Prometheus
translation (``.`` -> ``_``, unit ``s`` -> ``_seconds``, ``By`` -> ``_bytes``, ``%`` -> ``_percent``, ``{...}``
dropped, ``_total`` on counters) gives back the Prometheus name; ``tests/test_catalogue.py`` holds both to that.

Label values that are known up front (statuses, periods, pending kinds) are listed here, and their series exist at
zero from startup, as JupyterHub does, so that dashboards and alerts work before the first failure. The
``ServerPollStatus.running`` and ``LoginStatus.success`` spellings are JupyterHub's own (the repr of its enums) and
are kept so that existing queries match.

Where each family's data comes from:

- ``native``: JupyterHub records it itself; jh_otel mirrors every observation of the native object
  (``jupyterhub.metrics.<native>``), so the semantics are JupyterHub's own, on 5.x and 6.x.
- ``snapshot``: an observable gauge read from the hub-state snapshot (:mod:`jh_otel.snapshot`).
- ``hook``: recorded by one of jh_otel's hooks (:mod:`jh_otel.hooks`).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import product

from .settings import Settings

DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
EVENT_LOOP_BUCKETS = (0.05, 0.055, 0.06, 0.065, 0.07) + DEFAULT_BUCKETS[4:]


class Kind(enum.Enum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class Family:
    """One metric family, before the prefix is applied."""

    name: str
    """Prometheus name after ``<prefix>_``; counters without ``_total``."""
    kind: Kind
    help: str
    otel: str
    """OpenTelemetry instrument name after ``<prefix>.``."""
    unit: str
    labels: tuple[str, ...] = ()
    series: tuple[tuple[str, ...], ...] = ()
    """Label values whose series exist at zero from startup."""
    buckets: tuple[float, ...] = ()
    origin: str = "native"
    """``native`` (JupyterHub 6 has it), ``seed`` (the seed spec's), ``both``, or ``jh_otel`` (jh_otel's own)."""
    native: str | None = None
    """``jupyterhub.metrics`` attribute whose observations feed this family."""
    snapshot: str | None = None
    """:class:`jh_otel.snapshot.Snapshot` field that this gauge reads."""
    hook: str | None = None
    """Which jh_otel hook records it (for the docs); a gauge with a hook and no snapshot is set by that hook."""
    definition: str = ""
    """What exactly is measured, where the help line is not enough."""

    def prometheus(self, prefix: str) -> str:
        """The exposed family name (counters end in ``_total``)."""
        suffix = "_total" if self.kind is Kind.COUNTER else ""
        return f"{prefix}_{self.name}{suffix}"

    def instrument(self, prefix: str) -> str:
        return f"{prefix}.{self.otel}"


def each(**values: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """Every combination of the given label values, in label order."""
    return tuple(product(*values.values()))


_STATUS = each(status=("success", "failure"))
PENDING_KINDS = ("spawn", "stop", "check", "rename")
"""JupyterHub's ``Spawner.pending`` values (``rename`` is 6.x only)."""
PERIODS = ("24h", "7d", "30d")
_SPAWN_SERIES = each(status=("success", "failure", "error"), reason=("",)) + each(
    status=("failure",), reason=("throttled", "too-many-users", "already-pending")
)
_REQUEST_LABELS = ("method", "handler", "code")
SPAWN_PHASES = ("prepare", "start", "scheduling", "image_pull", "container_start", "wait_up", "proxy")
"""The phases of a spawn (:mod:`jh_otel.hooks.phases`): ``prepare`` (``User.spawn`` until the spawner's ``start()``
is called: auth state, options, pre-spawn hooks), ``start`` (``start()`` until it returns), ``wait_up`` (until the
server answers), ``proxy`` (its route added); from the spawner's progress events (KubeSpawner's Kubernetes events,
their own timestamps): ``scheduling`` (until ``Scheduled``), ``image_pull`` (``Pulling`` to ``Pulled``),
``container_start`` (``Created`` to ``Started``)."""
SPAWN_OUTCOMES = ("success", "failure", "cancelled")


def _families(settings: Settings) -> tuple[Family, ...]:
    spawn, stop = settings.spawn_buckets, settings.stop_buckets
    # fmt: off
    return (
        # --- JupyterHub's native metrics (jupyterhub/metrics.py, 6.x) -------------------------------------
        Family("request_duration_seconds", Kind.HISTOGRAM, "Request duration for all HTTP requests",
               "request.duration", "s", _REQUEST_LABELS, buckets=DEFAULT_BUCKETS, origin="both", hook="requests",
               definition="Every request the hub answers, once, from tornado's start of the request to the "
                          "end of the response; `handler` is the tornado handler's `module.Class`."),
        Family("server_spawn_duration_seconds", Kind.HISTOGRAM, "Time taken for server spawning operation",
               "server.spawn.duration", "s", ("status", "reason"), _SPAWN_SERIES, spawn,
               native="SERVER_SPAWN_DURATION_SECONDS"),
        Family("running_servers", Kind.GAUGE, "The number of user servers currently running",
               "running_servers", "{server}", origin="both", snapshot="running_servers",
               definition="Servers that are up and not pending, counted from the hub's in-memory state "
                          "(JupyterHub's own gauge undercounts after a failed spawn)."),
        Family("total_users", Kind.GAUGE, "Total number of users", "total_users", "{user}", origin="both",
               snapshot="total_users"),
        Family("active_users", Kind.GAUGE, "Number of users who were active in the given time period",
               "active_users", "{user}", ("period",), each(period=PERIODS), origin="both",
               snapshot="active_users", definition="Users whose last activity is within the period."),
        Family("check_routes_duration_seconds", Kind.HISTOGRAM, "Time taken to validate all routes in proxy",
               "check_routes.duration", "s", buckets=DEFAULT_BUCKETS, native="CHECK_ROUTES_DURATION_SECONDS"),
        Family("hub_startup_duration_seconds", Kind.HISTOGRAM, "Time taken for Hub to start",
               "hub_startup.duration", "s", buckets=DEFAULT_BUCKETS, native="HUB_STARTUP_DURATION_SECONDS"),
        Family("init_spawners_duration_seconds", Kind.HISTOGRAM, "Time taken for spawners to initialize",
               "init_spawners.duration", "s", buckets=DEFAULT_BUCKETS,
               native="INIT_SPAWNERS_DURATION_SECONDS"),
        Family("proxy_poll_duration_seconds", Kind.HISTOGRAM, "Duration for polling all routes from proxy",
               "proxy.poll.duration", "s", buckets=DEFAULT_BUCKETS, native="PROXY_POLL_DURATION_SECONDS"),
        Family("proxy_add_duration_seconds", Kind.HISTOGRAM, "Duration for adding user routes to proxy",
               "proxy.add.duration", "s", ("status",), _STATUS, DEFAULT_BUCKETS,
               native="PROXY_ADD_DURATION_SECONDS"),
        Family("server_poll_duration_seconds", Kind.HISTOGRAM, "Time taken to poll if server is running",
               "server.poll.duration", "s", ("status",),
               each(status=("ServerPollStatus.running", "ServerPollStatus.stopped")), DEFAULT_BUCKETS,
               native="SERVER_POLL_DURATION_SECONDS"),
        Family("server_stop_seconds", Kind.HISTOGRAM, "Time taken for server stopping operation",
               "server.stop", "s", ("status",), _STATUS, stop, native="SERVER_STOP_DURATION_SECONDS"),
        Family("proxy_delete_duration_seconds", Kind.HISTOGRAM, "Duration for deleting user routes from proxy",
               "proxy.delete.duration", "s", ("status",), _STATUS, DEFAULT_BUCKETS,
               native="PROXY_DELETE_DURATION_SECONDS"),
        Family("event_loop_interval_seconds", Kind.HISTOGRAM, "Distribution of measured event loop intervals",
               "event_loop.interval", "s", buckets=EVENT_LOOP_BUCKETS, native="EVENT_LOOP_INTERVAL_SECONDS"),
        Family("login_duration_seconds", Kind.HISTOGRAM, "duration for all authentication attempts",
               "login.duration", "s", ("status",),
               each(status=("LoginStatus.success", "LoginStatus.failure")), DEFAULT_BUCKETS,
               native="LOGIN_DURATION_SECONDS"),
        Family("logout_duration_seconds", Kind.HISTOGRAM, "duration for all logout requests",
               "logout.duration", "s", buckets=DEFAULT_BUCKETS, native="LOGOUT_DURATION_SECONDS"),
        Family("csp_reports", Kind.COUNTER, "content security policy violation reports",
               "csp.reports", "{report}", native="CSP_REPORT_COUNT"),
        # --- the seed spec's metrics ------------------------------------------------------------------------
        Family("pending_servers", Kind.GAUGE, "Number of servers in pending state", "pending_servers",
               "{server}", origin="seed", snapshot="pending_servers",
               definition="Servers with an operation in progress (spawn, stop, check...), all of them: the seed "
                          "spec's gauge, without labels."),
        Family("pending_servers_by_kind", Kind.GAUGE, "Number of servers in pending state, by pending operation",
               "pending_servers_by_kind", "{server}", ("kind",), each(kind=PENDING_KINDS), origin="jh_otel",
               snapshot="pending_servers_by_kind",
               definition="`pending_servers` broken down by JupyterHub's pending kind (`Spawner.pending`); the kinds "
                          "add up to `pending_servers`."),
        Family("request_count", Kind.COUNTER, "Total number of HTTP requests", "request.count", "{request}",
               _REQUEST_LABELS, origin="seed", hook="requests",
               definition="The requests counted in `request_duration_seconds`, one each, errors included."),
        Family("login_success", Kind.COUNTER, "Total number of successful logins", "login.success", "{login}",
               origin="seed", hook="auth", definition="`BaseHandler.login_user` calls that returned a user."),
        Family("login_failure", Kind.COUNTER, "Total number of failed logins", "login.failure", "{login}",
               origin="seed", hook="auth",
               definition="`BaseHandler.login_user` calls that were refused or raised."),
        Family("spawn_duration_seconds", Kind.HISTOGRAM, "Time spent spawning servers", "spawn.duration", "s",
               ("spawner_class",), buckets=spawn, origin="seed", hook="spawn",
               definition="`User.spawn`, successful or not: `Spawner.start` until the server answers."),
        Family("spawn_success", Kind.COUNTER, "Total number of successful server spawns", "spawn.success",
               "{spawn}", ("spawner_class",), origin="seed", hook="spawn",
               definition="`User.spawn` calls that returned; `spawner_class` is the class name."),
        Family("spawn_failure", Kind.COUNTER, "Total number of failed server spawns", "spawn.failure",
               "{spawn}", ("spawner_class", "error_type"), origin="seed", hook="spawn",
               definition="`User.spawn` calls that raised; `error_type` is the exception's class name."),
        Family("spawn_phase_duration_seconds", Kind.HISTOGRAM, "Time spent in each phase of a server spawn",
               "spawn.phase.duration", "s", ("phase", "profile"), buckets=spawn, origin="jh_otel", hook="phases",
               definition="Each phase a spawn completed (`prepare`, `start`, `wait_up`, `proxy` for every spawner; "
                          "`scheduling`, `image_pull`, `container_start` from KubeSpawner-style progress events); "
                          "`profile` is the spawn's `user_options` profile (`OTEL_PYTHON_JUPYTERHUB_PROFILE_OPTION`), "
                          "`\"\"` without one, bounded (`OTEL_PYTHON_JUPYTERHUB_MAX_PROFILE_LABELS`)."),
        Family("spawn_profile_duration_seconds", Kind.HISTOGRAM, "Time spent spawning servers, by profile",
               "spawn.profile.duration", "s", ("profile", "status"), buckets=spawn, origin="jh_otel",
               hook="phases",
               definition="Whole spawns, from `User.spawn` until the route is added (or the spawn failed or was "
                          "cancelled: `status` `success`, `failure`, `cancelled`), by profile."),
        Family("hub_response_duration_seconds", Kind.HISTOGRAM, "Time for Hub to respond to requests",
               "hub_response.duration", "s", buckets=DEFAULT_BUCKETS, origin="seed", hook="requests",
               definition="Requests outside the REST API (pages, redirects, OAuth, static files): what a "
                          "browser waits for. With `api_request_duration_seconds` it partitions "
                          "`request_duration_seconds`."),
        Family("api_request_duration_seconds", Kind.HISTOGRAM, "Time spent handling API requests",
               "api_request.duration", "s", ("method", "endpoint", "status"), buckets=DEFAULT_BUCKETS,
               origin="seed", hook="requests",
               definition="Requests under `<base_url>hub/api/`; `endpoint` is the route template such as "
                          "`/hub/api/users/{user_name}`, `unmatched` when no route matched; `status` is the HTTP "
                          "status code."),
        Family("hub_memory_usage_bytes", Kind.GAUGE, "Resident memory of the hub process", "hub.memory.usage",
               "By", origin="seed", snapshot="hub_memory_usage_bytes"),
        Family("hub_memory_total_bytes", Kind.GAUGE, "Memory available to the hub process",
               "hub.memory.total", "By", origin="seed", snapshot="hub_memory_total_bytes",
               definition="The host's memory, or the hub's cgroup memory limit when that is lower."),
        Family("hub_cpu_usage_percent", Kind.GAUGE, "CPU used by the hub process", "hub.cpu.usage", "%",
               origin="seed", snapshot="hub_cpu_usage_percent",
               definition="Percent of one core, averaged over the last refresh interval."),
        Family("health_check_status", Kind.GAUGE, "Result of the last run of each health check",
               "health_check.status", "{status}", ("check",), origin="seed", hook="health",
               definition="1 healthy, 0 unhealthy, -1 error (the check raised or overran its timeout); "
                          "`check` is the name it was registered with."),
        Family("health_check_duration_seconds", Kind.GAUGE, "Duration of the last run of each health check",
               "health_check.duration", "s", ("check",), origin="seed", hook="health"),
        Family("health_check_timestamp_seconds", Kind.GAUGE, "When each health check last ran",
               "health_check.timestamp", "s", ("check",), origin="seed", hook="health",
               definition="Unix time of the last run's end: a check that stops running shows here."),
        Family("custom_events", Kind.COUNTER, "Total custom events", "custom.events", "{event}",
               ("event_type", "user"), origin="seed", hook="custom",
               definition="`jh_otel.custom.record_custom_event(event_type, user)`; `user` is `anonymous` when "
                          "not given, and bounded (`OTEL_PYTHON_JUPYTERHUB_MAX_USER_LABELS`)."),
        Family("custom_resource_usage", Kind.GAUGE, "Custom resource usage", "custom.resource_usage", "{value}",
               ("resource_type", "user"), origin="seed", hook="custom",
               definition="`jh_otel.custom.update_custom_gauge(resource_type, value, user)`; `user` is `system` "
                          "when not given, and bounded."),
        Family("custom_operation_duration_seconds", Kind.HISTOGRAM, "Custom operation duration",
               "custom.operation.duration", "s", ("operation", "status"), buckets=DEFAULT_BUCKETS, origin="seed",
               hook="custom",
               definition="`jh_otel.custom.time_custom_operation(operation)`, a decorator or context manager, "
                          "sync or async; `status` is `success`, or `error` when the operation raised."),
        Family("resource_usage", Kind.GAUGE, "Resource usage by dimension", "resource_usage", "{value}",
               ("resource_type", "username", "server_name"), origin="seed", hook="resources",
               definition="With `OTEL_PYTHON_JUPYTERHUB_RESOURCE_USAGE=on`, for servers of local-process "
                          "spawners: `cpu` (percent of one core) and `memory` (resident bytes) of each server's "
                          "process tree (the server and its kernels); `username` bounded."),
    )
    # fmt: on


@dataclass(frozen=True)
class Catalogue:
    prefix: str
    families: tuple[Family, ...]
    _by_name: dict[str, Family] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name.update((f.name, f) for f in self.families)

    def __getitem__(self, name: str) -> Family:
        return self._by_name[name]

    def __iter__(self):
        return iter(self.families)

    def names(self) -> list[str]:
        """Family names as collectors yield them (``<prefix>_<name>``, counters without ``_total``)."""
        return [f"{self.prefix}_{f.name}" for f in self.families]

    def markdown(self) -> str:
        """The README's metric table."""
        rows = [
            "| Prometheus name | type | labels | OTLP instrument (unit) | source | what it measures |",
            "|---|---|---|---|---|---|",
        ]
        for f in self.families:
            source = (
                f"native `{f.native}`" if f.native else f"snapshot `{f.snapshot}`" if f.snapshot else f"hook `{f.hook}`"
            )
            rows.append(
                f"| `{f.prometheus(self.prefix)}` | {f.kind.value} | {', '.join(f.labels) or '-'} | "
                f"`{f.instrument(self.prefix)}` ({f.unit}) | {f.origin}, {source} | "
                f"{f.definition or f.help} |"
            )
        return "\n".join(rows) + "\n"


def build_catalogue(settings: Settings) -> Catalogue:
    return Catalogue(settings.metrics_prefix, _families(settings))
