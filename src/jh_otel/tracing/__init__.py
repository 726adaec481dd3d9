"""Traces: contrib instrumentations corrected for JupyterHub, JupyterHub's operations, scrubbing on the way out.

:class:`ProcessTracing` runs in every process under the wrapper (the hub, and single-user servers that inherit
it): stable HTTP semantic conventions, the tornado corrections, tornado and aiohttp-client instrumentation, the
scrubbing exporter in front of every span exporter, the fast OTLP span encoder and the outbox that carries spans
through collector outages. :class:`HubTracing` is bound to one hub: SQL spans on its engine, its operation spans
and log correlation.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from opentelemetry import trace

from .._guard import guarded
from ..compat import Expect, unmet
from ..settings import Settings, disabled_by_operator
from ..version import __version__
from . import client, encoding, lean, outbox
from .logs import correlate
from .operations import Operations
from .scrubbing import KnownSecrets, scrubbers, wrap_exporters
from .server import ServerCorrections
from .singleuser import StartupSpan, is_spawned_server
from .sql import trace_engine

log = logging.getLogger("jh_otel")
_INSTRUMENT_WARNING = "Attempting to instrument while already instrumented"


_SEMCONV = "opentelemetry.instrumentation._semconv"
SEMCONV_EXPECTS = (
    Expect(_SEMCONV, "_OpenTelemetrySemanticConventionStability._initialize"),
    Expect(_SEMCONV, "_OpenTelemetrySemanticConventionStability._OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING"),
    Expect(_SEMCONV, "_OpenTelemetryStabilitySignalType.HTTP"),
    Expect(_SEMCONV, "_StabilityMode.HTTP"),
)


def stable_http_semconv(environ: Any = os.environ) -> None:
    """``http`` semantic conventions unless ``OTEL_SEMCONV_STABILITY_OPT_IN`` already chose for HTTP (left out, with
    one warning, when the contrib internals it sets are not there: the contrib default conventions then apply)."""
    if unmet("stable HTTP semantic conventions", SEMCONV_EXPECTS, ("opentelemetry-instrumentation",)):
        return
    from opentelemetry.instrumentation import _semconv

    stability = _semconv._OpenTelemetrySemanticConventionStability
    stability._initialize()
    opt_in = [part.strip() for part in environ.get("OTEL_SEMCONV_STABILITY_OPT_IN", "").split(",")]
    if not any(part.startswith("http") for part in opt_in):
        stability._OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING[_semconv._OpenTelemetryStabilitySignalType.HTTP] = (
            _semconv._StabilityMode.HTTP
        )


class _QuietRepeat(logging.Filter):
    """The auto-instrumentation instruments tornado and aiohttp again after jh_otel did: not worth a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _INSTRUMENT_WARNING not in record.getMessage()


class ProcessTracing:
    def __init__(self, settings: Settings, tracer_provider: Any = None) -> None:
        self.settings = settings
        self.tracer_provider = tracer_provider or trace.get_tracer_provider()
        self.known = KnownSecrets()
        self._undo: list[Callable[[], None]] = []

    def install(self) -> None:
        with guarded("scrubbing span exporters"):
            self._undo += wrap_exporters(self.tracer_provider, self.known)
        with guarded("encoding spans"):
            self._undo += encoding.install()
        with guarded("delivering spans through collector outages"):
            holders = [(exporter, "inner") for exporter in scrubbers(self.tracer_provider)]
            self._undo += outbox.install(holders, self.settings.span_buffer * 2**20)
        if self.settings.lean_spans == "on":
            with guarded("lean spans"):
                self._undo += lean.install()
        corrected = False
        with guarded("correcting the tornado instrumentation"):
            from opentelemetry.instrumentation import tornado as contrib_tornado

            probes = self.settings.trace_probes == "on"
            undo = ServerCorrections(self.known, trace_probes=probes).install(contrib_tornado)
            if undo is not None:
                self._undo += undo
                corrected = True
        with guarded("suppressing tornado client spans where asked"):
            from opentelemetry.instrumentation import tornado as contrib_tornado

            self._undo += client.install(contrib_tornado)
        with guarded("choosing HTTP semantic conventions"):
            # spans and the contrib client metrics alike (``http.client.request.duration`` in seconds, not the old
            # ``http.client.duration`` in milliseconds that promtool rejects)
            stable_http_semconv()
        instrumentor_log = logging.getLogger("opentelemetry.instrumentation.instrumentor")
        if not any(isinstance(f, _QuietRepeat) for f in instrumentor_log.filters):
            instrumentor_log.addFilter(_QuietRepeat())
        with guarded("instrumenting tornado"):
            # uncorrected, the contrib tornado instrumentation names routes "GET %s" and fails requests when the
            # base URL has a %: left out rather than run as shipped
            self._instrument("tornado", "opentelemetry.instrumentation.tornado", "TornadoInstrumentor", corrected)
        with guarded("instrumenting aiohttp"):
            module = "opentelemetry.instrumentation.aiohttp_client"
            self._instrument("aiohttp-client", module, "AioHttpClientInstrumentor")
        if not self.settings.traces_on:
            return
        if is_spawned_server(os.environ):
            with guarded("tracing the single-user startup"):
                StartupSpan(self.tracer(), os.environ).install()

    def tracer(self) -> trace.Tracer:
        return trace.get_tracer("jh_otel", __version__, self.tracer_provider)

    def _instrument(self, entry_point: str, module: str, name: str, allowed: bool = True) -> None:
        """Instrumented before jh_otel chose the conventions (the wrapper loads entry points in no set order):
        uninstrumented, and instrumented again with them only with traces on (``OTEL_PYTHON_JUPYTERHUB_TRACES=off``
        or no traces exporter: no request spans made for nothing) and when ``allowed``; never against the
        operator's ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``."""
        if disabled_by_operator(entry_point, os.environ):
            return
        try:
            instrumentor = getattr(__import__(module, fromlist=[name]), name)()
        except ModuleNotFoundError as missing:  # the library itself (aiohttp before JupyterHub 5.x pulled it in)
            log.debug("jh_otel: not instrumenting %s: %s", entry_point, missing)
            return
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        if not (allowed and self.settings.traces_on):
            return
        instrumentor.instrument(tracer_provider=self.tracer_provider, skip_dep_check=True)
        self._undo.append(instrumentor.uninstrument)

    def uninstall(self) -> None:
        while self._undo:
            with guarded("removing tracing"):
                self._undo.pop()()


class HubTracing:
    """One hub's spans: SQL on its engine (unless the operator's ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` names
    ``sqlalchemy``), its operations, log correlation."""

    def __init__(self, process: ProcessTracing) -> None:
        self.process = process
        self.operations: Operations | None = None
        self._undo: list[Callable[[], None]] = []

    def attach(self, app: Any, initialize_started: float | None = None) -> None:
        settings = self.process.settings
        hub_log = getattr(app, "log", None)
        if isinstance(hub_log, logging.Logger):
            with guarded("correlating logs"):
                self._undo += correlate(hub_log, settings.log_correlation == "on")
        if not settings.traces_on:
            return
        tracer = self.process.tracer()
        if disabled_by_operator("sqlalchemy", os.environ):
            log.info("jh_otel: no SQL spans: OTEL_PYTHON_DISABLED_INSTRUMENTATIONS names sqlalchemy")
        else:
            with guarded("tracing SQL"):
                undo = trace_engine(app.db.get_bind(), tracer, settings.sql_span_min_duration)
                if undo is not None:
                    self._undo.append(undo)
        with guarded("tracing JupyterHub operations"):
            self.operations = Operations(tracer, settings.profile_option)
            self._undo.append(self.operations.uninstall)
            self.operations.install(app, initialize_started)

    def detach(self) -> None:
        while self._undo:
            with guarded("removing hub tracing"):
                self._undo.pop()()
        self.operations = None
