"""Log correlation: the hub's log records carry the current ``trace_id`` and ``span_id``.

A filter on the hub's log handlers (JupyterHub routes tornado's loggers through them) sets ``record.trace_id`` and
``record.span_id`` (32 and 16 hex digits, empty outside a span) and ``record.trace_context``
(`` trace_id=... span_id=...`` or empty), for a ``JupyterHub.log_format`` of your own. With
``OTEL_PYTHON_JUPYTERHUB_LOG_CORRELATION=on`` jh_otel appends ``%(trace_context)s`` to the hub's format itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from opentelemetry import trace

SUFFIX = "%(trace_context)s"


class TraceContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            trace_id, span_id = format(context.trace_id, "032x"), format(context.span_id, "016x")
            suffix = f" trace_id={trace_id} span_id={span_id}"
        else:
            trace_id = span_id = suffix = ""
        record.__dict__.update(trace_id=trace_id, span_id=span_id, trace_context=suffix)
        return True


def _append(formatter: Any) -> Callable[[], None] | None:
    """Append the suffix to a ``logging.Formatter`` or tornado ``LogFormatter``; returns the undo."""
    style = getattr(formatter, "_style", None)
    fmt = getattr(formatter, "_fmt", None)
    if not isinstance(fmt, str) or SUFFIX in fmt:
        return None
    if style is not None and type(style) is not logging.PercentStyle:  # {- and $-styles subclass it
        return None  # a {- or $-style format of the operator's own: the record attributes are there to use
    formatter._fmt = fmt + SUFFIX
    if style is not None and isinstance(getattr(style, "_fmt", None), str):
        style._fmt = style._fmt + SUFFIX

    def undo() -> None:
        formatter._fmt = fmt
        if style is not None:
            style._fmt = style._fmt.replace(SUFFIX, "")

    return undo


def correlate(logger: logging.Logger, in_format: bool) -> list[Callable[[], None]]:
    """Install the filter on ``logger``'s handlers (and the suffix in their formats); returns undo callables."""
    undo: list[Callable[[], None]] = []
    for handler in list(logger.handlers):
        flt = TraceContextFilter()
        handler.addFilter(flt)
        undo.append(partial(handler.removeFilter, flt))
        if in_format and handler.formatter is not None:
            restore = _append(handler.formatter)
            if restore is not None:
                undo.append(restore)
    return undo
