"""Log correlation: the hub's log records carry the current ``trace_id`` and ``span_id``.

A filter on the hub's log handlers (JupyterHub routes tornado's loggers through them) sets ``record.trace_id`` and
``record.span_id`` (32 and 16 hex digits, empty outside a span) and ``record.trace_context``
(`` trace_id=... span_id=...`` or empty), for a ``JupyterHub.log_format`` of your own. With
``OTEL_PYTHON_JUPYTERHUB_LOG_CORRELATION=on`` jh_otel appends ``%(trace_context)s`` to the hub's format itself.

A handler that cannot show the fields gets no filter (:func:`reads_fields`): a stream or file handler of the standard
library whose formatter is logging's, tornado's or JupyterHub's with a format that names none of them, as the hub's
own handler is by default. There the filter would cost about 5 us a log line in a hub (JupyterHub logs every
request it answers) for attributes nothing reads. Any other handler or formatter (a JSON formatter, a handler of
your own) gets it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from opentelemetry import trace

SUFFIX = "%(trace_context)s"
FIELDS = ("trace_id", "span_id", "trace_context")
_HANDLERS = (logging.StreamHandler, logging.FileHandler)
_STYLES = (logging.PercentStyle, logging.StrFormatStyle, logging.StringTemplateStyle)


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


def _known_formatter(formatter: logging.Formatter) -> bool:
    """Whether ``formatter`` reads a record only through its format string: logging's own methods, or tornado's
    ``LogFormatter.format`` (JupyterHub's ``CoroutineLogFormatter`` changes only how exceptions are shown)."""
    from tornado.log import LogFormatter

    cls = type(formatter)
    return (
        cls.format in (logging.Formatter.format, LogFormatter.format)
        and cls.formatMessage is logging.Formatter.formatMessage
        and cls.formatTime is logging.Formatter.formatTime
        and cls.formatStack is logging.Formatter.formatStack
        and type(getattr(formatter, "_style", None)) in _STYLES
    )


def reads_fields(handler: logging.Handler) -> bool:
    """Whether the correlation fields could show in what ``handler`` does with a record: False only for a standard
    stream or file handler with no formatter (``%(message)s``) or a known one whose format names none of them."""
    if type(handler) not in _HANDLERS:
        return True
    formatter = handler.formatter
    if formatter is None:
        return False
    if not _known_formatter(formatter):
        return True
    texts = (getattr(formatter, "_fmt", None), getattr(formatter._style, "_fmt", None))
    return any(not isinstance(text, str) or any(field in text for field in FIELDS) for text in texts)


def correlate(logger: logging.Logger, in_format: bool) -> list[Callable[[], None]]:
    """Install the filter on ``logger``'s handlers that can show its fields (with ``in_format``, after appending
    the suffix to their formats); returns undo callables."""
    undo: list[Callable[[], None]] = []
    for handler in list(logger.handlers):
        if in_format and handler.formatter is not None:
            restore = _append(handler.formatter)
            if restore is not None:
                undo.append(restore)
        if reads_fields(handler):
            flt = TraceContextFilter()
            handler.addFilter(flt)
            undo.append(partial(handler.removeFilter, flt))
    return undo
