"""The hub-state snapshot: refreshed by a task on the hub's IOLoop, read by the observable gauges.

Observable callbacks run on whichever thread collects (the Prometheus exporter's server thread, the OTLP reader's
thread, the IOLoop for ``/hub/metrics``) and are not bounded by any timeout. So they never touch the database or
the process table: they read :class:`Snapshot`, an immutable object that :class:`SnapshotRefresher` replaces as a
whole. A refresh costs one walk over the in-memory spawners on the IOLoop (what JupyterHub itself does on every
spawn), one query whatever the number of users, and a few reads of ``/proc``. The query runs on a pooled connection
of the hub's engine in a thread of its own, bounded by a timeout: a database that is locked or slow to answer
never holds the hub's event loop (the counts then keep their last values, and one warning says so). Until the
first refresh there is no snapshot, and the gauges that read it are absent rather than zero.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import psutil
from opentelemetry.instrumentation.utils import suppress_instrumentation

from . import catalogue
from ._offloop import OffLoop

log = logging.getLogger(__name__)

# the catalogue's active_users periods; observers add zeros for label values a snapshot does not mention
PERIODS = dict(zip(catalogue.PERIODS, (timedelta(hours=24), timedelta(days=7), timedelta(days=30))))


@dataclass(frozen=True)
class Snapshot:
    """The hub's state at one refresh; label tuples map to values."""

    total_users: int = 0
    active_users: dict[tuple[str, ...], float] = field(default_factory=dict)
    running_servers: int = 0
    pending_servers: int = 0
    pending_servers_by_kind: dict[tuple[str, ...], float] = field(default_factory=dict)
    hub_memory_usage_bytes: int = 0
    hub_memory_total_bytes: int = 0
    hub_cpu_usage_percent: float = 0.0
    local_servers: tuple[tuple[str, str, int], ...] = ()
    """(user, server name, pid) of each ready server with a local process (for per-server usage)."""
    spawns: tuple[tuple[str, float, float], ...] = ()
    """(``user`` or ``user/server``, unix time the spawn started, its spawner's start_timeout + http_timeout) of
    each pending spawn (for the spawners health check)."""


def _cgroup_memory_limit() -> int | None:
    """The cgroup (v2 or v1) memory limit of this process, if one is set."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                raw = f.read().strip()
        except OSError:
            continue
        if raw.isdigit():
            return int(raw)
    return None


class ProcessSampler:
    """Hub process memory and CPU, as deltas between two calls (never a blocking psutil sampler)."""

    def __init__(self, pid: int | None = None) -> None:
        self._process = psutil.Process(pid or os.getpid())
        times = self._process.cpu_times()
        self._last = (time.monotonic(), times.user + times.system)
        limit = _cgroup_memory_limit()
        total = psutil.virtual_memory().total
        self.memory_total = min(total, limit) if limit else total

    def sample(self) -> tuple[int, float]:
        """(resident bytes, CPU percent of one core since the previous sample)."""
        now = time.monotonic()
        times = self._process.cpu_times()
        cpu = times.user + times.system
        last_wall, last_cpu = self._last
        self._last = (now, cpu)
        elapsed = now - last_wall
        percent = 100.0 * (cpu - last_cpu) / elapsed if elapsed > 0 else 0.0
        return self._process.memory_info().rss, percent


@dataclass(frozen=True)
class Servers:
    """What one walk over the in-memory spawners finds."""

    running: int
    pending: dict[tuple[str, ...], float]
    local: tuple[tuple[str, str, int], ...]
    spawns: tuple[tuple[str, float, float], ...]


def walk_servers(users: Any) -> Servers:
    """Running servers, pending ones by kind, local processes and pending spawns, from JupyterHub's in-memory
    users and spawners: the one walk that the gauges, per-server usage and the spawners health check share."""
    running = 0
    pending: dict[tuple[str, ...], float] = {}
    local: list[tuple[str, str, int]] = []
    spawns: list[tuple[str, float, float]] = []
    for user in list(users.values()):
        for name, spawner in list(user.spawners.items()):
            kind = spawner.pending
            if kind:
                key = (kind,)
                pending[key] = pending.get(key, 0) + 1
                started = getattr(getattr(spawner, "orm_spawner", None), "started", None)
                if kind == "spawn" and started is not None:
                    limit = float(spawner.start_timeout) + float(spawner.http_timeout)
                    label = f"{user.name}/{name}" if name else user.name
                    spawns.append((label, started.replace(tzinfo=timezone.utc).timestamp(), limit))
            elif spawner.ready:
                running += 1
                pid = getattr(spawner, "pid", 0)
                if isinstance(pid, int) and pid > 0:
                    local.append((user.name, name, pid))
    return Servers(running, pending, tuple(local), tuple(spawns))


def shares_one_connection(engine: Any) -> bool:
    """Whether ``engine`` has a single connection shared by everyone (in-memory SQLite): no other thread may use
    it while the hub does, and no other process can lock it."""
    from sqlalchemy.pool import SingletonThreadPool, StaticPool

    return isinstance(engine.pool, SingletonThreadPool | StaticPool)


def one_row(engine: Any, statement: Any) -> Any:
    """A read-only query on a pooled connection of the hub's engine: it neither joins nor ends the hub session's
    transaction (ending it, a rollback, would expire every object the hub holds, which at 10,000 users froze the
    event loop for ~90 ms). Safe from any thread: the engine and its pool are thread-safe."""
    with engine.connect() as connection:
        return connection.execute(statement).one()


def _one_row(db: Any, statement: Any) -> Any:
    """:func:`one_row` on the hub's engine, or through the session when the engine shares one connection (as
    JupyterHub's own metrics collector does); on the IOLoop thread only."""
    engine = db.get_bind()
    if shares_one_connection(engine):
        return db.execute(statement).one()
    return one_row(engine, statement)


def user_counts(now: datetime) -> Any:
    """The statement giving (total users, active users in each period) in one row, whatever the number of users."""
    from jupyterhub import orm
    from sqlalchemy import case, func, select

    active = [
        func.coalesce(func.sum(case((orm.User.last_activity >= now - delta, 1), else_=0)), 0)
        for delta in PERIODS.values()
    ]
    return select(func.count(orm.User.id), *active)


def _counts(row: Any) -> tuple[int, dict[tuple[str, ...], float]]:
    total, *counts = row
    return int(total), {(period,): int(value) for period, value in zip(PERIODS, counts)}


def count_users(db: Any, now: datetime) -> tuple[int, dict[tuple[str, ...], float]]:
    """(total users, active users by period) in one query, on the IOLoop thread."""
    return _counts(_one_row(db, user_counts(now)))


def snapshot_of(
    servers: Servers, counts: tuple[int, dict[tuple[str, ...], float]], sampler: ProcessSampler
) -> Snapshot:
    total, active = counts
    rss, cpu = sampler.sample()
    return Snapshot(
        total_users=total,
        active_users=active,
        running_servers=servers.running,
        pending_servers=int(sum(servers.pending.values())),
        pending_servers_by_kind=servers.pending,
        local_servers=servers.local,
        spawns=servers.spawns,
        hub_memory_usage_bytes=rss,
        hub_memory_total_bytes=sampler.memory_total,
        hub_cpu_usage_percent=cpu,
    )


def take_snapshot(app: Any, sampler: ProcessSampler) -> Snapshot:
    """Read the hub's state at once, the query on the calling thread; call it on the IOLoop thread only."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    return snapshot_of(walk_servers(app.users), count_users(app.db, now), sampler)


class SnapshotRefresher:
    """Holds the current snapshot (None until the first refresh) and refreshes it every ``interval`` seconds."""

    QUERY_TIMEOUT = 10.0
    """Seconds the users query may take before a refresh keeps the previous counts."""

    def __init__(self, app: Any, interval: float, sampler: ProcessSampler | None = None) -> None:
        self.app = app
        self.interval = interval
        self.current: Snapshot | None = None
        self._sampler = sampler
        self._task: asyncio.Task[None] | None = None
        self._threads = OffLoop()
        self._counts: tuple[int, dict[tuple[str, ...], float]] | None = None
        self._stale = False

    def __call__(self) -> Snapshot | None:
        return self.current

    async def _count(self, now: datetime) -> tuple[int, dict[tuple[str, ...], float]] | None:
        """The user counts: in a thread with a timeout, or the last ones when the database did not answer."""
        engine = self.app.db.get_bind()
        if shares_one_connection(engine):
            return count_users(self.app.db, now)
        statement = user_counts(now)
        timeout = min(self.QUERY_TIMEOUT, self.interval)
        try:
            counts = _counts(await self._threads.run("snapshot", lambda: one_row(engine, statement), timeout))
        except Exception as error:
            if not self._stale:
                self._stale = True
                log.warning(
                    "jh_otel: the users query of the hub-state snapshot failed (%s%s); user counts keep their last "
                    "values",
                    type(error).__name__,
                    f": {error}" if str(error) else "",
                )
            return self._counts
        if self._stale:
            self._stale = False
            log.info("jh_otel: the users query of the hub-state snapshot answers again")
        self._counts = counts
        return counts

    async def refresh(self) -> None:
        """One refresh, guarded: a failure keeps the previous snapshot and is logged. jh_otel's own queries are
        not traced."""
        try:
            if self._sampler is None:
                self._sampler = ProcessSampler()
            with suppress_instrumentation():
                servers = walk_servers(self.app.users)
                counts = await self._count(datetime.now(timezone.utc).replace(tzinfo=None))
            if counts is not None:
                self.current = snapshot_of(servers, counts, self._sampler)
        except Exception:
            log.warning("jh_otel: could not refresh the hub-state snapshot", exc_info=True)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
