"""Test helpers for "nothing blocks the event loop": another process holding a SQLite file locked, and the longest
gap between ticks of an event loop while a coroutine runs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LOCKER = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
connection.execute("ROLLBACK")
"""


@contextmanager
def locked(path: Path, seconds: float = 30) -> Iterator[subprocess.Popen[str]]:
    """Another process holds ``path`` (a SQLite file) with an exclusive lock until the block ends or ``seconds``
    pass; the lock is taken when the block starts."""
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        yield locker
    finally:
        locker.kill()
        locker.wait()


async def longest_gap(work: Awaitable[Any], tick: float = 0.01) -> tuple[Any, float]:
    """``work``'s result, and the longest time between two ticks of the event loop while it ran."""
    gaps: list[float] = [0.0]
    last = time.perf_counter()

    async def ticker() -> None:
        nonlocal last
        while True:
            await asyncio.sleep(tick)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.ensure_future(ticker())
    try:
        return await work, max(gaps)
    finally:
        task.cancel()
