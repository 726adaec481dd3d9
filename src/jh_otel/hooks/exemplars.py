"""Exemplars: from a histogram bucket on ``/hub/metrics`` to the trace of a request that landed in it.

With ``OTEL_PYTHON_JUPYTERHUB_EXEMPLARS=on``:

- :func:`current_exemplar` gives the ``trace_id`` (and ``span_id``) of the current span when it is sampled, and the
  catalogue's histograms attach it to their ``prometheus_client`` observations (OTLP histograms already carry
  exemplars from the SDK's trace-based filter);
- :class:`OpenMetricsNegotiation` lets JupyterHub's ``MetricsHandler`` answer in OpenMetrics, the only Prometheus
  format that carries exemplars, when the scraper's ``Accept`` header asks for it (Prometheus does; it stores them
  with ``--enable-feature=exemplar-storage``). Everyone else keeps getting the text format, byte for byte.

JupyterHub's handler looks ``generate_latest`` up in its module at call time, after its authentication decorator:
the module's name is pointed at :meth:`OpenMetricsNegotiation.generate`, which renders OpenMetrics only for a
request that :meth:`OpenMetricsNegotiation.get` marked, and otherwise calls the original.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any

from opentelemetry import trace
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

log = logging.getLogger(__name__)

OPENMETRICS = "application/openmetrics-text"


def current_exemplar() -> dict[str, str] | None:
    """The current span's ids as exemplar labels, if it is sampled (an unsampled trace cannot be looked up)."""
    context = trace.get_current_span().get_span_context()
    if not context.trace_flags.sampled or not context.is_valid:
        return None
    return {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}


def wants_openmetrics(accept: str) -> bool:
    """Whether an ``Accept`` header admits OpenMetrics (at a non-zero quality)."""
    for item in accept.split(","):
        media, _, params = item.partition(";")
        if media.strip().lower() == OPENMETRICS:
            quality = [p.split("=", 1)[1] for p in params.split(";") if p.strip().lower().startswith("q=")]
            try:
                return not quality or float(quality[0]) > 0
            except ValueError:
                return False
    return False


class OpenMetricsNegotiation:
    """Wrapper for ``MetricsHandler.get`` plus a stand-in for ``generate_latest`` in the handler's module."""

    def __init__(self, original_generate: Any) -> None:
        self.original = original_generate
        self._handler: contextvars.ContextVar[Any] = contextvars.ContextVar("jh_otel_openmetrics", default=None)

    async def get(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        handler = None
        try:
            if wants_openmetrics(instance.request.headers.get("Accept", "")):
                handler = instance
        except Exception:
            log.debug("jh_otel: could not read the metrics request's Accept header", exc_info=True)
        token = self._handler.set(handler)
        try:
            return await wrapped(*args, **kwargs)
        finally:
            self._handler.reset(token)

    def generate(self, registry: CollectorRegistry = REGISTRY) -> bytes:
        handler = self._handler.get()
        if handler is not None:
            try:
                body = generate_openmetrics(registry)
                handler.set_header("Content-Type", OPENMETRICS_CONTENT_TYPE)
                return body
            except Exception:
                log.warning("jh_otel: OpenMetrics exposition failed; serving the text format", exc_info=True)
        return self.original(registry)
