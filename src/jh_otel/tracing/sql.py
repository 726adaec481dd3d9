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
  a hub's spans (about 11 of 13 a request in the benchmarks' mix) and most of what tracing costs it there;
- in an event loop (the hub's), the spans of the statements one loop step ran are made together when that step is
  over (:class:`SpanBatch`), each with its statement's own start and end time and in the context current when the
  statement started, through the SDK's own ``Tracer.start_span`` as any other span: the same spans, made in one
  go rather than one at a time between the hub's own code, in a context of their own (not the request's). Only
  while every span processor is quiet (the SDK's batch and simple ones: they see a span at its end), since a
  statement's span may now start after its request's span ended; with any other processor a statement's span
  starts with the statement, as before. A failing statement's span is made at once; outside a running loop each
  span is made at the statement's end; removing the tracing makes this thread's spans still waiting.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import threading
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
from .lean import QuietProcessors

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
            self.batch = SpanBatch()
            self._quiet = QuietProcessors()
        except Exception:
            # listeners without this state would fail every statement: none or all
            self.remove_all_event_listeners()
            raise

    def _before_cur_exec(self, conn: Any, cursor: Any, statement: Any, params: Any, context: Any, many: Any) -> Any:
        """One CLIENT span per statement, its attributes given at start: about a third of the contrib function's
        cost (which also reads the database name from the connection and sets each attribute separately)."""
        if not isinstance(statement, str) or not is_instrumentation_enabled():
            return super()._before_cur_exec(conn, cursor, statement, params, context, many)
        try:
            base = self.base_attributes(conn, cursor)
        except Exception:  # the hub's statement goes on: at worst, with what the URL says
            log.debug("jh_otel: could not read a SQL connection's attributes", exc_info=True)
            base = self._static
        if self._quiet(getattr(self.tracer, "span_processor", None)):
            context._otel_span = PendingStatement(self, base, statement, self.batch)
        elif self.min_duration_ns:
            context._otel_span = PendingStatement(self, base, statement, None)
        else:  # a span processor that watches spans start sees this one start with its statement, as it always did
            context._otel_span = self.start(base, statement)
        return statement, params

    def base_attributes(self, conn: Any, cursor: Any) -> dict[str, Any]:
        """What the engine's URL (or, e.g. for PostgreSQL over a socket, the connection) says about the database."""
        if self._from_url:
            return self._static
        return contrib._get_attributes_from_cursor_or_conn(
            self.vendor,
            conn,
            cursor,
            dict(self._static),
            self._sem_conv_opt_in_mode_db,
            self._sem_conv_opt_in_mode_http,
        )

    def start(self, base: dict[str, Any], statement: str, start_time: int | None = None, parent: Any = None) -> Any:
        """The statement's span, started (at ``start_time``, or now; in ``parent``, or the current context)."""
        operation, table, clean = summarize(statement)
        attributes = dict(base)
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


class SpanBatch:
    """Statements that ended in one step of an event loop: their spans are made together when the step is over."""

    def __init__(self) -> None:
        self._local = threading.local()  # this thread's (loop, statements) of the step under way

    def add(self, statement: PendingStatement) -> bool:
        """Keep ``statement`` for the end of this thread's running loop step; False without a running loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        batch: tuple[Any, list[PendingStatement]] | None = getattr(self._local, "batch", None)
        if batch is None or batch[0] is not loop:
            if batch is not None:  # a loop that stopped before the end of its step: not to be waited for
                self._finish(batch[1])
            batch = self._local.batch = (loop, [])
            # in a context of its own: not the first statement's request context, which a processor might read
            loop.call_soon(self._step_over, batch, context=contextvars.Context())
        batch[1].append(statement)
        return True

    def _step_over(self, batch: tuple[Any, list[PendingStatement]]) -> None:
        if getattr(self._local, "batch", None) is batch:
            self._local.batch = None
        self._finish(batch[1])

    def flush(self) -> None:
        """Make the spans of this thread's statements still waiting for their step to end."""
        batch = getattr(self._local, "batch", None)
        if batch is not None:
            self._step_over(batch)

    @staticmethod
    def _finish(statements: list[PendingStatement]) -> None:
        waiting = statements.copy()
        statements.clear()  # each statement's span is made once, whoever finishes first
        for statement in waiting:
            statement.finish()


class PendingStatement:
    """A running statement's span before it is made: at the end of the loop step the statement ended in (or at its
    end, outside a running loop) if it took at least the tracer's ``min_duration_ns``, or as soon as more than its end
    is asked of it (an error: a failing statement always has its span), in every case with the statement's own start
    time and in the context current when it started. Holds that context and what the connection says about the
    database only until then, never the connection itself. Once the statement ended, an error reported later (while
    fetching its rows) changes nothing, as an ended span ignores one: a fast statement has no span, a statement
    waiting for its step to end gets the span it ended with."""

    __slots__ = ("_tracer", "_batch", "_base", "_statement", "_parent", "_start", "_end", "_span")

    def __init__(self, tracer: HubEngineTracer, base: dict[str, Any], statement: str, batch: SpanBatch | None) -> None:
        self._tracer = tracer
        self._batch = batch
        self._base: dict[str, Any] | None = base
        self._statement = statement
        self._parent: Any = otel_context.get_current()
        self._span: Any = None
        self._end: int | None = None
        self._start = time_ns()

    def _made(self) -> Any:
        if self._span is None:
            try:
                self._span = self._tracer.start(self._base or {}, self._statement, self._start, self._parent)
            except Exception:  # the hub's statement goes on: at worst, without its span
                log.debug("jh_otel: could not make a SQL statement's span", exc_info=True)
                self._span = INVALID_SPAN
            self._base = self._parent = None
        return self._span

    def end(self, end_time: int | None = None) -> None:
        if self._end is not None:
            return  # ended already: a second end (the error handler's, after the statement's) does nothing
        end_time = self._end = time_ns() if end_time is None else end_time
        if self._span is None:
            minimum = self._tracer.min_duration_ns
            if minimum and end_time - self._start < minimum:
                self._span = INVALID_SPAN  # fast: no span, now or later
                self._base = self._parent = None
                return
            if self._batch is not None and self._batch.add(self):
                return
        self._made().end(end_time)

    def finish(self) -> None:
        try:
            self._made().end(self._end)
        except Exception:
            log.debug("jh_otel: could not end a SQL statement's span", exc_info=True)

    def _live(self) -> Any:
        """The span to annotate: made now if need be, but none once the statement ended (an ended span ignores it)."""
        return INVALID_SPAN if self._span is None and self._end is not None else self._made()

    def is_recording(self) -> bool:
        return bool(self._live().is_recording())

    def set_attribute(self, key: str, value: Any) -> None:
        self._live().set_attribute(key, value)

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        self._live().add_event(name, attributes, timestamp)

    def set_status(self, status: Any, description: str | None = None) -> None:
        self._live().set_status(status, description)


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
    hub_tracer = HubEngineTracer(tracer, engine, min_duration)

    def undo() -> None:
        hub_tracer.batch.flush()  # statements of the step that stops the hub: spans made before the exporters go
        HubEngineTracer.remove_all_event_listeners()

    return undo
