"""The health-check runner: outcomes, timeouts, sync checks off the loop, one log line per change, the report."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from types import SimpleNamespace

import pytest
import sqlalchemy
from sqlalchemy.orm import Session

from jh_otel import health
from jh_otel.health import Check, HealthChecks
from jh_otel.snapshot import Snapshot
from sqlitelock import locked, longest_gap


def in_memory_app(url: str = "sqlite://") -> SimpleNamespace:
    """What the built-in checks read of a hub: its database session and URL."""
    engine = sqlalchemy.create_engine(url)
    return SimpleNamespace(db=Session(engine), db_url=url)


def run(check: Check, runner: HealthChecks | None = None) -> health.Result:
    runner = runner or HealthChecks(lambda name, result: None)
    return asyncio.run(runner.run(check))


async def healthy():
    return True


async def unhealthy_with_reason():
    return False, "disk full"


async def raises():
    raise RuntimeError("boom")


async def hangs():
    await asyncio.sleep(60)


@pytest.mark.parametrize(
    ("function", "status", "detail"),
    [
        (healthy, "healthy", ""),
        (unhealthy_with_reason, "unhealthy", "disk full"),
        (raises, "error", "RuntimeError: boom"),
        (hangs, "error", "no answer within 0.2 s"),
        (lambda: 1, "healthy", ""),
        (lambda: None, "unhealthy", ""),
    ],
)
def test_outcomes(function, status: str, detail: str) -> None:
    """Each outcome gives its status and detail (a falsy return ``unhealthy``, an exception or a timeout ``error`` with
    its text), a duration under 5 s and a UTC time."""
    result = run(Check("c", function, timeout=0.2))
    assert (result.status, result.detail) == (status, detail)
    assert result.duration_seconds < 5 and result.time.endswith("+00:00")


def test_a_sync_check_runs_off_the_event_loop() -> None:
    """A sync check runs in a thread other than the main one, the event loop keeps ticking while it blocks, and its
    result is ``healthy``."""
    threads = []

    def blocking() -> bool:
        threads.append(threading.current_thread())
        time.sleep(0.3)
        return True

    async def main() -> tuple[health.Result, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.ensure_future(ticker())
        result = await HealthChecks(lambda n, r: None).run(Check("sync", blocking))
        task.cancel()
        return result, ticks

    result, ticks = asyncio.run(main())
    assert result.status == "healthy"
    assert threads and threads[0] is not threading.main_thread()
    assert ticks >= 10  # the loop kept running while the check slept


def test_state_changes_are_logged_once_and_recorded_every_time(caplog) -> None:
    """Every run of a check is recorded, and only a change of status is logged, one line each (``unknown -> healthy``,
    ``healthy -> unhealthy``, ...)."""
    recorded = []
    state = {"ok": True}

    async def flapping() -> bool:
        return state["ok"]

    runner = HealthChecks(lambda name, result: recorded.append((name, result.status)))
    check = Check("flap", flapping)

    async def main() -> None:
        for ok in (True, True, False, False, False, True):
            state["ok"] = ok
            await runner.run(check)

    with caplog.at_level(logging.INFO, logger="jh_otel.health"):
        asyncio.run(main())
    assert [s for _, s in recorded] == ["healthy"] * 2 + ["unhealthy"] * 3 + ["healthy"]
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "jh_otel: health check flap: unknown -> healthy",
        "jh_otel: health check flap: healthy -> unhealthy",
        "jh_otel: health check flap: unhealthy -> healthy",
    ]


def test_the_report_is_the_worst_status() -> None:
    """The report is ``unknown`` with every check ``unknown`` until one has run, then the worst status of those that ran
    (``healthy``, then ``unhealthy``, then ``error``), with each check's detail."""
    runner = HealthChecks(lambda n, r: None)
    for name in ("a", "b"):
        runner.add(Check(name, healthy))
    assert runner.report() == {"status": "unknown", "checks": {"a": {"status": "unknown"}, "b": {"status": "unknown"}}}
    asyncio.run(runner.run(runner.checks["a"]))
    assert runner.report()["status"] == "healthy"
    runner.add(Check("c", unhealthy_with_reason))
    asyncio.run(runner.run(runner.checks["c"]))
    assert runner.report()["status"] == "unhealthy"
    runner.add(Check("d", raises))
    asyncio.run(runner.run(runner.checks["d"]))
    report = runner.report()
    assert report["status"] == "error"
    assert report["checks"]["c"]["detail"] == "disk full"


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("", healthy), "name must be a non-empty string"),
        (("x", "not callable"), "function must be callable"),
        (("x", healthy, 0), "interval must be a number of seconds from 1 to 86400"),
        (("x", healthy, 60, 0), "timeout must be a number of seconds above 0"),
    ],
)
def test_a_bad_registration_logs_one_line(args, problem: str, caplog) -> None:
    """A registration with a bad name, function, interval or timeout logs its problem and registers nothing."""
    registry = health.CheckRegistry()
    health.register_check(*args, registry=registry)
    assert problem in caplog.text
    assert registry.checks == {}


def test_checks_registered_before_or_after_the_runner_exists_are_run() -> None:
    """A runner that follows the registry gets the checks registered before and after it started following."""
    registry = health.CheckRegistry()
    health.register_check("early", healthy, registry=registry)
    runner = HealthChecks(lambda n, r: None)
    registry.follow(runner)
    health.register_check("late", healthy, registry=registry)
    assert set(runner.checks) == {"early", "late"}
    registry.unfollow(runner)
    health.register_check("after", healthy, registry=registry)
    assert "after" not in runner.checks


@pytest.mark.parametrize(
    ("age", "limit", "status"),
    [(5, 30, "healthy"), (40, 30, "unhealthy"), (100, 630, "healthy"), (700, 630, "unhealthy")],
)
def test_the_spawners_check_finds_spawns_pending_past_their_timeout(age: float, limit: float, status: str) -> None:
    """A spawn pending longer than its spawner's start and HTTP timeouts makes the spawners check unhealthy."""
    snapshot = Snapshot(spawns=(("alice/gpu", time.time() - age, limit),))
    (check,) = [c for c in health.builtin_checks(in_memory_app(), 30, lambda: snapshot) if c.name == "spawners"]
    result = run(check)
    assert result.status == status, result
    if status == "unhealthy":
        assert result.detail == "1 spawn(s) pending past start_timeout + http_timeout: alice/gpu"


def test_checks_run_untraced() -> None:
    """Polling the proxy and the database every interval makes no spans (nor any other instrumented call)."""
    from opentelemetry.instrumentation.utils import is_instrumentation_enabled

    seen = []

    async def probe() -> bool:
        seen.append(is_instrumentation_enabled())
        return True

    run(Check("probe", probe))
    assert seen == [False]
    assert is_instrumentation_enabled()


def test_a_sync_check_that_hangs_is_timed_out_never_doubled_and_runs_in_a_daemon_thread() -> None:
    """A sync check that never returns is an error at its timeout, the next run does not start a second copy, and
    its thread is a daemon, so the hub's exit does not wait for it."""
    release = threading.Event()
    threads: list[threading.Thread] = []

    def hangs_forever() -> bool:
        threads.append(threading.current_thread())
        release.wait(30)
        return True

    runner = HealthChecks(lambda n, r: None)
    check = Check("hang", hangs_forever, timeout=0.2)

    async def main() -> list[health.Result]:
        return [await runner.run(check), await runner.run(check)]

    first, second = asyncio.run(main())
    release.set()
    assert (first.status, first.detail) == ("error", "no answer within 0.2 s")
    assert second.status == "error" and second.detail.startswith("still running since an earlier run")
    assert len(threads) == 1 and threads[0].daemon


def test_a_sync_check_runs_with_instrumentation_suppressed_in_its_thread() -> None:
    """The suppression that keeps checks untraced reaches the thread a sync check runs in."""
    from opentelemetry.instrumentation.utils import is_instrumentation_enabled

    seen = []
    run(Check("sync", lambda: seen.append(is_instrumentation_enabled()) or True))
    assert seen == [False]


def test_the_database_check_of_a_locked_sqlite_file_fails_within_its_timeout_without_holding_the_loop(tmp_path) -> None:
    """Another process holds the hub's SQLite file locked: the database check is unhealthy (or an error) within its
    timeout while the event loop keeps ticking."""
    path = tmp_path / "hub.sqlite"
    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("CREATE TABLE users (id INTEGER)"))
    app = SimpleNamespace(db=Session(engine), db_url=f"sqlite:///{path}")
    (check,) = [c for c in health.builtin_checks(app, 1.0, lambda: None) if c.name == "database"]
    with locked(path):
        result, gap = asyncio.run(longest_gap(HealthChecks(lambda n, r: None).run(check)))
    assert result.status in ("unhealthy", "error"), result
    assert result.duration_seconds < 1.5
    assert gap < 0.2


class _ChpResponse:
    """What JupyterHub 6's proxy API request returns (aiohttp)."""

    async def json(self) -> dict:
        return {"/": {"target": "http://127.0.0.1:8081", "jupyterhub": True}, "/user/a/": {}}


class _Proxy:
    def __init__(self, response) -> None:
        self.response = response
        self.polled = 0

    async def api_request(self, path: str, method: str = "GET", body=None):
        assert path == "" and method == "GET"
        return self.response

    async def get_all_routes(self) -> dict:
        self.polled += 1  # JupyterHub times this into jupyterhub_proxy_poll_duration_seconds
        return {}


@pytest.mark.parametrize(
    "response",
    [_ChpResponse(), SimpleNamespace(body=b'{"/": {}, "/user/a/": {}}')],
    ids=["jupyterhub6", "jupyterhub5"],
)
def test_the_proxy_check_asks_the_proxy_api_not_the_timed_route_poll(response) -> None:
    """The proxy check lists the routes with the proxy's own API request, so JupyterHub's poll histogram counts
    JupyterHub's polls only."""
    proxy = _Proxy(response)
    assert asyncio.run(health.proxy_routes(proxy)) == 2
    assert proxy.polled == 0


def test_a_proxy_without_an_api_request_is_asked_for_its_routes() -> None:
    """Proxy classes other than configurable-http-proxy (whose route listing JupyterHub does not time) are asked
    with ``get_all_routes``."""

    class OtherProxy:
        async def get_all_routes(self) -> dict:
            return {"/": {}}

    assert asyncio.run(health.proxy_routes(OtherProxy())) == 1
