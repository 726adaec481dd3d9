"""JupyterHub's own operations as spans: login, logout, spawn, stop, poll, proxy, startup.

Every wrapper calls the original unconditionally and is reversible. Where the work happens:

- ``jupyterhub.login``: ``BaseHandler.login_user``; ``jupyterhub.logout``: ``LogoutHandler.get``.
- ``jupyterhub.spawn``: ``BaseHandler.spawn_single_user``, inside the request's span; ``jupyterhub.spawn.profile`` is
  the profile its ``user_options`` name (``OTEL_PYTHON_JUPYTERHUB_PROFILE_OPTION``, ``""`` without one). JupyterHub
  finishes a spawn in a background task (``spawner._spawn_future``); the tasks inherit the span's context, and the
  span ends when that future does, so it is the parent of ``jupyterhub.spawner.start``, ``jupyterhub.server.wait_up``
  (``User._wait_up``) and ``jupyterhub.proxy.add_route``. Progress messages are span events.
- ``jupyterhub.stop``: ``BaseHandler.stop_single_user`` (ends with ``spawner._stop_future``), ``user_stopped``
  (a server that exited), and ``User.stop`` when no stop span is already current.
- ``jupyterhub.spawner.start/stop/poll``: the methods of each spawner class the hub uses, wrapped on the class the
  first time one of its spawners is made (never per instance, so nothing keeps a spawner alive after JupyterHub
  drops it; subclasses override them, and a subclass calling ``super()`` still makes one span). Periodic polls are
  root spans: polling is started outside the spawn's trace.
- ``jupyterhub.proxy.add_route/delete_route/get_routes/check_routes``: the hub's proxy instance.
- ``jupyterhub.startup``: from ``JupyterHub.initialize`` until the hub has started; ``jupyterhub.init_spawners``
  and the proxy calls made during startup are its children.

The readiness wait is one span: HTTP client spans are suppressed inside it and ``jupyterhub.server.polls`` counts
the requests made. No span is made while instrumentation is suppressed (jh_otel's health checks and snapshot).

Each part checks the JupyterHub functions it wraps (:mod:`jh_otel.compat`): one whose signature is not the one jh_otel
was tested with is left out with one warning, and the other parts still trace.
"""

from __future__ import annotations

import contextvars
import inspect
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import wrapt
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, suppress_http_instrumentation, unwrap

from .._guard import guarded
from ..compat import Expect, unmet
from ..hooks.phases import profile_of
from .server import user_attributes

USER = "jupyterhub.user.name"
SERVER = "jupyterhub.server.name"
SPAWNER_CLASS = "jupyterhub.spawner.class"
PROFILE = "jupyterhub.spawn.profile"
_polls: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("jh_otel_polls", default=None)
# (id(spawner), method) of the spawner-method spans in progress: a subclass's method that calls super() makes one span
_in_spawner_method: contextvars.ContextVar[tuple[tuple[int, str], ...]] = contextvars.ContextVar(
    "jh_otel_spawner_method", default=()
)
_TRACED = "_self_jh_otel_traced"
"""Marks jh_otel's class-level wrappers of spawner methods (wrapt keeps ``_self_`` attributes on the wrapper itself;
any other name would be set on the wrapped function)."""
_SPAWNER_METHODS = {
    "start": "jupyterhub.spawner.start",
    "stop": "jupyterhub.spawner.stop",
    "poll": "jupyterhub.spawner.poll",
}
_PROXY_METHODS = {  # span name, and the leading parameters _proxy_attributes reads (None: it reads none)
    "add_user": ("jupyterhub.proxy.add_route", ("self", "user", "server_name")),
    "delete_user": ("jupyterhub.proxy.delete_route", ("self", "user", "server_name")),
    "get_all_routes": ("jupyterhub.proxy.get_routes", None),
    "check_routes": ("jupyterhub.proxy.check_routes", None),
}


def spawner_attributes(spawner: Any) -> dict[str, str]:
    user = getattr(spawner, "user", None)
    return {
        USER: str(getattr(user, "name", "")),
        SERVER: str(getattr(spawner, "name", "") or ""),
        SPAWNER_CLASS: f"{type(spawner).__module__}.{type(spawner).__qualname__}",
    }


def _user_server(user: Any, server_name: Any) -> dict[str, str]:
    return {USER: str(getattr(user, "name", "")), SERVER: str(server_name or "")}


def _fail(span: Any, error: BaseException) -> None:
    span.set_attribute("error.type", type(error).__qualname__)
    reason = getattr(error, "reason", None)
    if isinstance(reason, str) and reason:
        span.set_attribute("jupyterhub.reason", reason)


class Operations:
    def __init__(self, tracer: trace.Tracer, profile_option: str = "profile") -> None:
        self.tracer = tracer
        self.profile_option = profile_option
        self.startup: Any = None
        self._undo: list[Callable[[], None]] = []
        self._spawner_classes: set[type] = set()

    # -- span helpers --
    def _parent(self) -> Any:
        current = trace.get_current_span()
        if not current.get_span_context().is_valid and self.startup is not None and self.startup.is_recording():
            return trace.set_span_in_context(self.startup)
        return None

    def start_span(self, name: str, attributes: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        parent = kwargs.pop("context", None) or self._parent()
        return self.tracer.start_span(name, context=parent, attributes=attributes, **kwargs)

    async def _run(
        self,
        name: str,
        attributes: dict[str, Any],
        call: Callable[[], Any],
        outcome: Any = None,
        always: Callable[[], dict[str, Any]] | None = None,
    ) -> Any:
        """``call()`` (awaited if it returns an awaitable) inside a ``name`` span; ``outcome(result)`` gives the
        attributes of a success, ``always()`` those to set whatever happened. Nothing is recorded while
        instrumentation is suppressed (jh_otel's own health checks and snapshot queries)."""
        span = None
        if is_instrumentation_enabled():
            try:
                span = self.start_span(name, attributes)
            except Exception:
                span = None
        if span is None:
            result = call()
            return await result if inspect.isawaitable(result) else result
        with trace.use_span(span, end_on_exit=True):
            try:
                result = call()
                if inspect.isawaitable(result):
                    result = await result
            except BaseException as error:
                with guarded("recording an operation's error"):
                    _fail(span, error)
                raise
            finally:
                if always is not None:
                    with guarded("recording an operation's attributes"):
                        span.set_attributes(always())
            if outcome is not None:
                with guarded("recording an operation's outcome"):
                    span.set_attributes(outcome(result))
            return result

    def traced(self, name: str, attributes: Callable[..., dict[str, Any]], outcome: Any = None) -> Any:
        """A wrapt wrapper making ``name`` spans around a (possibly async) method."""

        def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            try:
                attrs = attributes(instance, *args, **kwargs)
            except Exception:
                attrs = {}
            return self._run(name, attrs, lambda: wrapped(*args, **kwargs), outcome)

        return wrapper

    # -- installation --
    def _wrap(self, owner: Any, attribute: str, wrapper: Any) -> None:
        wrapt.wrap_function_wrapper(owner, attribute, wrapper)
        if isinstance(owner, type):
            self._undo.append(lambda: unwrap(owner, attribute))
        else:  # an instance: its own attribute goes, the class's method shows through again
            self._undo.append(lambda: owner.__dict__.pop(attribute, None))

    def _hook(self, part: str, hooks: list[tuple[Any, str, tuple[str, ...] | None, Any]]) -> None:
        """Install one part's wrappers, ``(owner, attribute, positional parameters relied on, wrapper)``; a
        ``None`` wrapper only checks that the attribute exists. A part whose JupyterHub functions are not as expected
        is left out with one warning."""
        expectations = []
        for owner, attribute, parameters, _ in hooks:
            cls = owner if isinstance(owner, type) else type(owner)
            expectations.append(Expect(cls.__module__, f"{cls.__qualname__}.{attribute}", parameters))
        if unmet(part, expectations, ("jupyterhub",)):
            return
        for owner, attribute, _, wrapper in hooks:
            if wrapper is not None:
                self._wrap(owner, attribute, wrapper)

    def install(self, app: Any, initialize_started: float | None = None) -> None:
        from jupyterhub.handlers.base import BaseHandler
        from jupyterhub.handlers.login import LogoutHandler
        from jupyterhub.spawner import Spawner
        from jupyterhub.user import User

        self._start_startup(app, initialize_started)
        self._hook("login spans", [(BaseHandler, "login_user", ("self", "data"), self._login)])
        logout = self.traced("jupyterhub.logout", lambda handler, *a, **k: user_attributes(handler))
        self._hook("logout spans", [(LogoutHandler, "get", None, logout)])
        self._hook(
            "spawn spans",
            [
                (BaseHandler, "spawn_single_user", ("self", "user", "server_name"), self._spawn),
                (Spawner, "_spawn_future", None, None),
                (Spawner, "_generate_progress", ("self",), self._progress),
            ],
        )
        stopped = self.traced("jupyterhub.stop", _stopped)
        self._hook(
            "stop spans",
            [
                (BaseHandler, "stop_single_user", ("self", "user", "server_name"), self._stop),
                (BaseHandler, "user_stopped", ("self", "user", "server_name"), stopped),
                (User, "stop", ("self", "server_name"), self._user_stop),
            ],
        )
        self._hook("readiness-wait span", [(User, "_wait_up", ("self", "spawner"), self._wait_up), self._client()])
        self._hook("spawner method spans", [(User, "_new_spawner", ("self", "server_name"), self._new_spawner)])
        self._hook("polls outside the spawn's trace", [(Spawner, "start_polling", ("self",), _outside_any_trace)])
        proxy = getattr(app, "proxy", None)
        if proxy is not None:
            self._hook(
                "proxy spans",
                [
                    (proxy, method, parameters, self.traced(name, _proxy_attributes))
                    for method, (name, parameters) in _PROXY_METHODS.items()
                ],
            )
        init = self.traced("jupyterhub.init_spawners", lambda *a, **k: {}, _count)
        self._hook("startup spans", [(app, "init_spawners", None, init)])
        spawner_class = getattr(app, "spawner_class", None)
        if isinstance(spawner_class, type):
            self.trace_spawner_class(spawner_class)
        for user in list(getattr(app, "users", {}).values()):
            for spawner in list(getattr(user, "spawners", {}).values()):
                self.trace_spawner_class(type(spawner))

    def uninstall(self) -> None:
        while self._undo:
            with guarded("removing an operation hook"):
                self._undo.pop()()
        if self.startup is not None and self.startup.is_recording():
            self.startup.end()

    @staticmethod
    def _client() -> tuple[Any, str, None, Any]:
        """The hub's internal HTTP client, whose requests the readiness wait counts."""
        try:
            from jupyterhub.httpclient import JupyterHubHTTPClient

            return (JupyterHubHTTPClient, "fetch", None, _counted)
        except ImportError:  # JupyterHub 5: tornado's client
            from tornado.httpclient import AsyncHTTPClient

            return (AsyncHTTPClient, "fetch", None, _counted)

    # -- startup --
    def _start_startup(self, app: Any, started: float | None) -> None:
        if started is None:
            try:
                import psutil

                started = psutil.Process().create_time()
            except Exception:
                started = time.time()
        self.startup = self.tracer.start_span(
            "jupyterhub.startup", context=otel_context.Context(), start_time=int(started * 1e9)
        )
        future = getattr(app, "_start_future", None)
        if future is None:
            return
        span = self.startup

        def done(f: Any) -> None:
            with guarded("ending the startup span"):
                if not f.cancelled() and f.exception() is not None:
                    _fail(span, f.exception())
                    span.set_status(trace.Status(trace.StatusCode.ERROR, type(f.exception()).__qualname__))
                span.end()

        future.add_done_callback(done)

    # -- spawners --
    def trace_spawner_class(self, cls: type) -> None:
        """``jupyterhub.spawner.start/stop/poll`` spans for every spawner of ``cls``, wrapped on the class (once per
        class, never per instance: nothing here keeps a spawner alive after JupyterHub drops it). The wrapper goes on
        ``cls`` itself around the method ``cls`` resolves; a subclass method that calls ``super()`` into another
        wrapped class makes one span, not two."""
        self._spawner_classes.add(cls)
        with guarded("tracing a spawner class"):
            for method, name in _SPAWNER_METHODS.items():
                owner = next((c for c in cls.__mro__ if method in c.__dict__), None)
                if owner is None or getattr(owner.__dict__[method], _TRACED, False):
                    continue  # inherited from a class jh_otel already wraps
                original = owner.__dict__[method]
                if not callable(original):
                    continue
                wrapper = wrapt.FunctionWrapper(original, self._spawner_method(method, name))
                setattr(wrapper, _TRACED, True)
                own = cls.__dict__.get(method)
                setattr(cls, method, wrapper)
                self._undo.append(partial(_restore, cls, method, own))

    def _spawner_method(self, method: str, name: str) -> Any:
        outcome = _poll_outcome if method == "poll" else None

        def wrapper(wrapped: Any, spawner: Any, args: Any, kwargs: Any) -> Any:
            key = (id(spawner), method)
            active = _in_spawner_method.get()
            if key in active or spawner is None:
                return wrapped(*args, **kwargs)
            try:
                attributes = spawner_attributes(spawner)
            except Exception:
                attributes = {}

            marked = (*active, key)

            def call() -> Any:
                token = _in_spawner_method.set(marked)
                try:
                    result = wrapped(*args, **kwargs)
                finally:
                    _in_spawner_method.reset(token)
                return _inside(result, marked) if inspect.isawaitable(result) else result

            return self._run(name, attributes, call, outcome)

        return wrapper

    def _new_spawner(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        spawner = wrapped(*args, **kwargs)
        cls = type(spawner)
        if cls not in self._spawner_classes:
            self._spawner_classes.add(cls)
            self.trace_spawner_class(cls)
        return spawner

    # -- login --
    def _login(self, wrapped: Any, handler: Any, args: Any, kwargs: Any) -> Any:
        data = args[0] if args else kwargs.get("data")
        attempted = data.get("username") if isinstance(data, dict) else None

        def outcome(user: Any) -> dict[str, str]:
            if user is None:
                return {"jupyterhub.login.status": "failure"}
            return {"jupyterhub.login.status": "success", USER: str(getattr(user, "name", ""))}

        attributes = {USER: attempted} if isinstance(attempted, str) else {}
        return self._run("jupyterhub.login", attributes, lambda: wrapped(*args, **kwargs), outcome)

    # -- spawn --
    def _spawn(self, wrapped: Any, handler: Any, args: Any, kwargs: Any) -> Any:
        user = args[0] if args else kwargs.get("user")
        server_name = args[1] if len(args) > 1 else kwargs.get("server_name", "")
        option = self.profile_option
        return self._until_done(
            "jupyterhub.spawn",
            user,
            server_name,
            "_spawn_future",
            lambda: wrapped(*args, **kwargs),
            "Server requested",
            # the options User.spawn keeps (their position in the call differs between JupyterHub 5 and 6)
            lambda spawner: {PROFILE: profile_of(getattr(spawner, "user_options", None), option)},
        )

    def _stop(self, wrapped: Any, handler: Any, args: Any, kwargs: Any) -> Any:
        user = args[0] if args else kwargs.get("user")
        server_name = args[1] if len(args) > 1 else kwargs.get("server_name", "")
        return self._until_done("jupyterhub.stop", user, server_name, "_stop_future", lambda: wrapped(*args, **kwargs))

    async def _until_done(
        self,
        name: str,
        user: Any,
        server_name: Any,
        future_attribute: str,
        call: Callable[[], Any],
        event: str = "",
        at_end: Callable[[Any], dict[str, Any]] | None = None,
    ) -> Any:
        """A span from now until the spawner's background future (``_spawn_future``/``_stop_future``) is done."""
        spawner = None
        if not is_instrumentation_enabled():
            return await call()
        try:
            spawner = user.spawners[server_name or ""]
            attributes = spawner_attributes(spawner)
            span = self.start_span(name, attributes)
        except Exception:
            return await call()
        spans = spawner.__dict__.setdefault("_jh_otel_spans", {})
        spans[name] = span
        if event:
            spawner.__dict__["_jh_otel_progress"] = set()  # a new spawn: its progress messages, each once
            self._progress_event(spawner, event, 0)
        token = otel_context.attach(trace.set_span_in_context(span))
        error: BaseException | None = None
        try:
            return await call()
        except BaseException as raised:
            error = raised
            raise
        finally:
            otel_context.detach(token)
            with guarded("ending an operation span"):
                future = getattr(spawner, future_attribute, None)
                last = (lambda: at_end(spawner)) if at_end is not None else None
                if future is not None and not future.done():
                    future.add_done_callback(lambda f: self._end(span, spans, name, _future_error(f), last))
                else:
                    self._end(span, spans, name, error if future is None else _future_error(future) or error, last)

    def _end(
        self,
        span: Any,
        spans: dict[str, Any],
        name: str,
        error: BaseException | None,
        last: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        with guarded("ending an operation span"):
            if spans.get(name) is span:
                del spans[name]
            if not span.is_recording():
                return
            if last is not None:
                span.set_attributes(last())
            if error is not None:
                _fail(span, error)
                span.record_exception(error)
                span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(error).__qualname__}: {error}"))
                span.set_attribute("jupyterhub.status", "failure")
            else:
                span.set_attribute("jupyterhub.status", "success")
            span.end()

    def _user_stop(self, wrapped: Any, user: Any, args: Any, kwargs: Any) -> Any:
        current = trace.get_current_span()
        if getattr(current, "name", None) == "jupyterhub.stop" and current.is_recording():
            return wrapped(*args, **kwargs)
        server_name = args[0] if args else kwargs.get("server_name", "")
        return self._run("jupyterhub.stop", _user_server(user, server_name), lambda: wrapped(*args, **kwargs))

    def _wait_up(self, wrapped: Any, user: Any, args: Any, kwargs: Any) -> Any:
        spawner = args[0] if args else kwargs.get("spawner")
        return self._wait(wrapped, spawner, args, kwargs)

    async def _wait(self, wrapped: Any, spawner: Any, args: Any, kwargs: Any) -> Any:
        """One span for the readiness wait, however many requests it takes (client spans suppressed, counted)."""
        count = [0]
        reset = _polls.set(count)
        try:
            with suppress_http_instrumentation():
                result = await self._run(
                    "jupyterhub.server.wait_up",
                    _wait_attributes(spawner),
                    lambda: wrapped(*args, **kwargs),
                    always=lambda: {"jupyterhub.server.polls": count[0]},
                )
        finally:
            _polls.reset(reset)
        self._progress_event(spawner, "Server ready", 100)
        return result

    # -- progress --
    def _progress_event(self, spawner: Any, message: str, progress: Any = None) -> None:
        with guarded("recording spawn progress"):
            span = spawner.__dict__.get("_jh_otel_spans", {}).get("jupyterhub.spawn")
            if span is None or not span.is_recording():
                return
            seen = spawner.__dict__.setdefault("_jh_otel_progress", set())
            if message in seen:
                return
            seen.add(message)
            attributes = {"jupyterhub.progress": progress} if isinstance(progress, (int, float)) else {}
            span.add_event(message, attributes)

    def _progress(self, wrapped: Any, spawner: Any, args: Any, kwargs: Any) -> Any:
        return self._mirror_progress(wrapped(*args, **kwargs), spawner)

    async def _mirror_progress(self, events: Any, spawner: Any) -> Any:
        async for event in events:
            if isinstance(event, dict) and isinstance(event.get("message"), str):
                self._progress_event(spawner, event["message"], event.get("progress"))
            yield event


def _future_error(future: Any) -> BaseException | None:
    if future.cancelled():
        return None
    return future.exception()


def _wait_attributes(spawner: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    with guarded("describing a readiness wait"):
        attributes.update(spawner_attributes(spawner))
        server = getattr(spawner, "server", None)
        if server is not None:
            attributes["server.address"] = str(getattr(server, "ip", "") or "")
            attributes["server.port"] = int(getattr(server, "port", 0) or 0)
    return attributes


def _stopped(handler: Any, user: Any, server_name: str = "", *args: Any, **kwargs: Any) -> dict[str, str]:
    return {**_user_server(user, server_name), "jupyterhub.reason": "exited"}


def _proxy_attributes(proxy: Any, *args: Any, **kwargs: Any) -> dict[str, str]:
    attributes = {"jupyterhub.proxy.class": type(proxy).__qualname__}
    user = args[0] if args else kwargs.get("user")
    if hasattr(user, "spawners"):
        attributes.update(_user_server(user, args[1] if len(args) > 1 else kwargs.get("server_name", "")))
    return attributes


def _poll_outcome(status: Any) -> dict[str, Any]:
    if status is None:
        return {"jupyterhub.status": "running"}
    return {"jupyterhub.status": "stopped", "jupyterhub.exit_status": str(status)}


def _count(result: Any) -> dict[str, Any]:
    return {"jupyterhub.spawners": result} if isinstance(result, int) else {}


def _counted(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    count = _polls.get()
    if count is not None:
        count[0] += 1
        # JupyterHub 5's tornado client: its contrib wrapper ignores the suppression key, so go around it
        inner = getattr(wrapped, "__wrapped__", None)
        if inner is not None and type(instance).__module__.startswith("tornado"):
            return inner(*args, **kwargs)
    return wrapped(*args, **kwargs)


async def _inside(awaitable: Any, marked: tuple[tuple[int, str], ...]) -> Any:
    """Await a spawner method with its span marked as in progress, so that a ``super()`` call it makes is not
    traced again."""
    token = _in_spawner_method.set(marked)
    try:
        return await awaitable
    finally:
        _in_spawner_method.reset(token)


def _restore(cls: type, method: str, own: Any) -> None:
    """Put ``cls.method`` back as it was before jh_otel wrapped it: its own definition, or inherited."""
    if own is None:
        if method in cls.__dict__:
            delattr(cls, method)
    else:
        setattr(cls, method, own)


def _outside_any_trace(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """Periodic work scheduled from here runs with an empty context, not inside the spawn that started it."""
    token = otel_context.attach(otel_context.Context())
    try:
        return wrapped(*args, **kwargs)
    finally:
        otel_context.detach(token)
