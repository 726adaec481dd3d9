"""Health checks: built-in ones for the database, the proxy and the spawners, plus any registered from
``jupyterhub_config.py``, scheduled on the hub's IOLoop, exposed as metrics and as JSON.

::

    from jh_otel import health

    async def home_volume():                       # or a plain function: it then runs in a worker thread
        return os.statvfs("/home").f_bavail > 1e6  # truthy: healthy; falsy (or (False, "why")): unhealthy

    health.register_check("home_volume", home_volume, interval=60, timeout=5)

Each check runs every ``interval`` seconds, bounded by ``timeout``. Its result is ``healthy``, ``unhealthy``, or
``error`` (it raised or overran its timeout), with the run's duration and time. Results go to
``jupyterhub_health_check_status{check}`` (1, 0, -1), ``..._duration_seconds`` and ``..._timestamp_seconds``, and
to ``GET <hub>/api/jh-otel/health`` (JSON, ``read:metrics`` scope). A check's change of state is logged once.

Built-in checks (every ``OTEL_PYTHON_JUPYTERHUB_HEALTH_INTERVAL`` seconds):

- ``database``: ``SELECT 1`` on a pooled connection of the hub's engine (the hub's session and transaction stay
  untouched), and for SQLite a fresh read-only open of the database file (pooled connections keep working on a
  file that new connections can no longer open), in a thread of its own: a locked file or a stalled disk makes the
  check unhealthy or an error within its timeout, never the hub's event loop wait;
- ``proxy``: the proxy's routing table read through its API within the timeout, with the proxy's API request
  itself (``ConfigurableHTTPProxy.api_request``), not ``get_all_routes``, which JupyterHub times into
  ``jupyterhub_proxy_poll_duration_seconds``: that family counts JupyterHub's own polls only;
- ``spawners``: no server pending a spawn longer than its spawner's ``start_timeout + http_timeout`` (read from the
  hub-state snapshot's walk over the spawners, so at most ``OTEL_PYTHON_JUPYTERHUB_REFRESH_INTERVAL`` old).

Checks run with OpenTelemetry's instrumentation suppressed, their threads too: polling the proxy and the database
every interval makes no span.

Async checks run on the IOLoop and must not block it; sync checks run in a daemon thread of their own
(:mod:`jh_otel._offloop`), one run at a time per check: while a run that overran its timeout is still going, the
next runs report ``error`` instead of piling up, and the hub's exit never waits for it.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from opentelemetry.instrumentation.utils import suppress_instrumentation

from ._offloop import OffLoop
from .snapshot import Snapshot, one_row, shares_one_connection

log = logging.getLogger(__name__)

HEALTHY, UNHEALTHY, ERROR, UNKNOWN = "healthy", "unhealthy", "error", "unknown"
STATUS_VALUE = {HEALTHY: 1.0, UNHEALTHY: 0.0, ERROR: -1.0}
URL = "api/jh-otel/health"
"""Under the hub's prefix (``/hub/``)."""


@dataclass(frozen=True)
class Check:
    name: str
    function: Callable[..., Any]
    interval: float = 60.0
    timeout: float = 10.0


@dataclass(frozen=True)
class Result:
    status: str
    duration_seconds: float
    time: str
    """ISO 8601, UTC, when the run ended."""
    detail: str = ""


class CheckRegistry:
    """The checks registered from ``jupyterhub_config.py`` (before or after the hub is instrumented); the running
    :class:`HealthChecks` of a hub follows it."""

    def __init__(self) -> None:
        self.checks: dict[str, Check] = {}
        self._followers: list[HealthChecks] = []

    def add(self, check: Check) -> None:
        self.checks[check.name] = check
        for runner in list(self._followers):
            runner.add(check)

    def follow(self, runner: HealthChecks) -> None:
        self._followers.append(runner)
        for check in self.checks.values():
            runner.add(check)

    def unfollow(self, runner: HealthChecks) -> None:
        if runner in self._followers:
            self._followers.remove(runner)


REGISTRY = CheckRegistry()
"""Where :func:`register_check` registers by default (like ``prometheus_client.REGISTRY``)."""


def register_check(
    name: str,
    function: Callable[..., Any],
    interval: float = 60,
    timeout: float = 10,
    registry: CheckRegistry = REGISTRY,
) -> None:
    """Register a check (sync or async, no arguments; truthy result: healthy). Never raises: a bad registration
    logs one line and is ignored."""
    problem = ""
    if not isinstance(name, str) or not name:
        problem = "name must be a non-empty string"
    elif not callable(function):
        problem = "function must be callable"
    elif not (isinstance(interval, int | float) and 1 <= interval <= 86400):
        problem = "interval must be a number of seconds from 1 to 86400"
    elif not (isinstance(timeout, int | float) and 0 < timeout <= 3600):
        problem = "timeout must be a number of seconds above 0, at most 3600"
    if problem:
        log.error("jh_otel: health check %r not registered: %s", name, problem)
        return
    registry.add(Check(name, function, float(interval), float(timeout)))


def _outcome(value: Any) -> tuple[str, str]:
    if isinstance(value, tuple) and len(value) == 2:
        ok, detail = value
        return (HEALTHY if ok else UNHEALTHY), str(detail)
    return (HEALTHY if value else UNHEALTHY), ""


class HealthChecks:
    """Runs the checks of one hub on its IOLoop; keeps the last result of each."""

    def __init__(self, record: Callable[[str, Result], None]) -> None:
        self._record = record
        self.checks: dict[str, Check] = {}
        self.results: dict[str, Result] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._threads = OffLoop()
        self._running = False

    def add(self, check: Check) -> None:
        self.checks[check.name] = check
        if self._running:
            self._start(check)

    def start(self) -> None:
        self._running = True
        for check in self.checks.values():
            self._start(check)

    def _start(self, check: Check) -> None:
        previous = self._tasks.pop(check.name, None)
        if previous is not None:
            previous.cancel()
        self._tasks[check.name] = asyncio.ensure_future(self._loop(check))

    async def _loop(self, check: Check) -> None:
        while True:
            try:
                await self.run(check)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("jh_otel: health check %s could not run", check.name, exc_info=True)
            await asyncio.sleep(check.interval)

    async def run(self, check: Check) -> Result:
        """One run of ``check``, recorded and returned."""
        start = time.perf_counter()
        try:
            with suppress_instrumentation():
                if inspect.iscoroutinefunction(check.function):
                    value = await asyncio.wait_for(check.function(), check.timeout)
                else:
                    value = await self._threads.run(check.name, check.function, check.timeout)
            status, detail = _outcome(value)
        except asyncio.TimeoutError as error:
            status, detail = ERROR, str(error) or f"no answer within {check.timeout:g} s"
        except Exception as error:
            status, detail = ERROR, f"{type(error).__name__}: {error}"
        result = Result(
            status,
            round(time.perf_counter() - start, 6),
            datetime.now(timezone.utc).isoformat(timespec="seconds"),
            detail[:500],
        )
        previous = self.results.get(check.name)
        self.results[check.name] = result
        if previous is None or previous.status != result.status:
            level = logging.INFO if status == HEALTHY else logging.WARNING
            was = previous.status if previous else UNKNOWN
            log.log(level, "jh_otel: health check %s: %s -> %s%s", check.name, was, status, detail and f" ({detail})")
        self._record(check.name, result)
        return result

    def stop(self) -> None:
        self._running = False
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()

    def report(self) -> dict[str, Any]:
        """The JSON document: overall status and each check's last result."""
        checks = {
            name: asdict(self.results[name]) if name in self.results else {"status": UNKNOWN}
            for name in sorted(self.checks)
        }
        statuses = {c["status"] for c in checks.values()}
        overall = next((s for s in (ERROR, UNHEALTHY) if s in statuses), HEALTHY if HEALTHY in statuses else UNKNOWN)
        return {"status": overall, "checks": checks}


# --- built-in checks ------------------------------------------------------------------------------------------------


def builtin_checks(app: Any, interval: float, snapshot: Callable[[], Snapshot | None]) -> list[Check]:
    timeout = min(10.0, interval)
    engine = app.db.get_bind()
    path = _sqlite_file(getattr(app, "db_url", ""))

    def database() -> tuple[bool, str]:
        """In a thread of its own: nothing here may wait on the hub's event loop."""
        from sqlalchemy import text

        try:  # on a pooled connection of the hub's engine: the hub's session and its transaction stay untouched
            one_row(engine, text("SELECT 1"))
        except Exception as error:
            return False, f"the hub's database: {type(error).__name__}: {error}"
        if path:
            try:
                # SQLite's busy wait ends before the check's timeout, so a locked file reads as unhealthy
                connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout * 0.8)
                try:
                    connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
                finally:
                    connection.close()
            except sqlite3.Error as error:
                return False, f"{path}: {error}"
        return True, ""

    async def database_in_memory() -> tuple[bool, str]:
        """In-memory SQLite: one connection the hub shares, usable on its loop only and never locked by others."""
        from sqlalchemy import text

        try:
            app.db.execute(text("SELECT 1")).one()
        except Exception as error:
            return False, f"the hub's database: {type(error).__name__}: {error}"
        return True, ""

    async def proxy() -> tuple[bool, str]:
        try:
            routes = await asyncio.wait_for(proxy_routes(app.proxy), timeout * 0.9)
        except asyncio.TimeoutError:
            return False, f"the proxy's API did not answer within {timeout * 0.9:g} s"
        except Exception as error:
            return False, f"{type(error).__name__}: {error}"
        return True, f"{routes} routes"

    async def spawners() -> tuple[bool, str]:
        now = time.time()
        current = snapshot()
        if current is None:
            return True, "no snapshot yet"
        stuck = [name for name, started, limit in current.spawns if now - started > limit]
        if stuck:
            return False, f"{len(stuck)} spawn(s) pending past start_timeout + http_timeout: {', '.join(stuck[:10])}"
        return True, ""

    return [
        Check("database", database_in_memory if shares_one_connection(engine) else database, interval, timeout),
        Check("proxy", proxy, interval, timeout),
        Check("spawners", spawners, interval, timeout),
    ]


async def proxy_routes(proxy: Any) -> int:
    """How many routes the proxy's API lists. configurable-http-proxy is asked with its own API request, not
    ``get_all_routes``: JupyterHub times that into ``jupyterhub_proxy_poll_duration_seconds``, which must count
    JupyterHub's own polls only. Other proxies (which JupyterHub does not time) answer ``get_all_routes``."""
    request = getattr(proxy, "api_request", None)
    if request is None:
        return len(await proxy.get_all_routes())
    response = await request("")
    body = getattr(response, "body", None)
    if isinstance(body, bytes):  # JupyterHub 5: tornado's response
        return len(json.loads(body.decode("utf-8", "replace")))
    return len(await response.json())  # JupyterHub 6: aiohttp's


def _sqlite_file(url: str) -> str:
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return ""
    path = url[len(prefix) :].split("?", 1)[0]
    return "" if path in ("", ":memory:") else path


# --- the JSON handler -----------------------------------------------------------------------------------------------


def handler_class(checks: HealthChecks) -> type:
    """``GET <hub>/api/jh-otel/health``: the report of ``checks``, for a token or session with the ``read:metrics``
    scope."""
    from jupyterhub.apihandlers.base import APIHandler
    from jupyterhub.scopes import needs_scope

    class HealthReportHandler(APIHandler):
        @needs_scope("read:metrics")
        def get(self) -> None:
            self.set_header("Content-Type", "application/json")
            self.write(json.dumps(checks.report()))

    return HealthReportHandler
