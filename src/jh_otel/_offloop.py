"""Blocking work off the hub's event loop: daemon threads, one call at a time per name, a timeout that fires.

The hub is one event loop; a SQLite file locked by another process, a stalled network disk or an operator's check
that hangs must never hold it. :class:`OffLoop` runs such a call in a daemon thread of its own and waits for it
with :func:`asyncio.wait_for`, so the timeout really ends the wait (a blocking call made on the loop could not be
timed out at all). A call still running after its timeout is never doubled: the next run of the same name fails at
once with :class:`StillRunning`. The threads are daemons: the hub's exit never waits for a call that hangs
(``concurrent.futures`` pools are joined at interpreter exit). The OpenTelemetry context of the caller goes with the
call, so work started with instrumentation suppressed stays suppressed in its thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from typing import Any


class StillRunning(asyncio.TimeoutError):
    """The previous call of this name has not returned yet."""


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class OffLoop:
    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Future[Any]] = {}

    def running(self, name: str) -> bool:
        future = self._inflight.get(name)
        return future is not None and not future.done()

    async def run(self, name: str, function: Callable[[], Any], timeout: float) -> Any:
        """``function()`` in a daemon thread, its result within ``timeout`` seconds (``asyncio.TimeoutError``
        otherwise, the call going on in its thread)."""
        if self.running(name):
            raise StillRunning(f"still running since an earlier run (over {timeout:g} s)")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        context = contextvars.copy_context()

        def work() -> None:
            result: Any = None
            error: BaseException | None = None
            try:
                result = context.run(function)
            except BaseException as raised:  # handed to the awaiting side, whatever it is
                error = raised
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the loop is closed: the hub is gone, nobody waits
                pass

        future.add_done_callback(_retrieve)  # a call that ends after its timeout has nobody awaiting it
        self._inflight[name] = future
        threading.Thread(target=work, name=f"jh_otel-{name}", daemon=True).start()
        return await asyncio.wait_for(asyncio.shield(future), timeout)
