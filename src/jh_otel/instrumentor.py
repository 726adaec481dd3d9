"""``JupyterHubInstrumentor``: the ``opentelemetry_instrumentor`` entry point.

``opentelemetry-instrument`` calls :meth:`instrument` at interpreter start, before JupyterHub is imported and
before ``jupyterhub_config.py`` is read; in a process that never imports ``jupyterhub.app`` (a single-user server,
any other Python program under the wrapper) nothing more happens. When ``jupyterhub.app`` is imported, three
lifecycle methods of ``JupyterHub`` are wrapped:

- ``initialize``: its start time is the start of the ``jupyterhub.startup`` span;
- ``init_tornado_application``: config read, database and handlers ready -> :meth:`HubTelemetry.attach`;
- ``start``: the hub is up -> the snapshot refresher starts on its IOLoop;
- ``cleanup``: the hub is stopping -> hooks come off and telemetry is flushed within
  ``OTEL_PYTHON_JUPYTERHUB_SHUTDOWN_TIMEOUT`` seconds.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Collection
from typing import Any

import wrapt
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.metrics import get_meter_provider
from prometheus_client import REGISTRY

from ._guard import guarded
from .package import _instruments
from .runtime import HubTelemetry
from .settings import Settings, parse_settings
from .shutdown import shutdown_providers
from .tracing import HubTracing, ProcessTracing

log = logging.getLogger("jh_otel")

_LIFECYCLE = ("initialize", "init_tornado_application", "start", "cleanup")


class JupyterHubInstrumentor(BaseInstrumentor):
    """Instruments JupyterHub; see the package documentation for settings.

    ``instrument()`` accepts ``meter_provider`` and ``tracer_provider`` (default: the global ones), ``settings``
    (a :class:`Settings`, default: parsed from the environment) and ``registry`` (the ``prometheus_client``
    registry the hub serves, default: the global one).
    """

    _telemetry: HubTelemetry | None = None
    _make_telemetry: Any = None
    _hooked = False
    _providers: list[Any] | None = None
    _tracing: ProcessTracing | None = None
    _initialize_started: float | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    @property
    def telemetry(self) -> HubTelemetry | None:
        return self._telemetry

    def _instrument(self, **kwargs: Any) -> None:
        with guarded("instrumenting JupyterHub"):
            settings: Settings = kwargs.get("settings") or parse_settings(os.environ)
            for error in settings.errors:
                log.error("%s", error)
            # the provider whose push readers export the catalogue (jh_otel.producer); none is made here
            meter_provider = kwargs.get("meter_provider") or get_meter_provider()
            given = [kwargs[key] for key in ("meter_provider", "tracer_provider") if kwargs.get(key) is not None]
            self._providers = given or None
            registry = kwargs.get("registry", REGISTRY)
            tracing = self._tracing = ProcessTracing(settings, kwargs.get("tracer_provider"))
            tracing.install()
            # instruments are created when a hub starts, not in every process that runs under the wrapper
            self._make_telemetry = lambda: HubTelemetry(settings, meter_provider, registry, HubTracing(tracing))
            wrapt.register_post_import_hook(self._hook_app, "jupyterhub.app")

    def _hook_app(self, module: Any) -> None:
        if self._make_telemetry is None or self._hooked:
            return
        with guarded("hooking JupyterHub"):
            wrapt.wrap_function_wrapper(module, "JupyterHub.initialize", self._initialize)
            wrapt.wrap_function_wrapper(module, "JupyterHub.init_tornado_application", self._attach)
            wrapt.wrap_function_wrapper(module, "JupyterHub.start", self._start)
            wrapt.wrap_function_wrapper(module, "JupyterHub.cleanup", self._cleanup)
            self._hooked = True

    def _initialize(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        self._initialize_started = time.time()
        return wrapped(*args, **kwargs)

    def _attach(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        with guarded("attaching to the hub"):
            if self._telemetry is None and self._make_telemetry is not None:
                self._telemetry = self._make_telemetry()
            if self._telemetry is not None:
                self._telemetry.attach(instance, self._initialize_started)
        return result

    async def _start_after(self, pending: Any) -> Any:
        result = await pending
        with guarded("starting the snapshot refresher"):
            if self._telemetry is not None:
                self._telemetry.start()
        return result

    def _start(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        return self._start_after(wrapped(*args, **kwargs))

    async def _cleanup_after(self, pending: Any) -> Any:
        try:
            return await pending
        finally:
            with guarded("flushing telemetry at shutdown"):
                if self._telemetry is not None:
                    # hooks off and the registry as it was, so that each reader's own shutdown finds it intact
                    self._telemetry.detach()
                    timeout = self._telemetry.settings.shutdown_timeout
                    shutdown_providers(timeout, self._providers)

    def _cleanup(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        return self._cleanup_after(wrapped(*args, **kwargs))

    def _uninstrument(self, **kwargs: Any) -> None:
        with guarded("uninstrumenting JupyterHub"):
            if self._hooked:
                from jupyterhub.app import JupyterHub

                for name in _LIFECYCLE:
                    unwrap(JupyterHub, name)
                self._hooked = False
            if self._telemetry is not None:
                self._telemetry.close()
            if self._tracing is not None:
                self._tracing.uninstall()
            self._telemetry = self._make_telemetry = self._tracing = None
