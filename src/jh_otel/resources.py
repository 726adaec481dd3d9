"""Per-server resource usage (``OTEL_PYTHON_JUPYTERHUB_RESOURCE_USAGE=on``): CPU and memory of each single-user
server's process tree (the server and its kernels), for spawners that run servers as local processes.

Every ``refresh_interval`` a worker thread reads ``/proc`` through psutil for the process tree of each running
server with a local ``pid`` (listed by the hub-state snapshot's walk over the spawners), so the hub's loop never
waits on it. CPU is percent of one core between two samples (the first sample of a tree gives 0); memory is the
tree's resident bytes. Servers of other spawners (containers, Kubernetes) have no local process and are skipped:
their platform measures them better.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from functools import partial

import psutil

from ._offloop import OffLoop
from .custom import UserLabels
from .instruments import Instruments
from .snapshot import Snapshot

log = logging.getLogger(__name__)

FAMILY = "resource_usage"


def tree_usage(pid: int) -> tuple[float, int] | None:
    """(CPU seconds, resident bytes) of ``pid`` and all its descendants; None when it is gone."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    cpu, rss = 0.0, 0
    for process in processes:
        try:
            with process.oneshot():
                times = process.cpu_times()
                cpu += times.user + times.system
                rss += process.memory_info().rss
        except psutil.Error:
            continue  # exited between the listing and the read
    return cpu, rss


class ResourceSampler:
    def __init__(
        self, snapshot: Callable[[], Snapshot | None], instruments: Instruments, users: UserLabels, interval: float
    ) -> None:
        self.snapshot = snapshot
        self.instruments = instruments
        self.users = users
        self.interval = interval
        self._previous: dict[int, tuple[float, float]] = {}
        self._task: asyncio.Task[None] | None = None
        self._threads = OffLoop()

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._loop())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                current = self.snapshot()
                if current is not None:
                    servers = list(current.local_servers)
                    # a daemon thread: a /proc read that hangs never holds the loop or the hub's exit
                    samples = await self._threads.run("resources", partial(self.sample, servers), self.interval)
                    self.instruments.replace_gauge(FAMILY, samples)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("jh_otel: could not sample the servers' resource usage", exc_info=True)
            await asyncio.sleep(self.interval)

    def sample(self, servers: list[tuple[str, str, int]]) -> dict[tuple[str, ...], float]:
        """The gauge's readings for ``servers`` (in a worker thread)."""
        readings: dict[tuple[str, ...], float] = {}
        seen: dict[int, tuple[float, float]] = {}
        for user, server, pid in servers:
            usage = tree_usage(pid)
            if usage is None:
                continue
            cpu_seconds, rss = usage
            now = time.monotonic()
            before = self._previous.get(pid)
            seen[pid] = (now, cpu_seconds)
            percent = 0.0
            if before is not None and now > before[0]:
                percent = max(0.0, 100.0 * (cpu_seconds - before[1]) / (now - before[0]))
            (user,) = self.users.bound(FAMILY, ("username",), (user,))
            for kind, value in (("cpu", percent), ("memory", float(rss))):
                key = (kind, user, server)
                readings[key] = readings.get(key, 0.0) + value  # several servers may share "_other"
        self._previous = seen
        return readings
