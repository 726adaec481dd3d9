"""Micro costs of jh_otel's per-request work, with pytest-benchmark (calibrated rounds, repeated runs).

Run through the harness, which saves the results per label so that a cut shows as before/after columns::

    .venv/bin/python benchmarks/harness.py --micro --label after
    .venv/bin/python benchmarks/harness.py --micro --label before --src /tmp/before/src   # another checkout's src

(``git archive <commit> src | tar -x -C /tmp/before`` makes such a copy.) Directly, for a quick look::

    .venv/bin/python -m pytest benchmarks/micro.py -p no:cacheprovider --benchmark-only

Each benchmark calls one piece of the hub's path on hub-shaped data; nothing is exported (spans go to a
``BatchSpanProcessor`` whose exporter drops them, as fast as the SDK's own queue allows). A benchmark whose API the
measured jh_otel does not have is skipped, so an older checkout's figures stay comparable where they can be.
``extra_info["per"]`` is the number of units (spans) one call handles; the harness reports time per unit.
"""

from __future__ import annotations

import inspect
import types
from typing import Any

import pytest

pytest.importorskip("pytest_benchmark")

SERVICE_TOKEN = "bench-service-token-0123456789abcdef"
REQUEST_ATTRIBUTES = {
    "http.request.method": "GET",
    "url.scheme": "http",
    "url.path": "/hub/api/users/user00042",
    "network.protocol.version": "1.1",
    "client.address": "127.0.0.1",
    "http.route": "/hub/api/users/{user_name}",
    "server.address": "127.0.0.1",
    "server.port": 8081,
    "user_agent.original": "python-requests/2.32.3",
    "http.response.status_code": 200,
    "jupyterhub.service.name": "e2e",
}
SQL_ATTRIBUTES = {
    "db.system": "sqlite",
    "db.name": "jupyterhub.sqlite",
    "db.statement": "SELECT users.id, users.name FROM users WHERE users.name = ?",
    "db.operation": "SELECT",
    "db.sql.table": "users",
}
BATCH = 512  # the SDK's default export batch


class _Drop:
    """A span exporter that drops everything (the SDK's interface, duck-typed)."""

    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


@pytest.fixture(scope="module")
def provider() -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(_Drop()))
    yield tracer_provider
    tracer_provider.shutdown()


def _finished_spans(n: int, attributes: dict[str, Any], name: str, secret: str = "") -> list[Any]:
    """``n`` finished SDK spans (``ReadableSpan``), each with ``attributes``."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = tracer_provider.get_tracer("jh_otel.benchmark")
    for i in range(n):
        values = dict(attributes)
        if secret:
            values["url.query"] = f"token={secret}{i:06d}&state=ready"
        tracer.start_span(name, attributes=values).end()
    return list(memory.get_finished_spans())


def _hub_batch() -> list[Any]:
    """A batch in the proportions of ``/hub/api/users``: one request span to ten SQL spans."""
    count = -(-BATCH // 11)
    requests = _finished_spans(count, REQUEST_ATTRIBUTES, "GET /hub/api/users/{user_name}")
    sql = _finished_spans(10 * count, SQL_ATTRIBUTES, "SELECT users")
    batch: list[Any] = []
    for i, request in enumerate(requests):
        batch.append(request)
        batch.extend(sql[10 * i : 10 * i + 10])
    return batch[:BATCH]


# --------------------------------------------------------------------------
# Spans
# --------------------------------------------------------------------------


def test_sdk_span(benchmark: Any, provider: Any) -> None:
    """Reference, the floor under any request span: the SDK's start (10 attributes), 2 more, end."""
    tracer = provider.get_tracer("jh_otel.benchmark")
    attributes = {
        k: v for k, v in REQUEST_ATTRIBUTES.items() if k not in ("http.response.status_code", "jupyterhub.service.name")
    }

    def span() -> None:
        s = tracer.start_span("GET /hub/api/users/{user_name}", attributes=attributes)
        s.set_attribute("http.response.status_code", 200)
        s.set_attribute("jupyterhub.service.name", "e2e")
        s.end()

    benchmark.extra_info["per"] = 1
    benchmark(span)


def _corrections() -> Any:
    try:
        from opentelemetry.instrumentation import tornado as contrib

        from jh_otel.tracing.scrubbing import KnownSecrets
        from jh_otel.tracing.server import ServerCorrections
    except ImportError as error:
        pytest.skip(f"no request-span corrections here: {error}")
    corrections = ServerCorrections(KnownSecrets())
    undo = corrections.install(contrib)
    if undo is None:
        pytest.skip("the installed contrib tornado instrumentation does not fit jh_otel's corrections")
    try:  # the hub's spans are lean where jh_otel has lean spans (its default); the SDK's span before that
        from jh_otel.tracing import lean
    except ImportError:
        return corrections, undo
    return corrections, [*undo, *lean.install()]


def _handler(path: str, headers: dict[str, str], handler_class: Any, rules: list[Any]) -> Any:
    """A real tornado handler of a real application for a GET of ``path``, on a connection that goes nowhere."""
    import tornado.web
    from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

    application = tornado.web.Application(rules)
    connection = types.SimpleNamespace(
        context=types.SimpleNamespace(remote_ip="127.0.0.1", protocol="http"), set_close_callback=lambda callback: None
    )
    request = HTTPServerRequest(
        headers=HTTPHeaders(headers), connection=connection, start_line=RequestStartLine("GET", path, "HTTP/1.1")
    )
    return handler_class(application, request)


@pytest.mark.parametrize("kind", ["api-token", "anonymous"])
def test_request_span(benchmark: Any, provider: Any, kind: str) -> None:
    """A request's SERVER span through jh_otel's request-span path: ``ServerCorrections._start`` then ``_finish``
    (route template, stable HTTP attributes, the request's credentials to ``KnownSecrets``, the user, end)."""
    import tornado.web

    class UserAPIHandler(tornado.web.RequestHandler):
        pass

    class APIHandler(tornado.web.RequestHandler):
        pass

    rules = [(r"/hub/api/users/(?P<user_name>[^/]+)", UserAPIHandler), (r"/hub/api", APIHandler)]
    corrections, undo = _corrections()
    headers = {"Host": "127.0.0.1:8081", "User-Agent": "python-requests/2.32.3", "Accept": "*/*"}
    if kind == "api-token":
        headers["Authorization"] = f"token {SERVICE_TOKEN}"
        handler = _handler("/hub/api/users/user00042?include_stopped_servers", headers, UserAPIHandler, rules)
        handler.__dict__["_jupyterhub_user"] = types.SimpleNamespace(name="e2e", kind="service")
    else:
        handler = _handler("/hub/api", headers, APIHandler, rules)
    tracer = provider.get_tracer("opentelemetry.instrumentation.tornado")

    def request_span() -> None:
        corrections._start(tracer, handler)
        corrections._finish(tracer, handler, None)

    benchmark.extra_info["per"] = 1
    try:
        request_span()
        if "_otel_trace_context_key" in handler.__dict__:
            pytest.fail("the span was not finished")
        benchmark(request_span)
    finally:
        for step in undo:
            step()


# --------------------------------------------------------------------------
# Catalogue records
# --------------------------------------------------------------------------


def _instruments(exemplar: Any = None) -> Any:
    """The catalogue's instruments as a hub has them (exemplars from ``exemplar``)."""
    try:
        from jh_otel.catalogue import build_catalogue
        from jh_otel.instruments import Instruments
        from jh_otel.settings import parse_settings
    except ImportError as error:
        pytest.skip(f"no catalogue here: {error}")
    catalogue = build_catalogue(parse_settings({}))
    if "meter" in inspect.signature(Instruments).parameters:
        # an older jh_otel that also recorded into OpenTelemetry instruments: with two readers, as a hub with
        # OTEL_METRICS_EXPORTER=prometheus,otlp has them
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        meter = MeterProvider(metric_readers=[InMemoryMetricReader(), InMemoryMetricReader()]).get_meter("bench")
        return Instruments(catalogue, meter, lambda: None, exemplar)
    return Instruments(catalogue, lambda: None, exemplar)


def _recorder(name: str, exemplar: Any = None) -> Any:
    return _instruments(exemplar)[name]


LABELS = ("GET", "jupyterhub.apihandlers.users.UserAPIHandler", "200")


@pytest.mark.parametrize("family", ["request_duration_seconds", "request_count"])
def test_record(benchmark: Any, family: str) -> None:
    """One catalogue observation (``Recorder.record``): the request histogram, and the request counter."""
    recorder = _recorder(family)
    benchmark.extra_info["per"] = 1
    benchmark(recorder.record, 0.0042 if "duration" in family else 1, LABELS)


def test_record_exemplar(benchmark: Any, provider: Any) -> None:
    """The request histogram with exemplars on, inside a sampled span (``OTEL_PYTHON_JUPYTERHUB_EXEMPLARS=on``)."""
    try:
        from jh_otel.hooks.exemplars import current_exemplar
    except ImportError as error:
        pytest.skip(f"no exemplars here: {error}")
    recorder = _recorder("request_duration_seconds", current_exemplar)
    benchmark.extra_info["per"] = 1
    with provider.get_tracer("jh_otel.benchmark").start_as_current_span("request"):
        benchmark(recorder.record, 0.0042, LABELS)


def test_request_record(benchmark: Any) -> None:
    """A request's metrics at JupyterHub's log function, as a hub with jh_otel runs it at its defaults: jh_otel's
    records in place of JupyterHub's ``prometheus_log_method`` where it replaces it (catalogue served), else that
    function (its observation into JupyterHub's own histogram) and then jh_otel's records."""
    import tornado.web
    from jupyterhub import metrics

    try:
        from jh_otel.hooks.requests import RequestRecorder
        from jh_otel.hooks.routes import Routes
    except ImportError as error:
        pytest.skip(f"no request recorder here: {error}")

    class RootAPIHandler(tornado.web.RequestHandler):
        pass

    recorder = RequestRecorder(_instruments(), Routes([(r"/hub/api", RootAPIHandler)]), "/hub/api")
    handler = _handler("/hub/api", {"Host": "127.0.0.1:8081"}, RootAPIHandler, [(r"/hub/api", RootAPIHandler)])
    handler.set_status(200)
    replacement = getattr(recorder, "replacement", None)
    log_method = replacement if replacement is not None else recorder.wrapper
    benchmark.extra_info["per"] = 1
    benchmark(log_method, metrics.prometheus_log_method, None, (handler,), {})


def test_sql_checkout(benchmark: Any, provider: Any) -> None:
    """A pool checkout, one ``SELECT`` and the checkin on a traced SQLite engine (a file, as a hub's), as a
    handler's query runs it: the statement's span and whatever the tracer listens to on the pool."""
    import os
    import tempfile

    import sqlalchemy

    from jh_otel.tracing.sql import trace_engine

    with tempfile.TemporaryDirectory() as tmp:
        engine = sqlalchemy.create_engine(f"sqlite:///{os.path.join(tmp, 'jupyterhub.sqlite')}")
        undo = trace_engine(engine, provider.get_tracer("jh_otel.benchmark"))
        statement = sqlalchemy.text("SELECT 1")

        def query() -> None:
            with engine.connect() as connection:
                connection.execute(statement)

        try:
            benchmark.extra_info["per"] = 1
            benchmark(query)
        finally:
            if undo is not None:
                undo()
            engine.dispose()


def test_sql_step(benchmark: Any, provider: Any) -> None:
    """One event-loop step of a handler's queries: a pool checkout, ten ``SELECT``s and the checkin on a traced SQLite
    engine (a file, as a hub's), inside a running loop, the step over (where jh_otel makes the step's SQL spans);
    per statement, the loop's own step included."""
    import asyncio
    import os
    import tempfile

    import sqlalchemy

    from jh_otel.tracing.sql import trace_engine

    with tempfile.TemporaryDirectory() as tmp:
        engine = sqlalchemy.create_engine(f"sqlite:///{os.path.join(tmp, 'jupyterhub.sqlite')}")
        undo = trace_engine(engine, provider.get_tracer("jh_otel.benchmark"))
        statement = sqlalchemy.text("SELECT 1")
        loop = asyncio.new_event_loop()

        async def step() -> None:
            with engine.connect() as connection:
                for _ in range(10):
                    connection.execute(statement)
            await asyncio.sleep(0)  # the step is over: whatever was left for its end runs

        try:
            benchmark.extra_info["per"] = 10
            benchmark(lambda: loop.run_until_complete(step()))
        finally:
            loop.close()
            if undo is not None:
                undo()
            engine.dispose()


def test_log_line(benchmark: Any, provider: Any) -> None:
    """One access-log line through the hub's own handler (JupyterHub's formatter and default format, to a file)
    after jh_otel's log correlation at its default (``OTEL_PYTHON_JUPYTERHUB_LOG_CORRELATION=off``), inside a
    sampled request span."""
    import logging
    import os

    from jupyterhub.app import JupyterHub
    from jupyterhub.log import CoroutineLogFormatter

    try:
        from jh_otel.tracing.logs import correlate
    except ImportError as error:
        pytest.skip(f"no log correlation here: {error}")
    logger = logging.getLogger("jh_otel.benchmark.access")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    stream = open(os.devnull, "w")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        CoroutineLogFormatter(fmt=JupyterHub._log_format_default(None), datefmt="%Y-%m-%d %H:%M:%S", color=False)
    )
    logger.addHandler(handler)
    undo = correlate(logger, False)
    benchmark.extra_info["per"] = 1
    try:
        with provider.get_tracer("jh_otel.benchmark").start_as_current_span("GET /hub/api"):
            benchmark(logger.info, "%s %s %s (%s@%s) %.2fms", 200, "GET", "/hub/api", "", "127.0.0.1", 1.23)
    finally:
        for step in undo:
            step()
        logger.removeHandler(handler)
        stream.close()


# --------------------------------------------------------------------------
# Encoding and scrubbing (the export thread's work)
# --------------------------------------------------------------------------


def test_encode(benchmark: Any) -> None:
    """jh_otel's ``SpanEncoder.encode`` of a 512-span hub-shaped batch (1 request span : 10 SQL spans)."""
    try:
        from jh_otel.tracing.encoding import SpanEncoder
    except ImportError as error:
        pytest.skip(f"no span encoder here: {error}")
    batch = _hub_batch()
    encoder = SpanEncoder()
    benchmark.extra_info["per"] = len(batch)
    benchmark(encoder.encode, batch)


def test_encode_sdk(benchmark: Any) -> None:
    """Reference: the OTLP exporters' own ``encode_spans`` of the same batch, serialized."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    batch = _hub_batch()
    benchmark.extra_info["per"] = len(batch)
    benchmark(lambda: encode_spans(batch).SerializePartialToString())


@pytest.mark.parametrize("kind", ["clean-request", "clean-sql", "credential"])
def test_scrub(benchmark: Any, kind: str) -> None:
    """``scrub_span`` of a clean request span, of a clean SQL span, and of a request span whose URL holds its
    (known) token: returned as is, or copied with the credential redacted."""
    try:
        from jh_otel.tracing.scrubbing import KnownSecrets, scrub_span
    except ImportError as error:
        pytest.skip(f"no span scrubbing here: {error}")
    known = KnownSecrets()
    if kind == "clean-sql":
        spans = _finished_spans(BATCH, SQL_ATTRIBUTES, "SELECT users")
    elif kind == "clean-request":
        spans = _finished_spans(BATCH, REQUEST_ATTRIBUTES, "GET /hub/api/users/{user_name}")
        for span in spans:
            known.add(span.context.trace_id, [SERVICE_TOKEN])  # the Authorization credential, not in the span
    else:
        secret = "0123456789abcdef0123456789"
        spans = _finished_spans(BATCH, REQUEST_ATTRIBUTES, "GET /hub/api/users/{user_name}", secret=secret)
        for i, span in enumerate(spans):
            known.add(span.context.trace_id, [f"{secret}{i:06d}"])
        if scrub_span(spans[0], known) is spans[0]:
            pytest.fail("the credential was not found")

    def scrub_batch() -> None:
        for span in spans:
            scrub_span(span, known)

    benchmark.extra_info["per"] = len(spans)
    benchmark(scrub_batch)
