"""Spawn outcomes and durations, around ``User.spawn``: ``Spawner.start`` until the server answers.

Requests JupyterHub refuses before spawning (already pending, throttled, too many users) never reach
``User.spawn``; they show in the native ``server_spawn_duration_seconds`` with their ``reason``.
"""

from __future__ import annotations

import time
from typing import Any

from .._guard import guarded
from ..instruments import Instruments


class SpawnRecorder:
    def __init__(self, instruments: Instruments) -> None:
        self._duration = instruments["spawn_duration_seconds"].record
        self._success = instruments["spawn_success"].record
        self._failure = instruments["spawn_failure"].record

    def wrapper(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        server_name = args[0] if args else kwargs.get("server_name", "")
        return self._spawn(wrapped(*args, **kwargs), instance, server_name)

    async def _spawn(self, pending: Any, user: Any, server_name: str) -> Any:
        start = time.perf_counter()
        try:
            result = await pending
        except Exception as error:
            self._record(user, server_name, start, type(error).__name__)
            raise
        self._record(user, server_name, start, None)
        return result

    def _record(self, user: Any, server_name: str, start: float, error_type: str | None) -> None:
        with guarded("recording a spawn"):
            duration = time.perf_counter() - start
            spawner = user.spawners.get(server_name)
            spawner_class = type(spawner).__name__ if spawner is not None else "unknown"
            self._duration(duration, (spawner_class,))
            if error_type is None:
                self._success(1, (spawner_class,))
            else:
                self._failure(1, (spawner_class, error_type))
