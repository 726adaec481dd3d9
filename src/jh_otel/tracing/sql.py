"""SQL spans: the contrib ``EngineTracer``, attached to the hub's own engine and corrected.

``SQLAlchemyInstrumentor`` declares ``sqlalchemy < 2.1`` (a fresh JupyterHub install pulls 2.1, so the auto path
skips it) and patches ``create_engine``, which ``jupyterhub.orm`` imported by name before any config line runs. So
jh_otel attaches the contrib engine tracer directly to the hub's engine (``app.db``'s bind) with these corrections:

- span names are ``OPERATION table`` (``SELECT users``), not ``SELECT /srv/jupyterhub/jupyterhub.sqlite``;
  ``db.operation`` is the operation alone and ``db.sql.table`` the table;
- ``db.statement`` has every literal replaced by ``?`` (bound parameters are never recorded);
- an error records its type and the driver's message with literals removed (SQLAlchemy's own message would add the
  bound parameters); the contrib handler would put ``str(exception)`` in the status;
- each span starts with all its attributes, the URL's worked out once per engine (the contrib tracer sets them one
  by one and reads the database name from the connection for every statement);
- no pool listeners: the contrib tracer's ``connect``/``close``/``checkin``/``checkout`` listeners feed its
  ``db.client.connections.usage`` counter, which jh_otel does not export (it hands the tracer a no-op counter):
  about 6 us a checkout and checkin for nothing (micro cost ``test_sql_checkout`` in ``benchmarks/README.md``);
- with ``OTEL_PYTHON_JUPYTERHUB_SQL_SPAN_MIN_DURATION`` above 0, a statement gets its span only when it took at
  least that long, or failed (:class:`PendingStatement`): the span is then made through the SDK's own
  ``Tracer.start_span`` with the statement's start time, the same span as without the setting. SQL spans are most of
  a hub's spans (about 11 of 13 a request in the benchmarks' mix) and most of what tracing costs it there.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from time import time_ns
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.instrumentation.sqlalchemy import engine as contrib
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import INVALID_SPAN, SpanKind, Status, StatusCode

from ..compat import Expect, unmet
from ..scrub import scrub_sql

log = logging.getLogger("jh_otel")
_ENGINE = "opentelemetry.instrumentation.sqlalchemy.engine"
EXPECTS = (
    Expect(_ENGINE, "EngineTracer.__init__", ("self", "tracer", "engine", "connections_usage")),
    Expect(
        _ENGINE,
        "EngineTracer._before_cur_exec",
        ("self", "conn", "cursor", "statement", "params", "context", "_executemany"),
    ),
    Expect(_ENGINE, "EngineTracer._register_event_listener", ("target", "identifier", "func")),
    Expect(_ENGINE, "_after_cur_exec", ("conn", "cursor", "statement", "params", "context", "executemany")),
    Expect(_ENGINE, "EngineTracer.remove_all_event_listeners"),
    Expect(_ENGINE, "EngineTracer._operation_name", ("self", "db_name", "statement")),
    Expect(_ENGINE, "_handle_error", ("context",)),
    Expect(_ENGINE, "_get_attributes_from_url", ("url", "sem_conv_opt_in_mode_db", "sem_conv_opt_in_mode_http")),
    Expect(
        _ENGINE,
        "_get_attributes_from_cursor_or_conn",
        ("vendor", "conn", "cursor", "attrs", "sem_conv_opt_in_mode_db", "sem_conv_opt_in_mode_http"),
    ),
)
"""The contrib engine tracer's internals that :class:`HubEngineTracer` builds on (contrib 0.62b0 and later)."""
DISTRIBUTIONS = ("opentelemetry-instrumentation-sqlalchemy", "sqlalchemy")

_COMMENT = re.compile(r"^(?:\s*/\*.*?\*/|\s*--[^\n]*\n)+", re.S)
_NAME = r"""["`\[]?([A-Za-z_][\w$]*)["`\]]?"""
_TABLE = re.compile(rf"\b(?:FROM|INTO|UPDATE|JOIN|TABLE)\s+{_NAME}(?:\.{_NAME})?", re.I)


@lru_cache(maxsize=1024)
def summarize(statement: str) -> tuple[str, str, str]:
    """``(operation, table, statement without literals)``; the table is ``""`` when there is none."""
    body = _COMMENT.sub("", statement)
    words = body.split(None, 1)
    operation = words[0].upper() if words else ""
    match = _TABLE.search(body)
    table = (match.group(2) or match.group(1)) if match else ""  # schema.table -> table
    return operation, table, scrub_sql(statement)


def span_name(statement: Any, vendor: str) -> str:
    if not isinstance(statement, str):
        return vendor
    operation, table, _ = summarize(statement)
    return _named(operation, table, vendor)


def _named(operation: str, table: str, vendor: str) -> str:
    return f"{operation} {table}" if table else (operation or vendor)


def _handle_error(context: Any) -> None:
    span = getattr(context.execution_context, "_otel_span", None)
    if span is None:
        return
    if span.is_recording():
        error = context.original_exception
        message = scrub_sql(str(error))
        error_type = type(error).__qualname__
        span.set_attribute("error.type", error_type)
        span.add_event("exception", {"exception.type": error_type, "exception.message": message})
        span.set_status(Status(StatusCode.ERROR, f"{error_type}: {message}"))
    span.end()


POOL_EVENTS = frozenset({"connect", "close", "checkin", "checkout"})
"""The pool events the contrib tracer listens to for its connection-usage counter; not registered here."""


class HubEngineTracer(contrib.EngineTracer):
    _remove_event_listener_params: list[Any] = []  # ours alone: removing them leaves other engine tracers be

    def __init__(self, tracer: Any, engine: Any, min_duration: float = 0.0) -> None:
        self.min_duration_ns = max(1, int(min_duration * 1e9)) if min_duration > 0 else 0
        usage = NoOpMeterProvider().get_meter(__name__).create_up_down_counter("db.client.connections.usage")
        super().__init__(tracer, engine, usage)
        try:
            # what the URL says about the database, once (the contrib tracer works it out for every statement)
            attributes, found = contrib._get_attributes_from_url(
                engine.url, self._sem_conv_opt_in_mode_db, self._sem_conv_opt_in_mode_http
            )
            self._from_url = found or self.vendor == "sqlite"  # a file: its name is the URL's database
            self._static = {**attributes, "db.system": self.vendor}
        except Exception:
            # listeners without this state would fail every statement: none or all
            self.remove_all_event_listeners()
            raise

    def _before_cur_exec(self, conn: Any, cursor: Any, statement: Any, params: Any, context: Any, many: Any) -> Any:
        """One CLIENT span per statement, its attributes given at start: about a third of the contrib function's
        cost (which also reads the database name from the connection and sets each attribute separately)."""
        if not isinstance(statement, str) or not is_instrumentation_enabled():
            return super()._before_cur_exec(conn, cursor, statement, params, context, many)
        if self.min_duration_ns:
            context._otel_span = PendingStatement(self, conn, cursor, statement)
        else:
            context._otel_span = self.start(conn, cursor, statement)
        return statement, params

    def start(self, conn: Any, cursor: Any, statement: str, start_time: int | None = None, parent: Any = None) -> Any:
        """The statement's span, started (at ``start_time``, or now; in ``parent``, or the current context)."""
        operation, table, clean = summarize(statement)
        attributes = dict(self._static)
        if not self._from_url:  # e.g. PostgreSQL over a socket: the contrib tracer asks the connection
            attributes = contrib._get_attributes_from_cursor_or_conn(
                self.vendor, conn, cursor, attributes, self._sem_conv_opt_in_mode_db, self._sem_conv_opt_in_mode_http
            )
        attributes["db.statement"] = clean
        attributes["db.operation"] = operation
        if table:
            attributes["db.sql.table"] = table
        return self.tracer.start_span(
            _named(operation, table, self.vendor),  # span_name() from the summary above, not a second lookup
            context=parent,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=start_time,
        )

    @classmethod
    def _register_event_listener(cls, target: Any, identifier: str, func: Any, *args: Any, **kw: Any) -> None:
        if identifier in POOL_EVENTS:
            return  # a no-op counter's listeners: a pool checkout pays for none
        if func is contrib._handle_error:
            func = _handle_error
        super()._register_event_listener(target, identifier, func, *args, **kw)

    def _operation_name(self, db_name: Any, statement: Any) -> str:
        # the contrib path, still taken for statements that are not strings: never the sqlite file's path
        return span_name(statement, self.vendor)


class PendingStatement:
    """A running statement's span before it is made: at its end if the statement took at least the tracer's
    ``min_duration_ns``, or as soon as more than its end is asked of it (an error: a failing statement always has its
    span), in both cases with the statement's start time and in the context current when it started. Holds the
    statement's connection, cursor and that context (which its execution context holds anyway) only until then. A
    fast statement's end leaves it ended with no span: an error reported later (while fetching its rows) makes none,
    as an ended span ignores one."""

    __slots__ = ("_tracer", "_conn", "_cursor", "_statement", "_parent", "_start", "_span")

    def __init__(self, tracer: HubEngineTracer, conn: Any, cursor: Any, statement: str) -> None:
        self._tracer = tracer
        self._conn = conn
        self._cursor = cursor
        self._statement = statement
        self._parent: Any = otel_context.get_current()
        self._span: Any = None
        self._start = time_ns()

    def _made(self) -> Any:
        if self._span is None:
            try:
                self._span = self._tracer.start(self._conn, self._cursor, self._statement, self._start, self._parent)
            except Exception:  # the hub's statement goes on: at worst, without its span
                log.debug("jh_otel: could not make a SQL statement's span", exc_info=True)
                self._span = INVALID_SPAN
            self._conn = self._cursor = self._parent = None
        return self._span

    def end(self, end_time: int | None = None) -> None:
        if self._span is None:
            end_time = time_ns() if end_time is None else end_time
            if end_time - self._start < self._tracer.min_duration_ns:
                self._span = INVALID_SPAN  # fast: no span, now or later
                self._conn = self._cursor = self._parent = None
                return
        self._made().end(end_time)

    def is_recording(self) -> bool:
        return bool(self._made().is_recording())

    def set_attribute(self, key: str, value: Any) -> None:
        self._made().set_attribute(key, value)

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        self._made().add_event(name, attributes, timestamp)

    def set_status(self, status: Any, description: str | None = None) -> None:
        self._made().set_status(status, description)


def trace_engine(engine: Any, tracer: Any, min_duration: float = 0.0) -> Any:
    """Trace ``engine`` (only statements of at least ``min_duration`` seconds, and failing ones, when it is above 0);
    returns the undo callable (None when the contrib tracer is not the one jh_otel builds on: then there are no SQL
    spans, with one warning). An engine the contrib instrumentor already traces is taken over."""
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    if unmet("SQL spans", EXPECTS, DISTRIBUTIONS):
        return None

    contrib_instrumentor = SQLAlchemyInstrumentor()
    if contrib_instrumentor.is_instrumented_by_opentelemetry:
        contrib_instrumentor.uninstrument()
    HubEngineTracer(tracer, engine, min_duration)
    return HubEngineTracer.remove_all_event_listeners
