"""Client spans of tornado's ``AsyncHTTPClient`` (JupyterHub 5's internal client) that honour suppression.

The contrib tornado instrumentation makes a client span for every ``AsyncHTTPClient.fetch``, even inside
``suppress_instrumentation``/``suppress_http_instrumentation``, which every other client instrumentation (aiohttp's,
JupyterHub 6's) respects. jh_otel's own requests on JupyterHub 5 (the proxy health check, the readiness wait's
polls) would then be traced. :func:`install` replaces the contrib ``fetch_async`` (which the instrumentor binds when
it instruments, so this comes first) by one that calls ``fetch`` untraced while suppressed and the contrib function
otherwise. It relies only on wrapt's last four arguments, ``(wrapped, instance, args, kwargs)``; a contrib release
whose function ends otherwise is left as it is, with one warning.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from opentelemetry.instrumentation.utils import is_http_instrumentation_enabled

from ..compat import positional_parameters, versions

_TAIL = ("func", "_", "args", "kwargs")


def install(module: Any) -> list[Callable[[], None]]:
    """Replace ``module.fetch_async`` (the contrib tornado package); returns the undo callables."""
    import logging

    original = getattr(module, "fetch_async", None)
    if original is None or getattr(original, "_jh_otel", False):
        return []
    parameters = positional_parameters(original) or []
    if tuple(p.name for p in parameters[-len(_TAIL) :]) != _TAIL:
        logging.getLogger("jh_otel").warning(
            "jh_otel: leaving out suppression of tornado client spans: %s.fetch_async does not end with (%s) "
            "(installed: %s); the rest of the telemetry is unaffected",
            module.__name__,
            ", ".join(_TAIL),
            versions(["opentelemetry-instrumentation-tornado"]),
        )
        return []

    def fetch_async(*arguments: Any) -> Any:
        func, _, args, kwargs = arguments[-4:]
        if not is_http_instrumentation_enabled():
            return func(*args, **kwargs)
        return original(*arguments)

    fetch_async._jh_otel = True  # type: ignore[attr-defined]
    module.fetch_async = fetch_async
    return [partial(setattr, module, "fetch_async", original)]
