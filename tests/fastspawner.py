"""A fast in-process spawner for spawn/stop churn, and a handler that counts what is alive inside the hub.

Both halves of this module are used:

- inside the hub (imported by its ``jupyterhub_config.py``, see ``hub_config()``): ``FastSpawner``, whose "server"
  is an asyncio HTTP listener on 127.0.0.1 in the hub's own event loop, so a spawn/stop cycle costs the hub's own
  work only (no process, no import); and ``CountHandler`` at ``/hub/api/fastspawner/live``, which runs
  ``gc.collect()`` and reports the live ``FastSpawner`` and ``User`` objects and the hub's RSS;
- by the tests and benchmarks (``cycle``, ``live``), through the hub's REST API on its own port.

Nothing here keeps a reference to a spawner: the counts are found with ``gc.get_objects()``, so a spawner that is
still alive is kept by the hub (or by jh_otel), never by this module.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import sys
import time
import types
from collections import Counter
from pathlib import Path
from typing import Any

from jupyterhub import __version__ as jupyterhub_version
from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.scopes import needs_scope
from jupyterhub.spawner import Spawner

LOOPBACK = "127.0.0.1"
LIVE_PATH = "/api/fastspawner/live"  # under the hub prefix: /hub/api/fastspawner/live
# the version header spares the hub a "no version header" warning per spawn (jupyterhub._version._check_version)
_RESPONSE = (
    "HTTP/1.1 200 OK\r\n"
    "Content-Type: application/json\r\n"
    "Content-Length: 2\r\n"
    f"X-JupyterHub-Version: {jupyterhub_version}\r\n"
    "Connection: close\r\n"
    "\r\n"
    "{}"
).encode()
_HEADER_LIMIT = 64 * 1024
_READ_TIMEOUT_S = 5.0


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Any request gets a 200 and ``{}``: JupyterHub's readiness wait accepts any non-5xx answer on ``.../api``.

    A module-level function, not a method, so the listener holds no reference to its spawner."""
    try:
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT_S)
        writer.write(_RESPONSE)
        await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
        pass  # a probe that hung up or sent garbage: nothing to answer
    finally:
        writer.close()


class FastSpawner(Spawner):
    """A single-user "server" that is an HTTP listener in the hub's event loop, started and stopped in
    milliseconds."""

    # how many were ever created in this process (an int, not a list: counting must not keep them alive)
    created = 0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        FastSpawner.created += 1
        self.serial = FastSpawner.created
        self._listener: asyncio.Server | None = None
        self._starting = False

    async def start(self) -> tuple[str, int]:
        self._starting = True
        try:
            self._listener = await asyncio.start_server(_answer, LOOPBACK, 0, limit=_HEADER_LIMIT)
        finally:
            self._starting = False
        port = self._listener.sockets[0].getsockname()[1]
        return LOOPBACK, port

    async def stop(self, now: bool = False) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
            await listener.wait_closed()

    async def poll(self) -> int | None:
        # None while starting or listening (JupyterHub's poll contract); 0 ("unknown exit") otherwise, which is
        # also the answer after a hub restart: the listener lived in the old process
        return None if self._starting or self._listener is not None else 0

    def get_state(self) -> dict[str, Any]:
        return super().get_state()  # nothing survives the hub process, so nothing to persist

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)

    def clear_state(self) -> None:
        super().clear_state()
        self._listener = None


def _type_name(obj: object) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def _describe(obj: object) -> str:
    """A referrer, briefly: its type, and for functions and methods what they are."""
    name = _type_name(obj)
    qualname = getattr(obj, "__qualname__", None)
    if isinstance(qualname, str) and not isinstance(obj, type):
        return f"{name} {getattr(obj, '__module__', '')}.{qualname}"
    if isinstance(obj, dict):
        return f"{name} keys={sorted(map(str, obj))[:8]}"
    return name


def _referrers(obj: object, ignore: tuple[object, ...], depth: int = 2) -> list[Any]:
    """What refers to ``obj``, and for containers (tuple, cell, dict, list) what refers to them, ``depth`` levels:
    enough to see whose closure or list keeps a spawner."""
    referrers = gc.get_referrers(obj)
    task = asyncio.current_task()
    # this very list refers to each of them, and the count handler's own coroutine to what it looked at
    ignore = (*ignore, referrers, *((task.get_coro(),) if task is not None else ()))
    ignored = {id(i) for i in ignore}
    found: list[Any] = []
    for referrer in referrers:
        if id(referrer) in ignored or inspect.isframe(referrer):
            continue
        entry: Any = _describe(referrer)
        if depth > 1 and isinstance(referrer, (tuple, list, dict, types.CellType)):
            entry = {entry: _referrers(referrer, ignore, depth - 1)[:10]}
        found.append(entry)
    return found[:20]


class CountHandler(APIHandler):
    """``GET /hub/api/fastspawner/live``: what is alive in the hub after a full collection.

    Query arguments: ``types=N`` adds the N most numerous gc-tracked types; ``referrers=1`` adds what refers to
    the oldest live FastSpawner (``referrers=module.Type``: to the first live object of that type);
    ``tracemalloc=baseline|diff`` (hub started with ``PYTHONTRACEMALLOC``) takes a baseline snapshot or reports the
    top allocation growth since it."""

    _tracemalloc_baseline: Any = None  # a tracemalloc snapshot: file/line statistics, no objects

    @needs_scope("admin:users")  # the test's service token has it; anonymous and ordinary users do not
    async def get(self) -> None:
        started = time.perf_counter()
        gc.collect()
        objects = gc.get_objects()
        spawners = sorted((o for o in objects if isinstance(o, FastSpawner)), key=lambda s: s.serial)
        from jupyterhub.user import User

        report: dict[str, Any] = {
            "fastspawners": len(spawners),
            "fastspawner_serials": [s.serial for s in spawners],
            "fastspawners_created": FastSpawner.created,
            "users": sum(1 for o in objects if isinstance(o, User)),
            "user_spawners": {user.name: sorted(user.spawners) for user in self.users.values() if len(user.spawners)},
            "gc_objects": len(objects),
            "rss_bytes": _rss(),
            # which jh_otel the hub runs (None: not loaded), so a result can tell a checkout from another copy
            "jh_otel_file": getattr(sys.modules.get("jh_otel"), "__file__", None),
        }
        top = int(self.get_argument("types", "0"))
        if top > 0:
            report["types"] = dict(Counter(map(_type_name, objects)).most_common(top))
        wanted = self.get_argument("referrers", "")
        if wanted:
            # "1": the oldest live FastSpawner; a type's qualified name: the first live object of that type
            target = spawners[0] if wanted == "1" and spawners else None
            if wanted != "1":
                target = next((o for o in objects if _type_name(o) == wanted), None)
            if target is not None:
                report["referrers"] = _referrers(target, ignore=(objects, spawners))
        mode = self.get_argument("tracemalloc", "")
        if mode:
            report["tracemalloc"] = self._tracemalloc(mode)
        del objects, spawners  # gc.get_objects()'s list would keep everything alive until the frame ends
        report["seconds"] = round(time.perf_counter() - started, 3)
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(report))

    def _tracemalloc(self, mode: str) -> Any:
        import tracemalloc

        if not tracemalloc.is_tracing():
            return "not tracing (start the hub with PYTHONTRACEMALLOC=N)"
        snapshot = tracemalloc.take_snapshot().filter_traces(
            (
                tracemalloc.Filter(False, tracemalloc.__file__),
                tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
            )
        )
        if mode == "baseline" or CountHandler._tracemalloc_baseline is None:
            CountHandler._tracemalloc_baseline = snapshot
            return "baseline taken"
        stats = snapshot.compare_to(CountHandler._tracemalloc_baseline, "traceback")[:15]
        return [
            {"size_diff": s.size_diff, "count_diff": s.count_diff, "traceback": s.traceback.format()[-6:]}
            for s in stats
        ]


def _rss() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # psutil is a test dependency; the count is still useful without it
        return -1


def hub_config() -> str:
    """Lines for a hub's ``jupyterhub_config.py`` (``Hub(extra_config=...)``): the fast spawner and the count
    handler, imported from this directory (the hub's ``sys.path`` does not have it)."""
    return f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from fastspawner import FastSpawner, CountHandler, LIVE_PATH
c.JupyterHub.spawner_class = FastSpawner
# deprecated since JupyterHub 3.1 in favour of services, which run in another process: the count must be taken
# inside the hub, so a handler it is (the hub logs one deprecation warning at startup)
c.JupyterHub.extra_handlers = [(LIVE_PATH, CountHandler)]
"""


# --------------------------------------------------------------------------
# Client side: the tests and benchmarks drive a tests/hubproc.py Hub with these
# --------------------------------------------------------------------------


def _api(hub: Any) -> str:
    # the hub's own port, not the proxy's: the cycles measure the hub, and the proxy need not relay them
    return f"http://{LOOPBACK}:{hub.hub_port}/hub/api"


def _wait_server(hub: Any, name: str, ready: bool, deadline: float) -> None:
    """After a 202: poll the user model until the default server is ready (or gone), not pending."""
    model: dict[str, Any] = {}
    while time.monotonic() < deadline:
        model = hub.session.get(f"{_api(hub)}/users/{name}", timeout=30).json()
        server = model.get("servers", {}).get("")
        if ready and server and server.get("ready") and not server.get("pending"):
            return
        if not ready and not server:
            return
        time.sleep(0.02)
    raise AssertionError(f"server of {name} not {'ready' if ready else 'gone'} in time: {model}")


def cycle(hub: Any, name: str, timeout: float = 30.0) -> tuple[int, int]:
    """One spawn and one stop of ``name``'s default server, each waited for; returns the two status codes.

    POST answers 201 when the spawn finished within ``slow_spawn_timeout``, 202 while it is still pending; DELETE
    answers 204 when stopped within ``slow_stop_timeout``, 202 while stopping. A 202 is followed by polling."""
    deadline = time.monotonic() + timeout
    url = f"{_api(hub)}/users/{name}/server"
    spawned = hub.session.post(url, timeout=timeout)
    if spawned.status_code == 202:
        _wait_server(hub, name, True, deadline)
    elif spawned.status_code != 201:
        raise AssertionError(f"spawn of {name}: {spawned.status_code} {spawned.text[:300]}")
    stopped = hub.session.delete(url, timeout=timeout)
    if stopped.status_code == 202:
        _wait_server(hub, name, False, deadline)
    elif stopped.status_code != 204:
        raise AssertionError(f"stop of {name}: {stopped.status_code} {stopped.text[:300]}")
    return spawned.status_code, stopped.status_code


def live(hub: Any, **params: Any) -> dict[str, Any]:
    """The hub's CountHandler report (``types=N``, ``referrers=1``, ``tracemalloc=...`` as query arguments)."""
    response = hub.session.get(f"{_api(hub)}/fastspawner/live", params=params, timeout=120)
    response.raise_for_status()
    return response.json()


def drain_spans(receiver: Any, quiet: float = 1.0, timeout: float = 15.0) -> Counter[str]:
    """Span names (with counts) of every trace export an ``OTLPReceiver`` holds, once no trace export has arrived
    for ``quiet`` seconds (or ``timeout`` passed); then the receiver forgets everything, so a long churn does not
    pile up export bodies in the test process.

    Waiting for quiet first makes the count whole: the hub's batch span processor flushes every 200 ms in the
    tests' environment, and the hub is idle between blocks of cycles."""
    deadline = time.monotonic() + timeout
    seen, since = len(receiver.requests("traces")), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet:
        time.sleep(0.1)
        now = len(receiver.requests("traces"))
        if now != seen:
            seen, since = now, time.monotonic()
    names: Counter[str] = Counter()
    for request in receiver.requests("traces"):
        for resource_spans in request.message.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                names.update(span.name for span in scope_spans.spans)
    receiver.clear()
    return names
