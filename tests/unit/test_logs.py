"""Log correlation: records carry the current trace and span ids; the suffix in the format comes and goes cleanly."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, Tracer
from tornado.log import LogFormatter

from jh_otel.tracing.logs import SUFFIX, TraceContextFilter, correlate


@pytest.fixture
def tracer() -> Iterator[Tracer]:
    provider = TracerProvider()
    yield provider.get_tracer("test")
    provider.shutdown()


def _record(message: str = "hello") -> logging.LogRecord:
    return logging.LogRecord("test", logging.INFO, __file__, 1, message, (), None)


def _ids(span: trace.Span) -> tuple[str, str]:
    context = span.get_span_context()
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


# --- TraceContextFilter -------------------------------------------------------------------------------------------


def test_filter_inside_a_span(tracer: Tracer) -> None:
    """Inside a span the filter passes the record and sets its ``trace_id`` (32 hex digits), ``span_id`` (16) and
    ``trace_context`` suffix from the span's ids."""
    record = _record()
    with tracer.start_as_current_span("request") as span:
        assert TraceContextFilter().filter(record) is True
    trace_id, span_id = _ids(span)
    assert re.fullmatch(r"[0-9a-f]{32}", record.trace_id) and record.trace_id == trace_id
    assert re.fullmatch(r"[0-9a-f]{16}", record.span_id) and record.span_id == span_id
    assert record.trace_context == f" trace_id={trace_id} span_id={span_id}"


def test_filter_pads_small_ids_to_full_width() -> None:
    """Ids are zero-padded lower-case hex, whatever span carries them (a remote parent included)."""
    context = SpanContext(trace_id=0xABC, span_id=0x1F, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    record = _record()
    with trace.use_span(NonRecordingSpan(context)):
        TraceContextFilter().filter(record)
    assert record.trace_id == "00000000000000000000000000000abc"
    assert record.span_id == "000000000000001f"
    assert record.trace_context == " trace_id=00000000000000000000000000000abc span_id=000000000000001f"


def test_filter_outside_a_span() -> None:
    """Outside any span the filter passes the record with empty ``trace_id``, ``span_id`` and ``trace_context``."""
    record = _record()
    assert TraceContextFilter().filter(record) is True
    assert (record.trace_id, record.span_id, record.trace_context) == ("", "", "")


def test_filter_in_an_invalid_span() -> None:
    """Inside the invalid span the filter leaves ``trace_id``, ``span_id`` and ``trace_context`` empty."""
    record = _record()
    with trace.use_span(trace.INVALID_SPAN):
        TraceContextFilter().filter(record)
    assert (record.trace_id, record.span_id, record.trace_context) == ("", "", "")


def test_filter_overwrites_stale_values(tracer: Tracer) -> None:
    """A record filtered inside a span and again outside ends up with empty ids."""
    record = _record()
    flt = TraceContextFilter()
    with tracer.start_as_current_span("request"):
        flt.filter(record)
    flt.filter(record)
    assert (record.trace_id, record.span_id, record.trace_context) == ("", "", "")


# --- correlate ----------------------------------------------------------------------------------------------------


@pytest.fixture
def make_logger(request: pytest.FixtureRequest) -> Iterator[Callable[[logging.Formatter | None], tuple]]:
    """A private logger with one handler writing to a buffer, with the formatter given (or none)."""
    created: list[tuple[logging.Logger, logging.Handler]] = []

    def make(formatter: logging.Formatter | None) -> tuple[logging.Logger, logging.Handler, io.StringIO]:
        logger = logging.getLogger(f"jh_otel.test_logs.{request.node.name}.{len(created)}")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        buffer = io.StringIO()
        handler = logging.StreamHandler(buffer)
        if formatter is not None:
            handler.setFormatter(formatter)
        logger.addHandler(handler)
        created.append((logger, handler))
        return logger, handler, buffer

    yield make
    for logger, handler in created:
        logger.removeHandler(handler)


FORMATTERS = {
    "logging": lambda: logging.Formatter("%(message)s"),
    "tornado": lambda: LogFormatter(fmt="%(message)s", color=False),
}


@pytest.mark.parametrize("kind", list(FORMATTERS))
def test_correlate_appends_the_ids_inside_a_span_only(kind: str, make_logger, tracer: Tracer) -> None:
    """With a ``logging`` or tornado formatter, ``correlate`` appends the ids only to lines logged inside a span, and
    its undo removes the filter and restores the format."""
    formatter = FORMATTERS[kind]()
    logger, handler, buffer = make_logger(formatter)
    fmt, style_fmt = formatter._fmt, formatter._style._fmt

    undo = correlate(logger, in_format=True)
    assert len(undo) == 2
    logger.info("outside")
    with tracer.start_as_current_span("request") as span:
        logger.info("inside %s", "a span")
    trace_id, span_id = _ids(span)

    for restore in undo:
        restore()
    logger.info("after")
    with tracer.start_as_current_span("request again"):
        logger.info("undone")

    assert buffer.getvalue().splitlines() == [
        "outside",
        f"inside a span trace_id={trace_id} span_id={span_id}",
        "after",
        "undone",
    ]
    assert handler.filters == []
    assert formatter._fmt == fmt
    assert formatter._style._fmt == style_fmt


@pytest.mark.parametrize("kind", list(FORMATTERS))
def test_correlate_twice_appends_the_suffix_once(kind: str, make_logger, tracer: Tracer) -> None:
    """A second ``correlate`` adds only a filter, so the format has the suffix once and a line the ids once, and undoing
    both restores the format."""
    formatter = FORMATTERS[kind]()
    logger, _, buffer = make_logger(formatter)
    first = correlate(logger, in_format=True)
    second = correlate(logger, in_format=True)
    assert (len(first), len(second)) == (2, 1)  # the second call adds a filter, not a second suffix
    assert formatter._fmt == "%(message)s" + SUFFIX
    with tracer.start_as_current_span("request") as span:
        logger.info("inside")
    trace_id, span_id = _ids(span)
    assert buffer.getvalue() == f"inside trace_id={trace_id} span_id={span_id}\n"
    for restore in second + first:
        restore()
    assert formatter._fmt == "%(message)s"


def test_correlate_without_the_format_only_adds_the_filter(make_logger, tracer: Tracer) -> None:
    """``in_format=False`` leaves the format alone; a format of one's own can use the record's fields."""
    formatter = logging.Formatter("%(message)s [%(trace_id)s/%(span_id)s]")
    logger, handler, buffer = make_logger(formatter)
    undo = correlate(logger, in_format=False)
    assert len(undo) == 1
    assert formatter._fmt == "%(message)s [%(trace_id)s/%(span_id)s]"
    logger.info("outside")
    with tracer.start_as_current_span("request") as span:
        logger.info("inside")
    trace_id, span_id = _ids(span)
    assert buffer.getvalue().splitlines() == ["outside [/]", f"inside [{trace_id}/{span_id}]"]
    undo[0]()
    assert handler.filters == []


def test_correlate_a_handler_without_formatter(make_logger, tracer: Tracer) -> None:
    """No formatter (``%(message)s``): nothing to append to and nothing that shows the fields, so no filter, and
    lines as before."""
    logger, handler, buffer = make_logger(None)
    undo = correlate(logger, in_format=True)
    assert undo == [] and handler.filters == []
    assert handler.formatter is None
    with tracer.start_as_current_span("request"):
        logger.info("inside")
    assert buffer.getvalue() == "inside\n"


def test_correlate_a_logger_without_handlers() -> None:
    """``correlate`` on a logger without handlers returns an empty undo list."""
    logger = logging.getLogger("jh_otel.test_logs.no_handlers")
    assert logger.handlers == []
    assert correlate(logger, in_format=True) == []


def test_correlate_every_handler(make_logger, tracer: Tracer) -> None:
    """``correlate`` appends the ids to the lines of each of a logger's two handlers, and its four undos remove both
    filters."""
    logger, first, first_buffer = make_logger(logging.Formatter("1 %(message)s"))
    second_buffer = io.StringIO()
    second = logging.StreamHandler(second_buffer)
    second.setFormatter(logging.Formatter("2 %(message)s"))
    logger.addHandler(second)
    try:
        undo = correlate(logger, in_format=True)
        assert len(undo) == 4
        with tracer.start_as_current_span("request") as span:
            logger.info("inside")
        trace_id, span_id = _ids(span)
        assert first_buffer.getvalue() == f"1 inside trace_id={trace_id} span_id={span_id}\n"
        assert second_buffer.getvalue() == f"2 inside trace_id={trace_id} span_id={span_id}\n"
        for restore in undo:
            restore()
        assert first.filters == [] and second.filters == []
    finally:
        logger.removeHandler(second)


@pytest.mark.parametrize(("style", "fmt"), [("{", "{message}"), ("$", "${message}")])
def test_correlate_leaves_lines_of_other_format_styles_intact(style: str, fmt: str, make_logger) -> None:
    """A ``%``-style suffix must not appear verbatim in the lines of a ``{``- or ``$``-style formatter."""
    formatter = logging.Formatter(fmt, style=style)
    logger, _, buffer = make_logger(formatter)
    undo = correlate(logger, in_format=True)
    logger.info("outside")
    assert buffer.getvalue() == "outside\n"
    for restore in undo:
        restore()
    assert formatter._fmt == fmt and formatter._style._fmt == fmt


# --- which handlers get the filter ---------------------------------------------------------------------------------


def _hub_formatter(fmt: str | None = None) -> logging.Formatter:
    from jupyterhub.app import JupyterHub
    from jupyterhub.log import CoroutineLogFormatter

    default = JupyterHub._log_format_default(None)  # the format a hub logs with unless configured
    return CoroutineLogFormatter(fmt=fmt or default, datefmt="%Y-%m-%d %H:%M:%S", color=False)


def test_the_hubs_default_handler_gets_no_filter(make_logger) -> None:
    """JupyterHub's own formatter with its default log_format names no field: its handler gets no filter (a cost of
    every log line for attributes nothing reads), and the lines are as before."""
    logger, handler, buffer = make_logger(_hub_formatter())
    assert correlate(logger, in_format=False) == []
    assert handler.filters == []
    logger.info("answered")
    assert buffer.getvalue().rstrip().endswith("] answered")


@pytest.mark.parametrize("field", ["trace_id", "span_id", "trace_context"])
def test_a_hub_format_that_names_a_field_gets_the_filter(field: str, make_logger, tracer: Tracer) -> None:
    """A log_format of one's own that names any of the three fields gets the filter, and the line shows it."""
    logger, handler, buffer = make_logger(_hub_formatter(f"%(message)s <%({field})s>"))
    assert len(correlate(logger, in_format=False)) == 1
    with tracer.start_as_current_span("request") as span:
        logger.info("inside")
    trace_id, span_id = _ids(span)
    shown = {"trace_id": trace_id, "span_id": span_id, "trace_context": f" trace_id={trace_id} span_id={span_id}"}
    assert buffer.getvalue() == f"inside <{shown[field]}>\n"


def test_the_setting_on_gives_the_hubs_handler_the_suffix_and_the_filter(make_logger, tracer: Tracer) -> None:
    """With the suffix appended (the setting ``on``), the hub's default handler gets the filter too."""
    logger, handler, buffer = make_logger(_hub_formatter())
    assert len(correlate(logger, in_format=True)) == 2
    with tracer.start_as_current_span("request") as span:
        logger.info("inside")
    trace_id, span_id = _ids(span)
    assert buffer.getvalue().rstrip().endswith(f"inside trace_id={trace_id} span_id={span_id}")


class _JSONFormatter(logging.Formatter):
    """Stands in for a JSON formatter: shows every attribute of the record."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={v}" for k, v in sorted(record.__dict__.items()) if k in ("msg", "trace_id"))


class _Handler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_formatter_of_another_kind_gets_the_filter(make_logger, tracer: Tracer) -> None:
    """A formatter class that reads records its own way (a JSON formatter) gets the filter, whatever its format."""
    logger, handler, buffer = make_logger(_JSONFormatter("%(message)s"))
    assert len(correlate(logger, in_format=False)) == 1
    with tracer.start_as_current_span("request") as span:
        logger.info("inside")
    assert buffer.getvalue() == f"msg=inside trace_id={_ids(span)[0]}\n"


def test_a_handler_of_another_kind_gets_the_filter(make_logger, tracer: Tracer) -> None:
    """A handler class other than the standard stream and file handlers gets the filter: what it does with a record
    is its own, so its records carry the ids."""
    logger, _, _ = make_logger(None)
    other = _Handler()
    other.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(other)
    try:
        assert len(correlate(logger, in_format=False)) == 1
        with tracer.start_as_current_span("request") as span:
            logger.info("inside")
        assert [r.trace_id for r in other.records] == [_ids(span)[0]]
    finally:
        logger.removeHandler(other)
