"""The single-user side of a spawn's trace: ``jupyterhub.singleuser.startup``.

With ``OTEL_PYTHON_JUPYTERHUB_SINGLEUSER_INSTRUMENTATION=inherit`` the hub hands each server it spawns the trace
context of ``jupyterhub.spawner.start`` in ``TRACEPARENT`` (the OpenTelemetry environment-carrier convention). When
jh_otel runs in that server (``opentelemetry-instrument`` inherited through ``PYTHONPATH``), the server's startup,
from process start until jupyter_server starts its event loop, is a span of that trace, from its own service
(``service.name=jupyterhub-singleuser``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import wrapt
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .._guard import guarded

NAME = "jupyterhub.singleuser.startup"
_propagator = TraceContextTextMapPropagator()


def carrier_environment() -> dict[str, str]:
    """``TRACEPARENT`` (and ``TRACESTATE``) for the current span, to put in a spawned server's environment."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return {key.upper(): value for key, value in carrier.items()}


def is_spawned_server(environ: Mapping[str, str]) -> bool:
    return "TRACEPARENT" in environ and "JUPYTERHUB_API_TOKEN" in environ and "JUPYTERHUB_SERVICE_PREFIX" in environ


class StartupSpan:
    def __init__(self, tracer: trace.Tracer, environ: Mapping[str, str]) -> None:
        self.tracer = tracer
        self.environ = dict(environ)
        self.span: Any = None

    def install(self) -> None:
        wrapt.register_post_import_hook(self._hook, "jupyter_server.serverapp")

    def _hook(self, module: Any) -> None:
        with guarded("tracing the single-user server's startup"):
            carrier = {"traceparent": self.environ["TRACEPARENT"], "tracestate": self.environ.get("TRACESTATE", "")}
            parent = _propagator.extract(carrier)
            try:
                import psutil

                started = int(psutil.Process().create_time() * 1e9)
            except Exception:
                started = None
            self.span = self.tracer.start_span(
                NAME,
                context=parent,
                start_time=started,
                attributes={
                    "jupyterhub.user.name": self.environ.get("JUPYTERHUB_USER", ""),
                    "jupyterhub.server.name": self.environ.get("JUPYTERHUB_SERVER_NAME", ""),
                },
            )
            wrapt.wrap_function_wrapper(module, "ServerApp.start_ioloop", self._started)
        os.environ.pop("TRACEPARENT", None)  # kernels and terminals are not part of the spawn
        os.environ.pop("TRACESTATE", None)

    def _started(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        with guarded("ending the single-user startup span"):
            if self.span is not None and self.span.is_recording():
                self.span.end()
        return wrapped(*args, **kwargs)
