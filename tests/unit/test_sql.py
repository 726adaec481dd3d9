"""SQL spans: statements summarized (operation, table, no literal) and a real SQLite engine traced end to end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from jh_otel.tracing.sql import span_name, summarize, trace_engine

SUMMARIES = [
    (
        "SELECT users.id AS users_id FROM users WHERE users.name = ?",
        ("SELECT", "users", "SELECT users.id AS users_id FROM users WHERE users.name = ?"),
    ),
    (
        "INSERT INTO api_tokens (hashed, prefix, user_id) VALUES (?, ?, ?)",
        ("INSERT", "api_tokens", "INSERT INTO api_tokens (hashed, prefix, user_id) VALUES (?, ?, ?)"),
    ),
    (
        "UPDATE spawners SET state=? WHERE spawners.id = ?",
        ("UPDATE", "spawners", "UPDATE spawners SET state=? WHERE spawners.id = ?"),
    ),
    (
        "DELETE FROM servers WHERE servers.id = ?",
        ("DELETE", "servers", "DELETE FROM servers WHERE servers.id = ?"),
    ),
    ("SELECT 1", ("SELECT", "", "SELECT ?")),
    (
        "/* jupyterhub */ SELECT users.id FROM users WHERE users.id = ?",
        ("SELECT", "users", "/* jupyterhub */ SELECT users.id FROM users WHERE users.id = ?"),
    ),
    (
        '/* multi\nline */\n  select * from "users" where "users".name = \'alice\'',
        ("SELECT", "users", '/* multi\nline */\n  select * from "users" where "users".name = ?'),
    ),
    ("SELECT * FROM `api_tokens`", ("SELECT", "api_tokens", "SELECT * FROM `api_tokens`")),
    ("SELECT * FROM [oauth_clients]", ("SELECT", "oauth_clients", "SELECT * FROM [oauth_clients]")),
    (
        "SELECT * FROM users WHERE name = 'alice' AND id = 42",
        ("SELECT", "users", "SELECT * FROM users WHERE name = ? AND id = ?"),
    ),
    (
        "SELECT * FROM users WHERE name = 'it''s' AND score > -1.5e3",
        ("SELECT", "users", "SELECT * FROM users WHERE name = ? AND score > ?"),
    ),
    (
        "SELECT count(*) AS count_1 FROM (SELECT users.id AS users_id FROM users) AS anon_1",
        ("SELECT", "users", "SELECT count(*) AS count_1 FROM (SELECT users.id AS users_id FROM users) AS anon_1"),
    ),
    (
        "SELECT users.id FROM users JOIN spawners ON spawners.user_id = users.id LIMIT 10 OFFSET 20",
        ("SELECT", "users", "SELECT users.id FROM users JOIN spawners ON spawners.user_id = users.id LIMIT ? OFFSET ?"),
    ),
    ("CREATE TABLE users (id INTEGER, name TEXT)", ("CREATE", "users", "CREATE TABLE users (id INTEGER, name TEXT)")),
    ("", ("", "", "")),
]


@pytest.mark.parametrize(("statement", "expected"), SUMMARIES)
def test_summarize(statement: str, expected: tuple[str, str, str]) -> None:
    """``summarize`` gives a statement's operation, its first table (empty when none) and the statement with every
    literal replaced by ``?``, comments and quoted identifiers kept."""
    assert summarize(statement) == expected


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("SELECT users.id AS users_id FROM users WHERE users.name = ?", "SELECT users"),
        ("INSERT INTO api_tokens (hashed) VALUES (?)", "INSERT api_tokens"),
        ("UPDATE spawners SET state=? WHERE spawners.id = ?", "UPDATE spawners"),
        ("DELETE FROM servers WHERE servers.id = ?", "DELETE servers"),
        ("/* jupyterhub */ select 1", "SELECT"),
        ("SELECT 1", "SELECT"),
        ("", "sqlite"),
        ("   ", "sqlite"),
        ("/* only a comment */", "sqlite"),
        (None, "sqlite"),
        (b"SELECT 1", "sqlite"),
        (42, "sqlite"),
    ],
)
def test_span_name(statement: Any, expected: str) -> None:
    """``OPERATION table``, the operation alone without a table, the vendor without a string statement."""
    assert span_name(statement, "sqlite") == expected


def test_span_name_is_the_vendor_for_non_string_statements() -> None:
    """``span_name`` is the vendor given (``postgresql``, ``mysql``) for a ``None`` or non-string statement."""
    assert span_name(None, "postgresql") == "postgresql"
    assert span_name(object(), "mysql") == "mysql"


# --- a real engine ----------------------------------------------------------------------------------------------------


@contextmanager
def traced_engine(
    min_duration: float = 0.0, pause: bool = False
) -> Iterator[tuple[sqlalchemy.Engine, InMemorySpanExporter, TracerProvider, Any]]:
    """An in-memory SQLite engine traced into an in-memory span exporter (statements of at least ``min_duration``
    seconds; with ``pause``, its connections have a ``pause(seconds)`` function); the undo runs at the end anyway."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    engine = sqlalchemy.create_engine("sqlite://")
    if pause:
        sqlalchemy.event.listen(
            engine, "connect", lambda dbapi, record: dbapi.create_function("pause", 1, lambda s: time.sleep(s) or s)
        )
        sqlalchemy.event.listen(engine, "connect", lambda dbapi, record: dbapi.create_function("boom", 1, _boom))
    undo = trace_engine(engine, provider.get_tracer("test"), min_duration)
    try:
        yield engine, exporter, provider, undo
    finally:
        undo()
        engine.dispose()
        provider.shutdown()


def _boom(value: int) -> int:
    if value == 2:
        raise ValueError("boom")
    return value


@pytest.fixture
def traced() -> Iterator[tuple[sqlalchemy.Engine, InMemorySpanExporter, Any]]:
    """A traced in-memory SQLite engine, its exporter and its undo."""
    with traced_engine() as (engine, exporter, _, undo):
        yield engine, exporter, undo


def test_engine_spans(traced: tuple[sqlalchemy.Engine, InMemorySpanExporter, Any]) -> None:
    """One client span per statement, named ``OPERATION table``, with literal-free statements."""
    engine, exporter, _ = traced
    with engine.connect() as conn:
        conn.execute(text("CREATE TABLE users (id INTEGER, name TEXT)"))
        conn.execute(text("INSERT INTO users (id, name) VALUES (:id, :name)"), {"id": 1, "name": "alice"})
        assert conn.execute(text("SELECT id FROM users WHERE name = 'alice'")).scalar_one() == 1
        conn.execute(text("UPDATE users SET name = :name WHERE id = 1"), {"name": "bob"})
        conn.execute(text("DELETE FROM users WHERE name = 'bob'"))

    spans = exporter.get_finished_spans()
    assert [span.name for span in spans] == [
        "CREATE users",
        "INSERT users",
        "SELECT users",
        "UPDATE users",
        "DELETE users",
    ]
    assert [dict(span.attributes) for span in spans] == [
        {
            "db.system": "sqlite",
            "db.statement": "CREATE TABLE users (id INTEGER, name TEXT)",
            "db.operation": "CREATE",
            "db.sql.table": "users",
        },
        {
            "db.system": "sqlite",
            "db.statement": "INSERT INTO users (id, name) VALUES (?, ?)",
            "db.operation": "INSERT",
            "db.sql.table": "users",
        },
        {
            "db.system": "sqlite",
            "db.statement": "SELECT id FROM users WHERE name = ?",
            "db.operation": "SELECT",
            "db.sql.table": "users",
        },
        {
            "db.system": "sqlite",
            "db.statement": "UPDATE users SET name = ? WHERE id = ?",
            "db.operation": "UPDATE",
            "db.sql.table": "users",
        },
        {
            "db.system": "sqlite",
            "db.statement": "DELETE FROM users WHERE name = ?",
            "db.operation": "DELETE",
            "db.sql.table": "users",
        },
    ]
    for span in spans:
        assert span.kind is SpanKind.CLIENT
        assert span.status.status_code is StatusCode.UNSET
        assert span.events == ()
        for value in span.attributes.values():
            assert "alice" not in str(value) and "bob" not in str(value)


def test_engine_span_without_a_table(traced: tuple[sqlalchemy.Engine, InMemorySpanExporter, Any]) -> None:
    """``SELECT 1`` on a traced engine gives one span named ``SELECT`` with the system, ``SELECT ?`` and the operation
    as its only attributes."""
    engine, exporter, _ = traced
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
    (span,) = exporter.get_finished_spans()
    assert span.name == "SELECT"
    assert dict(span.attributes) == {"db.system": "sqlite", "db.statement": "SELECT ?", "db.operation": "SELECT"}


@pytest.mark.parametrize(
    ("statement", "name", "message"),
    [
        ("SELECT * FROM missing WHERE name = 'alice'", "SELECT missing", "no such table: missing"),
        # SQLite echoes the offending literal; the span must not
        ("SELECT * FROM users WHERE name = 'alice' 'bob'", "SELECT users", 'near "?": syntax error'),
    ],
)
def test_engine_error_span(
    traced: tuple[sqlalchemy.Engine, InMemorySpanExporter, Any], statement: str, name: str, message: str
) -> None:
    """A failing statement ends its span with status ERROR, ``error.type`` and a literal-free exception event."""
    engine, exporter, _ = traced
    with engine.connect() as conn:
        conn.execute(text("CREATE TABLE users (id INTEGER, name TEXT)"))
        with pytest.raises(OperationalError):
            conn.execute(text(statement))

    _, span = exporter.get_finished_spans()
    assert span.name == name
    assert span.attributes["db.operation"] == "SELECT"
    assert span.attributes["error.type"] == "OperationalError"
    assert "alice" not in span.attributes["db.statement"]
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == f"OperationalError: {message}"
    assert [(event.name, dict(event.attributes)) for event in span.events] == [
        ("exception", {"exception.type": "OperationalError", "exception.message": message})
    ]
    assert span.end_time is not None


def test_undo_removes_the_listeners(traced: tuple[sqlalchemy.Engine, InMemorySpanExporter, Any]) -> None:
    """After the engine's undo, neither a statement nor a failing one makes a span."""
    engine, exporter, undo = traced
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert len(exporter.get_finished_spans()) == 1

    undo()
    exporter.clear()
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        with pytest.raises(OperationalError):
            conn.execute(text("SELECT * FROM missing"))
    assert exporter.get_finished_spans() == ()


def test_an_engine_the_contrib_instrumentor_traces_is_taken_over() -> None:
    """SQLAlchemy 2.0 under the wrapper: the contrib instrumentor patched create_engine before the hub made its
    engine. jh_otel takes the engine over: one span per statement, named by jh_otel."""
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    contrib = SQLAlchemyInstrumentor()
    contrib.instrument(tracer_provider=provider, skip_dep_check=True)
    try:
        engine = sqlalchemy.create_engine("sqlite://")
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
        assert [s.name for s in exporter.get_finished_spans()] == ["connect", "SELECT"]  # the contrib's own spans
        exporter.clear()
        undo = trace_engine(engine, provider.get_tracer("test"))
        assert not contrib.is_instrumented_by_opentelemetry
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("CREATE TABLE users (id INTEGER)"))
            connection.execute(sqlalchemy.text("SELECT id FROM users"))
        assert [s.name for s in exporter.get_finished_spans()] == ["CREATE users", "SELECT users"]
        undo()
    finally:
        if contrib.is_instrumented_by_opentelemetry:
            contrib.uninstrument()
        provider.shutdown()


def test_no_pool_listeners() -> None:
    """Tracing an engine adds no pool listener (connect, close, checkin, checkout) and removes its statement ones."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    engine = sqlalchemy.create_engine("sqlite://")
    pool_events = ("connect", "close", "checkin", "checkout")
    before = {event: len(getattr(engine.pool.dispatch, event)) for event in pool_events}
    undo = trace_engine(engine, provider.get_tracer("test"))
    try:
        assert {event: len(getattr(engine.pool.dispatch, event)) for event in pool_events} == before
        assert len(engine.dispatch.before_cursor_execute) == 1
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
        assert [s.name for s in exporter.get_finished_spans()] == ["SELECT"]
    finally:
        undo()
        engine.dispose()
        provider.shutdown()
    assert len(engine.dispatch.before_cursor_execute) == 0


# --- only slow or failing statements (OTEL_PYTHON_JUPYTERHUB_SQL_SPAN_MIN_DURATION) ---------------------------------


@pytest.fixture
def traced_slow() -> Iterator[tuple[sqlalchemy.Engine, InMemorySpanExporter, Any]]:
    """A traced in-memory SQLite engine with a 20 ms minimum statement duration and ``pause(s)``, its exporter and its
    provider."""
    with traced_engine(0.02, pause=True) as (engine, exporter, provider, _):
        yield engine, exporter, provider


def test_with_a_minimum_duration_only_slow_statements_have_spans(
    traced_slow: tuple[sqlalchemy.Engine, InMemorySpanExporter, Any],
) -> None:
    """Under the minimum a statement makes no span; over it, the span is the one the default mode makes, a child of
    the current span, starting when the statement started (its duration covers the statement)."""
    engine, exporter, provider = traced_slow
    with provider.get_tracer("test").start_as_current_span("request") as parent:
        with engine.connect() as conn:
            conn.execute(text("CREATE TABLE users (id INTEGER, name TEXT)"))
            conn.execute(text("INSERT INTO users VALUES (1, 'alice')"))
            conn.execute(text("SELECT pause(0.05) FROM users WHERE name = 'alice'"))
    slow, request = exporter.get_finished_spans()
    assert request.name == "request"
    assert slow.name == "SELECT users"
    assert slow.kind is SpanKind.CLIENT
    assert slow.parent is not None and slow.parent.span_id == parent.get_span_context().span_id
    assert dict(slow.attributes) == {
        "db.system": "sqlite",
        "db.statement": "SELECT pause(?) FROM users WHERE name = ?",
        "db.operation": "SELECT",
        "db.sql.table": "users",
    }
    assert slow.end_time - slow.start_time >= 50_000_000


def test_with_a_minimum_duration_a_failing_statement_still_has_its_span(
    traced_slow: tuple[sqlalchemy.Engine, InMemorySpanExporter, Any],
) -> None:
    """A fast statement that fails gets its span anyway, with status ERROR, ``error.type`` and the exception event."""
    engine, exporter, _ = traced_slow
    with engine.connect() as conn:
        with pytest.raises(OperationalError):
            conn.execute(text("SELECT name FROM missing WHERE name = 'alice'"))
    (span,) = exporter.get_finished_spans()
    assert span.name == "SELECT missing"
    assert span.attributes["error.type"] == "OperationalError"
    assert "alice" not in span.attributes["db.statement"]
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]
    assert span.start_time <= span.end_time


def test_with_a_minimum_duration_an_error_after_a_fast_end_makes_no_span(
    traced_slow: tuple[sqlalchemy.Engine, InMemorySpanExporter, Any],
) -> None:
    """A fast statement whose rows fail while fetched (after its end) makes no span, as an ended span ignores the
    error."""
    engine, exporter, _ = traced_slow
    with engine.connect() as conn:
        conn.execute(text("CREATE TABLE users (id INTEGER)"))
        conn.execute(text("INSERT INTO users VALUES (1), (2)"))
        result = conn.execute(text("SELECT boom(id) FROM users"))
        with pytest.raises(sqlalchemy.exc.DBAPIError):
            result.fetchall()
    assert exporter.get_finished_spans() == ()


# --- in an event loop: a step's statements, their spans made when the step is over ------------------------------------


def test_in_an_event_loop_a_steps_statements_get_their_spans_when_the_step_ends() -> None:
    """Inside a running event loop, the spans of the statements one loop step ran are made when that step is over:
    none during the step, then each with its own statement's start and end, the child of the span current when it
    ran, in the order the statements ran."""
    with traced_engine(pause=True) as (engine, exporter, provider, _):

        async def step() -> tuple[Any, list[str], list[tuple[int, int]]]:
            times = []
            with provider.get_tracer("test").start_as_current_span("request") as parent:
                with engine.connect() as conn:
                    statements = (
                        "CREATE TABLE users (id INTEGER)",
                        "INSERT INTO users VALUES (1)",
                        "SELECT pause(0.02) FROM users",
                    )
                    for statement in statements:
                        before = time.time_ns()
                        conn.execute(text(statement))
                        times.append((before, time.time_ns()))
            during = [span.name for span in exporter.get_finished_spans()]
            await asyncio.sleep(0)
            return parent, during, times

        parent, during, times = asyncio.run(step())
    assert during == ["request"]
    request, *statements, select = exporter.get_finished_spans()
    assert [span.name for span in (*statements, select)] == ["CREATE users", "INSERT users", "SELECT users"]
    for span, (before, after) in zip((*statements, select), times, strict=True):
        assert span.parent is not None and span.parent.span_id == parent.get_span_context().span_id
        assert span.context.trace_id == parent.get_span_context().trace_id
        assert before <= span.start_time <= span.end_time <= after
    assert select.end_time - select.start_time >= 20_000_000
    assert select.attributes["db.statement"] == "SELECT pause(?) FROM users"


def test_in_an_event_loop_an_error_after_a_statements_end_leaves_its_span_as_it_ended() -> None:
    """A statement whose rows fail while fetched, after its end and in the same loop step, has the span it ended
    with (status UNSET, no event, ending when the statement did), as when its span was made at once: an ended span
    ignores a later error."""
    with traced_engine(pause=True) as (engine, exporter, _, _):

        async def step() -> tuple[int, int]:
            with engine.connect() as conn:
                conn.execute(text("CREATE TABLE users (id INTEGER)"))
                conn.execute(text("INSERT INTO users VALUES (1), (2)"))
                before = time.time_ns()
                result = conn.execute(text("SELECT boom(id) FROM users"))
                executed = time.time_ns()
                with pytest.raises(sqlalchemy.exc.DBAPIError):
                    result.fetchall()
            await asyncio.sleep(0)
            return before, executed

        before, executed = asyncio.run(step())
    *_, span = exporter.get_finished_spans()
    assert span.name == "SELECT users"
    assert span.status.status_code is StatusCode.UNSET
    assert span.events == ()
    assert before <= span.start_time <= span.end_time <= executed


def test_in_an_event_loop_a_failing_statement_has_its_error_span() -> None:
    """A statement that fails in a loop step gets its span at once, status ERROR with the exception event."""
    with traced_engine() as (engine, exporter, _, _):

        async def step() -> list[str]:
            with engine.connect() as conn:
                with pytest.raises(OperationalError):
                    conn.execute(text("SELECT name FROM missing WHERE name = 'alice'"))
            return [span.name for span in exporter.get_finished_spans()]

        assert asyncio.run(step()) == ["SELECT missing"]
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]


def test_the_undo_makes_the_spans_of_statements_still_waiting_for_their_step_to_end() -> None:
    """Tracing removed in the middle of a loop step (the hub's shutdown) first makes the spans of the statements
    that step ran, so that they reach the exporters before these shut down."""
    with traced_engine() as (engine, exporter, _, undo):

        async def step() -> list[str]:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            undo()
            return [span.name for span in exporter.get_finished_spans()]

        assert asyncio.run(step()) == ["SELECT"]
    assert len(exporter.get_finished_spans()) == 1


def test_statements_of_a_loop_stopped_before_its_step_ended_still_get_their_spans() -> None:
    """A loop stopped in the step a statement ran in never ends that step: the statement's span is made when the
    next statement of the thread, in another loop, finds it waiting, not lost."""
    with traced_engine() as (engine, exporter, _, _):
        loop = asyncio.new_event_loop()

        def stopping_step() -> None:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            loop.stop()

        loop.call_soon(stopping_step)
        loop.run_forever()
        loop.close()
        assert exporter.get_finished_spans() == ()  # waiting for a step end that never came

        async def next_step() -> None:
            with engine.connect() as conn:
                conn.execute(text("SELECT 2"))

        asyncio.run(next_step())
    assert [span.name for span in exporter.get_finished_spans()] == ["SELECT", "SELECT"]


class Starts(SpanProcessor):
    """A processor that watches spans start: the names, in order."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.started.append(span.name)


def test_with_a_processor_that_watches_spans_start_a_statements_span_starts_with_it() -> None:
    """When a span processor does something at a span's start, a statement's span starts with the statement, inside
    its loop step, as it always did: only spans that quiet processors (the SDK's batch and simple ones) see at their
    end are made at the step's end."""
    with traced_engine() as (engine, exporter, provider, _):
        starts = Starts()
        provider.add_span_processor(starts)

        async def step() -> list[str]:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
                started = list(starts.started)
            await asyncio.sleep(0)
            return started

        assert asyncio.run(step()) == ["SELECT"]
    assert [span.name for span in exporter.get_finished_spans()] == ["SELECT"]


def test_a_steps_spans_are_made_outside_its_first_statements_context() -> None:
    """The step's spans are made in a context of their own, not in the request context of the statement that began
    the batch (a sampler or processor reading the current context sees none of it); each span's parent is still its
    own statement's."""
    seen: list[tuple[str, int]] = []

    class Looking(InMemorySpanExporter):
        def export(self, spans: Any) -> Any:
            seen.extend((span.name, trace.get_current_span().get_span_context().span_id) for span in spans)
            return super().export(spans)

    exporter = Looking()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    engine = sqlalchemy.create_engine("sqlite://")
    undo = trace_engine(engine, provider.get_tracer("test"))
    try:

        async def step() -> int:
            with provider.get_tracer("test").start_as_current_span("request") as request:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
            await asyncio.sleep(0)
            return request.get_span_context().span_id

        request_id = asyncio.run(step())
    finally:
        undo()
        engine.dispose()
        provider.shutdown()
    (statement,) = [span for span in exporter.get_finished_spans() if span.name == "SELECT"]
    assert statement.parent is not None and statement.parent.span_id == request_id
    assert ("SELECT", 0) in seen  # ended in an empty context: no current span
