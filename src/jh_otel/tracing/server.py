"""Request spans: ``opentelemetry-instrumentation-tornado``, corrected for JupyterHub (and any tornado server).

The contrib instrumentation keeps patching handler classes (``prepare``, ``on_finish``, ``log_exception``,
websockets' ``on_close``), honours ``OTEL_PYTHON_TORNADO_EXCLUDED_URLS`` and traces ``AsyncHTTPClient``. jh_otel
replaces four of its module-level functions (reversibly; its wrappers look them up at call time, so the corrections
hold whoever instrumented it):

- ``_start_span``/``_finish_span``, replaced because the originals cannot be corrected from outside: span names and
  ``http.route`` come from route templates built from the application's own rules (handler arguments mapped onto
  the groups: ``GET /hub/api/users/{user_name}/server``), never a literal ``%s`` and no ``%``-formatting at all (a
  ``%`` in ``base_url`` no longer turns requests into HTTP 500s); requests no route matched (JupyterHub's 404
  handlers) are all ``METHOD unmatched``; attributes follow the stable HTTP conventions (no ``url.full`` on a
  server span, no ``Host`` header split into labels); the span carries ``jupyterhub.user.name`` (or
  ``jupyterhub.service.name``) when the request was authenticated; a 5xx sets ``error.type`` and status ERROR
  with the exception recorded; the span ends exactly once. They cost less per request too
  (``benchmarks/micro.py``);
- ``_record_prepare_metrics``/``_record_on_finish_metrics`` record nothing: the contrib server metrics count an
  error response twice and drive ``http.server.active_requests`` negative; jh_otel's catalogue
  (``jupyterhub_request_duration_seconds``...) records every request once, where JupyterHub does.

The credentials a request carries (credential-named query and form values, the ``Authorization`` credential,
cookie values, token paths) are handed to :class:`~jh_otel.tracing.scrubbing.KnownSecrets` for its trace when the
request starts, and again when it ends if it lasted long (an event stream), so that they are kept for the TTL after
its end.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.propagators import get_global_response_propagator
from opentelemetry.util.http import (
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST,
    get_custom_headers,
)
from tornado.httputil import HTTPHeaders
from tornado.web import HTTPError

from .. import scrub
from ..compat import Expect, unmet
from ..hooks.requests import METHODS
from ..hooks.routes import UNMATCHED, Routes
from .scrubbing import MAX_SECRET_LENGTH, MAX_SECRETS_PER_TRACE, MIN_SECRET_LENGTH, KnownSecrets

log = logging.getLogger("jh_otel")
PROBE_HANDLERS = frozenset(
    {"jupyterhub.handlers.pages.HealthCheckHandler", "jupyterhub.handlers.metrics.MetricsHandler"}
)
"""JupyterHub's probes (``/hub/health``, ``/hub/api/health``, ``/hub/metrics``, ``/hub/api/metrics``): counted in the
request metrics, not traced unless ``OTEL_PYTHON_JUPYTERHUB_TRACE_PROBES=on``."""


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


def header_case(name: str) -> str:
    """``name`` as tornado's ``HTTPHeaders`` keeps its keys (``Http-Header-Case``)."""
    return "-".join(word.capitalize() for word in name.split("-"))


CREDENTIAL_HEADERS = frozenset({"Authorization", "Cookie", "Proxy-Authorization"})


def request_secrets(request: Any, present: frozenset[str] | None = None) -> list[str]:
    """The credential values one tornado request carries: distinct, most telling first, at most
    :data:`~jh_otel.tracing.scrubbing.MAX_SECRETS_PER_TRACE` of them.

    The order keeps, within the bound, what only a match by value can find again: the ``Authorization`` credential,
    the token path's, credential-named form fields (a login's password), cookie values, and last credential-named
    query parameters (which the name-based rules remove from the URL attributes anyway). Values shorter than
    :data:`~jh_otel.tracing.scrubbing.MIN_SECRET_LENGTH` or longer than
    :data:`~jh_otel.tracing.scrubbing.MAX_SECRET_LENGTH` are left out, and reading stops at the bound: a request
    with thousands of secret-named parameters is not compared with thousands of values in each of its texts.
    """
    headers = request.headers
    if not (
        getattr(request, "query_arguments", None)
        or getattr(request, "body_arguments", None)
        or (
            any(h in headers for h in CREDENTIAL_HEADERS)
            if present is None
            else not CREDENTIAL_HEADERS.isdisjoint(present)
        )
        or "/api/authorizations/" in (request.path or "")
    ):
        return []  # the common anonymous request: nothing to look through

    def named(attribute: str) -> Iterator[str]:
        for name, values in (getattr(request, attribute, None) or {}).items():
            if scrub.is_secret_name(name):
                # UTF-8 has at most 4 bytes a character: a longer value cannot fit MAX_SECRET_LENGTH once decoded
                yield from (v.decode("utf-8", "replace") for v in values if len(v) <= 4 * MAX_SECRET_LENGTH)

    def candidates() -> Iterator[str]:
        for header in ("Authorization", "Proxy-Authorization"):
            value = headers.get(header)
            if value:
                yield value.strip().rpartition(" ")[2]
        token_path = scrub.find_secret_path(request.path or "")
        if token_path is not None:
            yield token_path[1]
        yield from named("body_arguments")
        if "Cookie" in headers:
            try:
                cookies = [morsel.value for morsel in request.cookies.values()]
            except Exception:  # a malformed Cookie header: tornado's parser may raise
                cookies = []
            yield from cookies
        yield from named("query_arguments")

    found: dict[str, None] = {}
    for value in candidates():
        if MIN_SECRET_LENGTH <= len(value) <= MAX_SECRET_LENGTH:
            found[value] = None
            if len(found) >= MAX_SECRETS_PER_TRACE:
                break
    return list(found)


def user_attributes(handler: Any) -> dict[str, str]:
    """``jupyterhub.user.name`` (or ``jupyterhub.service.name``) of the request's authenticated user, if any."""
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
        "_start_span",
        "_finish_span",
        "_record_prepare_metrics",
        "_record_on_finish_metrics",
    )

    def __init__(
        self, known: KnownSecrets, routes: ApplicationRoutes | None = None, trace_probes: bool = False
    ) -> None:
        self.known = known
        self.routes = routes or ApplicationRoutes()
        self.trace_probes = trace_probes
        self._probes: dict[type, bool] = {}
        self._original: dict[str, Any] = {}
        self._patched_key = ""
        self.trace_context: Any = None
        self.untraced: Any = None
        self.response_setter: Any = None
        self.propagated_fields: tuple[str, ...] = ()
        self.propagated_headers: frozenset[str] = frozenset()
        self.watched_headers: frozenset[str] = frozenset()
        self.capture_request_headers: list[str] = []

    _MODULE = "opentelemetry.instrumentation.tornado"
    EXPECTS = (
        Expect(_MODULE, "_start_span", ("tracer", "handler", "sem_conv_opt_in_mode")),
        Expect(_MODULE, "_finish_span", ("tracer", "handler", "error", "sem_conv_opt_in_mode")),
        Expect(_MODULE, "_record_prepare_metrics", ("server_histograms", "handler", "sem_conv_opt_in_mode")),
        Expect(_MODULE, "_record_on_finish_metrics", ("server_histograms", "handler", "error", "sem_conv_opt_in_mode")),
        Expect(_MODULE, "_TraceContext", ("activation", "span", "token")),
        Expect(_MODULE, "response_propagation_setter"),
    )
    """The contrib functions replaced and the names they use, as in contrib 0.61b0 and later."""
    PROBE_CLASSES = (
        Expect(_MODULE, "patch_handler_class", ("tracer", "server_histograms", "cls")),
        Expect(_MODULE, "_OTEL_PATCHED_KEY"),
    )
    """Replaced while probes are not traced (checked on its own: a mismatch keeps the probes' wrappers, which then
    do nothing but cost a few microseconds a probe)."""

    def install(self, module: Any) -> list[Any] | None:
        """Replace the contrib functions in ``module``; returns the undo callables, or None (after one warning) when
        the installed contrib instrumentation is not one these corrections fit: its request spans are then left
        out, never produced by functions called with arguments they do not take."""
        if self._original:
            return []
        expects = [Expect(module.__name__, e.qualname, e.parameters) for e in self.EXPECTS]
        if unmet("request spans (tornado)", expects, ("opentelemetry-instrumentation-tornado", "tornado")):
            return None
        self.trace_context = module._TraceContext
        self.untraced = self.trace_context(None, trace.INVALID_SPAN, None)
        self.response_setter = module.response_propagation_setter
        self.propagated_fields = tuple(propagate.get_global_textmap().fields)
        self.propagated_headers = frozenset(header_case(f) for f in self.propagated_fields)
        self.watched_headers = self.propagated_headers | CREDENTIAL_HEADERS | {"User-Agent"}
        self.capture_request_headers = get_custom_headers(OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST)
        replaced = list(self._REPLACED)
        if not self.trace_probes:
            probes = [Expect(module.__name__, e.qualname, e.parameters) for e in self.PROBE_CLASSES]
            if not unmet("unwrapped probes (tornado)", probes, ("opentelemetry-instrumentation-tornado",)):
                self._patched_key = module._OTEL_PATCHED_KEY
                replaced.append("patch_handler_class")
        for name in replaced:
            self._original[name] = getattr(module, name)
            setattr(module, name, getattr(self, name))

        def undo() -> None:
            for name, original in self._original.items():
                setattr(module, name, original)
            self._original.clear()

        return [undo]

    # -- naming --
    def route(self, handler: Any) -> str:
        try:
            return self.routes.route(handler)
        except Exception:
            return UNMATCHED

    # -- spans: inline try/except rather than guarded() blocks, as these run for every request --
    def _start_span(self, tracer: Any, handler: Any, mode: Any) -> Any:
        """The contrib ``_prepare`` hands ``ctx.span`` to a ``server_request_hook`` given in code: an untraced
        request (a probe, or a span that could not start) gets a context with the invalid, non-recording span, so
        that the hook has a span to ignore rather than an ``AttributeError`` raised into the request."""
        try:
            ctx = self._start(tracer, handler)
        except Exception:
            log.debug("jh_otel: could not start a request span", exc_info=True)
            ctx = None
        return self.untraced if ctx is None else ctx

    def _finish_span(self, tracer: Any, handler: Any, error: Any, mode: Any) -> None:
        try:
            self._finish(tracer, handler, error)
        except Exception:
            log.debug("jh_otel: could not end a request span", exc_info=True)

    def patch_handler_class(self, tracer: Any, server_histograms: Any, cls: type, *args: Any, **kwargs: Any) -> bool:
        """The contrib wraps each handler class's ``prepare``, ``on_finish`` and ``log_exception`` the first time it
        is instantiated; a probe's class, which makes no span, is left as it is (the wrappers would only find that
        out, a few microseconds a probe). Installed only while probes are not traced. Called for every request: a
        class the contrib patched already is answered first, as the contrib's own function does."""
        if getattr(cls, self._patched_key, False) or self._is_probe(cls):
            return False
        patch = self._original.get("patch_handler_class")
        return patch(tracer, server_histograms, cls, *args, **kwargs) if patch is not None else False

    def _is_probe(self, cls: type) -> bool:
        probe = self._probes.get(cls)
        if probe is None:
            probe = self._probes[cls] = f"{cls.__module__}.{cls.__qualname__}" in PROBE_HANDLERS
        return probe

    def _start(self, tracer: Any, handler: Any) -> Any:
        """The request's SERVER span, current until the request ends: stable HTTP conventions, one context attach.
        None (no span) for a probe unless probes are traced.

        Replaces the contrib function (same ``_TraceContext`` on the handler), which builds the old and new
        attribute sets, parses the URL twice, re-reads header-capture settings per request and attaches the context
        twice.
        """
        if not self.trace_probes and self._is_probe(type(handler)):
            return None
        request = handler.request
        method = request.method if request.method in METHODS else "_OTHER"
        route = self.route(handler)
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.scheme": request.protocol,
            "url.path": request.path,
            "network.protocol.version": request.version.partition("/")[2] or request.version,
            "client.address": request.remote_ip,
        }
        if method == "_OTHER":
            attributes["http.request.method_original"] = request.method
        if request.query:
            attributes["url.query"] = request.query
        if route != UNMATCHED:
            attributes["http.route"] = route
        host = request.host
        if host:
            name, _, port = host.rpartition(":") if host.rfind(":") > host.rfind("]") else (host, "", "")
            attributes["server.address"] = name
            if port.isdigit():
                attributes["server.port"] = int(port)
        headers = request.headers
        # which of the headers read here the request has, in one pass over its (few) names: tornado normalizes a
        # name on each lookup, and a lookup of a missing one (most of these, most of the time) is as dear
        present = self.watched_headers.intersection(headers) if type(headers) is HTTPHeaders else None
        agent = headers.get("User-Agent") if present is None or "User-Agent" in present else None
        if agent:
            attributes["user_agent.original"] = agent
        for header in self.capture_request_headers:
            value = headers.get_list(header)
            if value:
                attributes[f"http.request.header.{header.lower()}"] = value
        if present is None:
            propagated = any(f in headers for f in self.propagated_fields)
        else:
            propagated = not self.propagated_headers.isdisjoint(present)
        parent = propagate.extract(headers) if propagated else None
        span = tracer.start_span(
            f"{'HTTP' if method == '_OTHER' else method} {route}",
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes=attributes,
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        ctx = self.trace_context(None, span, token)
        handler._otel_trace_context_key = ctx
        try:
            if span.is_recording():
                secrets = request_secrets(request, present)
                if secrets:
                    self.known.add(span.get_span_context().trace_id, secrets)
        except Exception:
            log.debug("jh_otel: could not record a request's credentials", exc_info=True)
        propagator = get_global_response_propagator()
        if propagator:
            propagator.inject(handler, setter=self.response_setter)
        return ctx

    def _finish(self, tracer: Any, handler: Any, error: Any) -> None:
        """End the request's span once: status code, user, ``error.type`` and ERROR with the exception on 5xx."""
        status = handler.get_status()
        ctx = handler.__dict__.get("_otel_trace_context_key")
        failure = None
        if error is not None:
            if isinstance(error, HTTPError):
                status = error.status_code
                if ctx is None and status in (404, 405):
                    ctx = self._start(tracer, handler)
            else:
                status = 500
            if status >= 500:
                failure = error
        if ctx is None:
            return
        del handler._otel_trace_context_key
        span = ctx.span
        try:
            if span.is_recording():
                span.set_attribute("http.response.status_code", status)
                user = user_attributes(handler)
                if user:
                    span.set_attributes(user)
                if status >= 500:
                    span.set_attribute("error.type", type(failure).__qualname__ if failure is not None else str(status))
                    description = f"{type(failure).__qualname__}: {failure}" if failure is not None else None
                    if failure is not None:
                        span.record_exception(failure)
                    span.set_status(trace.Status(trace.StatusCode.ERROR, description))
        except Exception:
            log.debug("jh_otel: could not annotate a request span", exc_info=True)
        try:
            if handler.request.request_time() > self.known.refresh_after and span.is_recording():
                # a long request (an event stream): its credentials kept counting from its end, not its start
                secrets = request_secrets(handler.request)
                if secrets:
                    self.known.add(span.get_span_context().trace_id, secrets)
        except Exception:
            log.debug("jh_otel: could not record a request's credentials", exc_info=True)
        span.end()
        if ctx.token is not None:
            otel_context.detach(ctx.token)

    # -- metrics: none from here --
    @staticmethod
    def _record_prepare_metrics(*args: Any) -> None:
        return None

    @staticmethod
    def _record_on_finish_metrics(*args: Any) -> None:
        return None
