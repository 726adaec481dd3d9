"""Bounded flush at hub shutdown.

The SDK's own exit handlers wait for the exporters: with the collector unreachable that took 7-30 s, long enough
for Kubernetes to kill a hub mid-cleanup. jh_otel shuts the global providers down itself, in a daemon thread that
it waits for at most ``timeout`` seconds, and takes their exit handlers off (a second shutdown would only warn).
Whatever is not exported by then is dropped; the hub's own shutdown is never held up longer.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)


def global_providers() -> list[Any]:
    from opentelemetry import metrics, trace

    providers = [metrics.get_meter_provider(), trace.get_tracer_provider()]
    try:
        from opentelemetry import _logs

        providers.append(_logs.get_logger_provider())
    except ImportError:  # pragma: no cover - old API
        pass
    # the API's proxy and no-op providers have no shutdown
    return [p for p in providers if callable(getattr(p, "shutdown", None))]


def _shutdown(provider: Any, timeout: float) -> None:
    try:
        try:
            provider.shutdown(timeout_millis=timeout * 1000)
        except TypeError:  # TracerProvider.shutdown takes no timeout
            provider.shutdown()
    except Exception:
        log.debug("jh_otel: error shutting down %r", provider, exc_info=True)


def shutdown_providers(timeout: float, providers: Iterable[Any] | None = None) -> float:
    """Shut ``providers`` (default: the global ones) down within ``timeout`` seconds; returns seconds taken."""
    start = time.monotonic()
    targets = list(global_providers() if providers is None else providers)
    for provider in targets:
        atexit.unregister(provider.shutdown)
    threads = [
        threading.Thread(target=_shutdown, args=(p, timeout), name="jh_otel-shutdown", daemon=True) for p in targets
    ]
    for thread in threads:
        thread.start()
    deadline = start + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    took = time.monotonic() - start
    if any(thread.is_alive() for thread in threads):
        log.warning("jh_otel: telemetry not flushed within %.1fs of shutdown; dropping the rest", timeout)
    else:
        log.info("jh_otel: telemetry providers shut down in %.2fs", took)
    return took
