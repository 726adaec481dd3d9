"""Request spans: ``opentelemetry-instrumentation-tornado``, corrected for JupyterHub (and any tornado server).

The contrib instrumentation stays in charge of starting and ending spans; jh_otel replaces five of its module-level
functions (reversibly), which its wrappers look up at call time, so the corrections hold whoever instrumented it:

- span names and ``http.route`` come from route templates built from the application's own rules (handler
  arguments mapped onto the groups: ``GET /hub/api/users/{user_name}/server``), never a literal ``%s`` and no
  ``%``-formatting at all (a ``%`` in ``base_url`` no longer turns requests into HTTP 500s); requests no route
  matched (JupyterHub's 404 handlers) are all named ``METHOD unmatched``;
- the contrib server metrics are not recorded: they count an error response twice, drive
  ``http.server.active_requests`` negative and (old conventions) label by ``Host`` header; jh_otel's catalogue
  (``jupyterhub_request_duration_seconds``...) records every request once, where JupyterHub does;
- a finished span carries ``jupyterhub.user.name`` (or ``jupyterhub.service.name``) when the request was
  authenticated;
- the credentials a request carries (credential-named query and form values, the ``Authorization`` credential,
  cookie values, token paths) are handed to :class:`~jh_otel.tracing.scrubbing.KnownSecrets` for its trace.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterator
from typing import Any

from opentelemetry.util.http import sanitize_method

from .. import scrub
from .._guard import guarded
from ..hooks.routes import UNMATCHED, Routes
from .scrubbing import KnownSecrets

_TOKEN_PATH = re.compile(r"/api/authorizations/(?:token|cookie)/([^/?#]+)")


def _rules(router: Any) -> Iterator[tuple[str, type]]:
    for rule in getattr(router, "rules", ()) or ():
        target = getattr(rule, "target", None)
        if isinstance(target, type):
            regex = getattr(rule.matcher, "regex", None)
            if regex is not None:
                yield regex.pattern[:-1] if regex.pattern.endswith("$") else regex.pattern, target
        elif hasattr(target, "rules"):
            yield from _rules(target)


class ApplicationRoutes:
    """Route templates per tornado application, rebuilt when its rules change."""

    def __init__(self) -> None:
        self._cache: weakref.WeakKeyDictionary[Any, tuple[int, Routes]] = weakref.WeakKeyDictionary()

    def route(self, handler: Any) -> str:
        application = handler.application
        router = getattr(application, "wildcard_router", None)
        size = len(getattr(router, "rules", ())) + len(getattr(application.default_router, "rules", ()))
        cached = self._cache.get(application)
        if cached is None or cached[0] != size:
            cached = (size, Routes(_rules(application.default_router)))
            self._cache[application] = cached
        return cached[1].endpoint(type(handler), handler.request.path)


def request_secrets(request: Any) -> list[str]:
    """The credential values one tornado request carries."""
    found: list[str] = []
    for name, values in getattr(request, "query_arguments", {}).items():
        if scrub.is_secret_name(name):
            found.extend(v.decode("utf-8", "replace") for v in values)
    for name, values in getattr(request, "body_arguments", {}).items():
        if scrub.is_secret_name(name):
            found.extend(v.decode("utf-8", "replace") for v in values)
    headers = request.headers
    for header in ("Authorization", "Proxy-Authorization"):
        value = headers.get(header)
        if value:
            found.append(value.strip().rpartition(" ")[2])
    if "Cookie" in headers:
        try:
            found.extend(morsel.value for morsel in request.cookies.values())
        except Exception:
            pass
    match = _TOKEN_PATH.search(request.path or "")
    if match:
        found.append(match.group(1))
    return found


def _user_attributes(handler: Any) -> dict[str, str]:
    user = handler.__dict__.get("_jupyterhub_user") or handler.__dict__.get("_current_user")
    if not user:
        return {}
    if isinstance(user, dict):  # a single-user server's view of the hub user
        name, kind = user.get("name"), user.get("kind", "user")
    else:
        name, kind = getattr(user, "name", None), getattr(user, "kind", "user")
    if not isinstance(name, str):
        return {}
    return {"jupyterhub.service.name" if kind == "service" else "jupyterhub.user.name": name}


class ServerCorrections:
    """The replaced contrib functions; :meth:`install` returns the undo callables."""

    _REPLACED = (
        "_get_default_span_name",
        "find_matched_rule",
        "route_from_rule",
        "_start_span",
        "_finish_span",
        "_record_prepare_metrics",
        "_record_on_finish_metrics",
    )

    def __init__(self, known: KnownSecrets, routes: ApplicationRoutes | None = None) -> None:
        self.known = known
        self.routes = routes or ApplicationRoutes()
        self._original: dict[str, Any] = {}

    def install(self, module: Any) -> list[Any]:
        if self._original:
            return []
        for name in self._REPLACED:
            self._original[name] = getattr(module, name)
            setattr(module, name, getattr(self, name))

        def undo() -> None:
            for name, original in self._original.items():
                setattr(module, name, original)
            self._original.clear()

        return [undo]

    # -- naming --
    def route(self, handler: Any) -> str:
        """The handler's route template, looked up once per request."""
        route = handler.__dict__.get("_jh_otel_route")
        if route is None:
            try:
                route = self.routes.route(handler)
            except Exception:
                route = UNMATCHED
            handler._jh_otel_route = route
        return route

    def _get_default_span_name(self, handler: Any) -> str:
        method = sanitize_method(handler.request.method)
        return f"{'HTTP' if method == '_OTHER' else method} {self.route(handler)}"

    @staticmethod
    def find_matched_rule(handler: Any) -> Any:
        return handler  # the handler stands for its rule: route_from_rule below only needs the handler

    def route_from_rule(self, rule: Any, handler: Any) -> str | None:
        route = self.route(handler)
        return None if route == UNMATCHED else route

    # -- spans --
    def _start_span(self, tracer: Any, handler: Any, mode: Any) -> Any:
        ctx = self._original["_start_span"](tracer, handler, mode)
        with guarded("naming a request span"):
            span = ctx.span
            if span.is_recording():
                route = self.route(handler)
                if route != UNMATCHED:
                    span.set_attribute("http.route", route)
                secrets = request_secrets(handler.request)
                if secrets:
                    self.known.add(span.get_span_context().trace_id, secrets)
        return ctx

    def _finish_span(self, tracer: Any, handler: Any, error: Any, mode: Any) -> Any:
        with guarded("annotating a request span"):
            ctx = handler.__dict__.get("_otel_trace_context_key")
            if ctx is not None and ctx.span.is_recording():
                attributes = _user_attributes(handler)
                if attributes:
                    ctx.span.set_attributes(attributes)
        return self._original["_finish_span"](tracer, handler, error, mode)

    # -- metrics: none from here --
    @staticmethod
    def _record_prepare_metrics(*args: Any) -> None:
        return None

    @staticmethod
    def _record_on_finish_metrics(*args: Any) -> None:
        return None
