"""Telemetry never raises into the hub: every recording runs inside :func:`guarded`."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("jh_otel")
_reported: set[str] = set()


@contextmanager
def guarded(what: str) -> Iterator[None]:
    """Swallow and log any exception; the first one per ``what`` as a warning, repeats at debug level."""
    try:
        yield
    except Exception:
        level = logging.DEBUG if what in _reported else logging.WARNING
        _reported.add(what)
        log.log(level, "jh_otel: %s failed; the hub is unaffected", what, exc_info=True)
