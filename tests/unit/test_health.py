"""The health-check runner: outcomes, timeouts, sync checks off the loop, one log line per change, the report."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from types import SimpleNamespace

import pytest

from jh_otel import health
from jh_otel.health import Check, HealthChecks
from jh_otel.snapshot import Snapshot


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
    result = run(Check("c", function, timeout=0.2))
    assert (result.status, result.detail) == (status, detail)
    assert result.duration_seconds < 5 and result.time.endswith("+00:00")


def test_a_sync_check_runs_off_the_event_loop() -> None:
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
    health.register_check(*args)
    assert problem in caplog.text
    assert "x" not in health._registered and "" not in health._registered


@pytest.mark.parametrize(
    ("age", "limit", "status"),
    [(5, 30, "healthy"), (40, 30, "unhealthy"), (100, 630, "healthy"), (700, 630, "unhealthy")],
)
def test_the_spawners_check_finds_spawns_pending_past_their_timeout(age: float, limit: float, status: str) -> None:
    snapshot = Snapshot(spawns=(("alice/gpu", time.time() - age, limit),))
    (check,) = [c for c in health.builtin_checks(SimpleNamespace(), 30, lambda: snapshot) if c.name == "spawners"]
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
