"""The harness's scenarios, declared as data: what each measures, the hubs' settings, setup, request mix and target.

Nothing here runs anything. ``benchmarks/harness.py`` reads :data:`SCENARIOS`; ``harness.py --readme`` renders this
table into ``benchmarks/README.md`` too, so the documentation cannot drift from what runs.

Placeholders in settings are filled per hub when it starts: ``{otlp_endpoint}`` (the live in-process OTLP receiver,
OTLP/HTTP), ``{closed_endpoint}`` (a loopback port nobody listens on: a collector that is down), ``{free_port}`` (a
free loopback port, e.g. for the Prometheus exporter). In request templates: ``{user}`` (a user of the op's pool),
``{offset}`` (a page start, a multiple of the page size within the users), ``{nonce}`` (a random hex string),
``{now}`` (the current time, ISO 8601 with ``Z``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# --------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One hub of a pair: ``jupyterhub`` alone (``wrapper=False``) or under ``opentelemetry-instrument``."""

    label: str
    wrapper: bool
    settings: Mapping[str, str] = field(default_factory=dict)
    extra_config: str = ""  # lines appended to the hub's jupyterhub_config.py


@dataclass(frozen=True)
class Step:
    """One HTTP request of an op."""

    method: str
    path: str  # template
    expect: tuple[int, ...] = (200,)
    body: Any = None  # a JSON body; templates in its strings are filled in
    headers: Mapping[str, str] = field(default_factory=dict)
    check: str = ""  # "ready-event": the (event-stream) body must hold the spawn's ready event
    after_202: str = ""  # "wait-stopped": on a 202, poll the user model until the server is gone (bounded)


@dataclass(frozen=True)
class Op:
    """A weighted operation of a request mix: one request, or a short flow (a spawn)."""

    name: str
    weight: float
    auth: str  # "none" | "service" (the hub's service token, admin scopes) | "server" (the user's server token,
    # as jupyterhub-singleuser has it) | "cookie" (the user's browser login cookies, with the _xsrf header)
    steps: tuple[Step, ...]
    pool: str = ""  # whose request: "running" (users with a server), "spawn" (a per-connection spawn pool),
    # "admin", or "" (nobody in particular)
    what: str = ""
    traced: bool = True  # jh_otel makes a request span for it (probes are counted, not traced, by default)


@dataclass(frozen=True)
class Setup:
    users: int = 0  # created as user00000, user00001, ... (JupyterHub's own "admin" is there too)
    running_servers: int = 0  # the first N users get a server (of the spawner below)
    spawn_pool_per_connection: int = 0  # users per load connection that the mix spawns and stops
    spawner: str = "default"  # "fast": tests/fastspawner.py's in-process spawner; "default": the test hub's
    # SimpleLocalProcessSpawner (real jupyterhub-singleuser servers)


@dataclass(frozen=True)
class Target:
    """A target from the issue and how it is judged."""

    metric: str  # a key of the scenario's summary
    op: str  # ">=" or "<="
    value: float
    words: str  # the issue's words
    judged: str = "ci"  # "ci": the 95 % confidence interval of the mean paired ratio (met when all of it is on
    # the right side, not met when none of it is, unclear when it straddles); "value": one measured value


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # "load" | "breakdown" | "pipeline" | "shutdown" | "scrape" | "latency" | "cycles" | "outage" | "imports"
    measures: str
    candidate: Variant
    baseline: Variant = field(default_factory=lambda: PLAIN)
    setup: Setup = field(default_factory=Setup)
    mix: tuple[Op, ...] = ()
    connections: int = 4
    rounds: int = 8  # full mode; ABBA pairs of (baseline, candidate) runs
    duration_s: float = 10.0  # per measured run, full mode
    warmup_s: float = 3.0  # unmeasured load on each hub before the first round
    targets: tuple[Target, ...] = ()
    default: bool = True  # part of a run without --scenario
    params: Mapping[str, Any] = field(default_factory=dict)  # kind-specific; smoke_* keys override in smoke mode


# --------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------

PLAIN = Variant("plain", wrapper=False)

OTLP_HTTP = {
    "OTEL_SERVICE_NAME": "jupyterhub",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "{otlp_endpoint}",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",  # what the README recommends for the hub (gRPC: +9 MiB)
}
DEFAULT_SETTINGS = dict(OTLP_HTTP)
"""An operator's minimum: where the collector is. Everything else at its default: the distro's exporters (traces,
metrics and logs over OTLP), the SDK's sampler (``parentbased_always_on``) and batch and export schedules, jh_otel's
settings (probes counted, not traced; snapshot every 15 s)."""

FULL_SAMPLING = {
    **OTLP_HTTP,
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_TRACES_SAMPLER": "always_on",  # every request traced, SQL spans included (jh_otel's default)
    "OTEL_METRICS_EXPORTER": "prometheus,otlp",
    "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
    "OTEL_EXPORTER_PROMETHEUS_PORT": "{free_port}",
}
"""Traces at full sampling over OTLP/HTTP to the live receiver, metrics over Prometheus and OTLP; the SDK's own
schedules (spans batched every 5 s or 512 spans, metrics exported every 60 s)."""

SPAN_BUFFER = "OTEL_PYTHON_JUPYTERHUB_SPAN_BUFFER"
JH_OTEL_DEFAULT = Variant("jh_otel", wrapper=True, settings=DEFAULT_SETTINGS)
JH_OTEL_FULL = Variant("jh_otel", wrapper=True, settings=FULL_SAMPLING)

# --------------------------------------------------------------------------
# Request mixes
# --------------------------------------------------------------------------

JSON = {"Content-Type": "application/json"}
PAGINATED = {"Accept": "application/jupyterhub-pagination+json"}

HEALTH = Op(
    "health", 1, "none", (Step("GET", "/hub/health"),), what="the probe a load balancer or kubelet sends", traced=False
)
API_ROOT = Op("api", 1, "none", (Step("GET", "/hub/api"),), what="the hub's version: no auth, no SQL, one span")
USER_LIST_ALL = Op(
    "users", 1, "service", (Step("GET", "/hub/api/users"),), what="every user model, as a service lists them"
)

ACTIVITY = Op(
    "activity",
    40,
    "server",
    (
        Step(
            "POST",
            "/hub/api/users/{user}/activity",
            body={"servers": {"": {"last_activity": "{now}"}}, "last_activity": "{now}"},
            headers=JSON,
        ),
    ),
    pool="running",
    what="a running server reporting activity with its own token, as jupyterhub-singleuser does",
)
USER_MODEL = Op(
    "user-model",
    20,
    "cookie",
    (Step("GET", "/hub/api/users/{user}"),),
    pool="running",
    what="a logged-in user's own model (the home page's and JupyterLab's hub extension's request)",
)
OAUTH = Op(
    "oauth-redirect",
    15,
    "cookie",
    (
        Step(
            "GET",
            "/hub/api/oauth2/authorize?client_id=jupyterhub-user-{user}&redirect_uri=%2Fuser%2F{user}%2Foauth_callback"
            "&response_type=code&state={nonce}",
            expect=(302,),
        ),
    ),
    pool="running",
    what="a browser opening its own server: the hub's OAuth authorize, answered by a 302 with a code",
)
USER_PAGE = Op(
    "user-list",
    10,
    "cookie",
    (Step("GET", "/hub/api/users?include_stopped_servers=1&offset={offset}&limit=50", headers=PAGINATED),),
    pool="admin",
    what="the admin panel's user list: a page of 50 of the 1,000 users",
)
TOKEN = Op(
    "token",
    10,
    "cookie",
    (
        Step(
            "POST",
            "/hub/api/users/{user}/tokens",
            expect=(201,),
            body={"note": "bench", "expires_in": 3600},
            headers=JSON,
        ),
    ),
    pool="running",
    what="the token page creating an API token (expires in an hour)",
)
SPAWN = Op(
    "spawn",
    5,
    "cookie",
    (
        Step("POST", "/hub/api/users/{user}/server", expect=(201, 202), headers=JSON),
        Step("GET", "/hub/api/users/{user}/server/progress", check="ready-event"),
        Step("DELETE", "/hub/api/users/{user}/server", expect=(204, 202), after_202="wait-stopped"),
    ),
    pool="spawn",
    what="start a server, follow its progress event stream to the ready event, stop it",
)
REALISTIC_MIX = (ACTIVITY, USER_MODEL, OAUTH, USER_PAGE, TOKEN, SPAWN)

# --------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------

RSS_TARGET = Target("rss_delta_mib", "<=", 15.0, "RSS <= plain + 15 MiB", judged="value")

_API = Scenario(
    name="api",
    kind="load",
    measures="`GET /hub/api`, the cheapest traced request, at full sampling",
    candidate=JH_OTEL_FULL,
    mix=(API_ROOT,),
    targets=(
        Target("throughput_ratio", ">=", 0.80, "`GET /hub/api` at full sampling >= 0.80x plain throughput"),
        Target("cpu_ratio", "<=", 1.25, "hub CPU per request <= 1.25x"),
        RSS_TARGET,
    ),
)

_USERS_200 = Scenario(
    name="users-200",
    kind="load",
    measures="`GET /hub/api/users` at 200 users (about 10 SQL spans per request) at full sampling",
    candidate=JH_OTEL_FULL,
    setup=Setup(users=200),
    mix=(USER_LIST_ALL,),
    targets=(
        Target("throughput_ratio", ">=", 0.95, "`/hub/api/users` at 200 users with SQL spans >= 0.95x"),
        RSS_TARGET,
    ),
)

_MIX_1000 = Scenario(
    name="mix-1000",
    kind="load",
    measures="a realistic hub mix at 1,000 users (50 running servers) at full sampling",
    candidate=JH_OTEL_FULL,
    setup=Setup(users=1000, running_servers=50, spawn_pool_per_connection=4, spawner="fast"),
    mix=REALISTIC_MIX,
    duration_s=20.0,
    targets=(
        Target("throughput_ratio", ">=", 0.95, "the realistic mix at full sampling >= 0.95x"),
        RSS_TARGET,
    ),
)

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="probe",
        kind="load",
        measures="`GET /hub/health` throughput and hub CPU per request, jh_otel at its default settings",
        candidate=JH_OTEL_DEFAULT,
        mix=(HEALTH,),
        targets=(
            Target("throughput_ratio", ">=", 0.95, "`/hub/health` at default settings >= 0.95x plain throughput"),
            RSS_TARGET,
        ),
    ),
    _API,
    _USERS_200,
    _MIX_1000,
    Scenario(
        name="pipeline",
        kind="pipeline",
        measures="spans through the hub's export pipeline, in a child process, to the live receiver",
        candidate=JH_OTEL_FULL,
        baseline=PLAIN,
        targets=(Target("paced_lost", "<=", 0, "no span lost at 5,000 spans/s", judged="value"),),
        params={
            "spans": 50_000,
            "paced_spans": 50_000,
            "rate": 5000.0,
            "smoke_spans": 10_000,
            "smoke_paced_spans": 10_000,
        },
    ),
    Scenario(
        name="shutdown",
        kind="shutdown",
        measures="hub exit (SIGTERM to exit) with the OTLP collector unreachable, traces at full sampling",
        candidate=Variant(
            "jh_otel", wrapper=True, settings={**FULL_SAMPLING, "OTEL_EXPORTER_OTLP_ENDPOINT": "{closed_endpoint}"}
        ),
        targets=(Target("exit_s_max", "<=", 2.0, "hub exit <= 2 s with the collector unreachable", judged="value"),),
        params={"pairs": 3, "smoke_pairs": 1},
    ),
    Scenario(
        name="scrape-10k",
        kind="scrape",
        measures="`/hub/metrics` at 10,000 users, and the event loop's longest stalls (snapshot refresh every 2 s)",
        candidate=Variant(
            "jh_otel", wrapper=True, settings={**FULL_SAMPLING, "OTEL_PYTHON_JUPYTERHUB_REFRESH_INTERVAL": "2"}
        ),
        setup=Setup(users=10_000),
        targets=(Target("scrape_ms", "<=", 50.0, "`/hub/metrics` scrape at 10,000 users under 50 ms", judged="value"),),
        params={"scrapes": 20, "probe_s": 8.0, "smoke_users": 2000, "smoke_probe_s": 3.0},
    ),
    Scenario(
        name="churn",
        kind="cycles",
        measures="spawn/stop churn with the in-process FastSpawner: RSS growth over 1,000 cycles, time per cycle",
        candidate=JH_OTEL_FULL,
        setup=Setup(spawner="fast"),
        targets=(
            Target("rss_growth_delta_mib", "<=", 3.0, "RSS growth over the cycles <= plain's + 3 MiB", judged="value"),
            Target("cycle_ratio", "<=", 1.1, "time per cycle <= 1.1x plain"),
        ),
        params={"blocks": 10, "block_cycles": 100, "smoke_blocks": 3, "smoke_block_cycles": 10},
    ),
    Scenario(
        name="outage",
        kind="outage",
        measures="a collector down for 2 minutes, then flapping (10 s up, 10 s down), under 50 requests/s: the SDK's "
        "delivery (baseline) against jh_otel's outbox",
        baseline=Variant("sdk-delivery", wrapper=True, settings={**FULL_SAMPLING, SPAN_BUFFER: "0"}),
        candidate=JH_OTEL_FULL,
        targets=(
            Target("lost_up", "<=", 0, "through flapping, spans made while the collector is up arrive", judged="value"),
            Target(
                "rss_growth_mib", "<=", 3.0, "memory returns to within 3 MiB of its level before the outage", "value"
            ),
        ),
        params={
            "path": "/hub/api/users/user00001",
            "users": 10,
            "rate": 50.0,
            "warm_s": 20.0,
            "down_s": 120.0,
            "flaps": 6,
            "flap_s": 10.0,
            "settle_s": 30.0,
            "smoke_warm_s": 5.0,
            "smoke_down_s": 10.0,
            "smoke_flaps": 2,
            "smoke_flap_s": 5.0,
            "smoke_settle_s": 12.0,
        },
    ),
    Scenario(
        name="imports",
        kind="imports",
        measures="RSS each import of a jh_otel hub adds to a plain hub's (`jupyterhub.app`), in the order given",
        candidate=JH_OTEL_FULL,
        params={
            "baseline_module": "jupyterhub.app",
            "modules": (
                "jupyterhub.app",
                "opentelemetry.sdk.trace",
                "opentelemetry.sdk.metrics",
                "opentelemetry.sdk._logs",
                "opentelemetry.instrumentation.auto_instrumentation",
                "opentelemetry.distro",
                "opentelemetry.exporter.otlp.proto.http.trace_exporter",
                "opentelemetry.exporter.otlp.proto.http.metric_exporter",
                "opentelemetry.exporter.otlp.proto.http._log_exporter",
                "opentelemetry.exporter.prometheus",
                "opentelemetry.instrumentation.tornado",
                "opentelemetry.instrumentation.sqlalchemy",
                "opentelemetry.instrumentation.aiohttp_client",
                "jh_otel.runtime",
                "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
            ),
            "not_loaded_over_http": ("opentelemetry.exporter.otlp.proto.grpc.trace_exporter",),
            "repeat": 5,
            "smoke_repeat": 1,
        },
    ),
    # ---- not in a default run: comparisons for a question at hand (--scenario NAME) ----
    # where a load scenario's hub CPU goes, from inside each hub (benchmarks/costprobe.py; its timers cost a little,
    # so these runs' throughput is not the load scenarios')
    *(
        Scenario(
            name=f"{of.name}-breakdown",
            kind="breakdown",
            measures=f"where the hub's CPU goes in `{of.name}`: GC, threads, jh_otel's and the SDK's functions",
            candidate=of.candidate,
            setup=of.setup,
            mix=of.mix,
            rounds=2,
            duration_s=15.0,
            default=False,
        )
        for of in (_API, _USERS_200, _MIX_1000)
    ),
    Scenario(
        name="singleuser",
        kind="cycles",
        measures="start and stop of a real jupyterhub-singleuser server (the servers do not inherit the wrapper)",
        candidate=JH_OTEL_FULL,
        setup=Setup(spawner="default"),
        default=False,
        params={"blocks": 4, "block_cycles": 3, "smoke_blocks": 2, "smoke_block_cycles": 1},
    ),
    Scenario(
        name="wrapper-only",
        kind="load",
        measures="`GET /hub/api` under the wrapper with every instrumentation disabled: the SDK's and exporters' share",
        candidate=Variant(
            "wrapper",
            wrapper=True,
            settings={
                **FULL_SAMPLING,
                "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "jupyterhub,tornado,sqlalchemy,aiohttp-client",
            },
        ),
        mix=(API_ROOT,),
        default=False,
    ),
    Scenario(
        name="exemplars",
        kind="load",
        measures="`GET /hub/api/users` at 200 users: exemplars on against off (both jh_otel at full sampling)",
        baseline=Variant(
            "exemplars off", wrapper=True, settings={**FULL_SAMPLING, "OTEL_PYTHON_JUPYTERHUB_EXEMPLARS": "off"}
        ),
        candidate=Variant(
            "exemplars on", wrapper=True, settings={**FULL_SAMPLING, "OTEL_PYTHON_JUPYTERHUB_EXEMPLARS": "on"}
        ),
        setup=Setup(users=200),
        mix=(USER_LIST_ALL,),
        default=False,
    ),
    Scenario(
        name="background",
        kind="latency",
        measures="event-loop stalls while health checks and per-server resource sampling run every second",
        baseline=Variant(
            "quiet",
            wrapper=True,
            settings={**FULL_SAMPLING, "OTEL_PYTHON_JUPYTERHUB_HEALTH_INTERVAL": "3600"},
        ),
        candidate=Variant(
            "busy",
            wrapper=True,
            settings={
                **FULL_SAMPLING,
                "OTEL_PYTHON_JUPYTERHUB_HEALTH_INTERVAL": "1",
                "OTEL_PYTHON_JUPYTERHUB_RESOURCE_USAGE": "on",
                "OTEL_PYTHON_JUPYTERHUB_REFRESH_INTERVAL": "1",
            },
            extra_config=(
                "import os\n"
                "from jh_otel import health\n"
                'health.register_check("tmp_writable", lambda: os.access("/tmp", os.W_OK), interval=1, timeout=2)\n'
            ),
        ),
        setup=Setup(users=2000, running_servers=3, spawner="default"),
        default=False,
        params={"probe_s": 20.0, "rounds": 2, "smoke_probe_s": 4.0, "smoke_rounds": 1, "smoke_users": 200},
    ),
)

BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}


def param(scenario: Scenario, key: str, smoke: bool) -> Any:
    """A kind-specific parameter, its ``smoke_`` variant in smoke mode when there is one."""
    if smoke and f"smoke_{key}" in scenario.params:
        return scenario.params[f"smoke_{key}"]
    return scenario.params[key]
