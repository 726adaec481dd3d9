"""Request spans: the contrib tornado instrumentation with jh_otel's corrections, on a real tornado server."""

from __future__ import annotations

import asyncio
import inspect
import time
from types import SimpleNamespace

import pytest
import tornado.web
import tornado.websocket
import wrapt
from opentelemetry import trace
from opentelemetry.instrumentation import tornado as contrib
from opentelemetry.instrumentation.tornado import TornadoInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from jh_otel.tracing.scrubbing import KnownSecrets
from jh_otel.tracing.server import ServerCorrections, request_secrets

PREFIX = "/pre%25fix"  # a base_url with a %: the contrib route formatting raised ValueError on it


class UserServer(tornado.web.RequestHandler):
    def prepare(self):
        self._jupyterhub_user = SimpleNamespace(name="alice", kind="user")

    def get(self, user_name):
        self.write(user_name)


class Slow(tornado.web.RequestHandler):
    async def get(self):
        await asyncio.sleep(0.4)
        self.write("done")


class Boom(tornado.web.RequestHandler):
    def get(self):
        raise RuntimeError("it broke")


class Unavailable(tornado.web.RequestHandler):
    def get(self):
        raise tornado.web.HTTPError(503)


class Echo(tornado.websocket.WebSocketHandler):
    def on_message(self, message):
        self.write_message(message)


@pytest.fixture
def traced():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    instrumentor = TornadoInstrumentor()
    instrumentor.instrument(tracer_provider=provider, meter_provider=MeterProvider(metric_readers=[reader]))
    known = KnownSecrets()
    undo = ServerCorrections(known).install(contrib)
    try:
        yield SimpleNamespace(exporter=exporter, reader=reader, known=known)
    finally:
        for restore in undo:
            restore()
        instrumentor.uninstrument()


def serve_and(requests):
    """Serve the test application on loopback and run ``requests(base_url)``."""

    async def main():
        app = tornado.web.Application(
            [
                (PREFIX + r"/api/users/([^/]+)/server", UserServer),
                (r"/boom", Boom),
                (r"/slow", Slow),
                (r"/unavailable", Unavailable),
                (r"/ws", Echo),
            ]
        )
        sock, port = bind_unused_port()
        server = HTTPServer(app)
        server.add_sockets([sock])
        try:
            await requests(f"127.0.0.1:{port}")
        finally:
            server.stop()
            await asyncio.sleep(0.05)

    asyncio.run(main())


async def fetch(url: str, **kwargs):
    try:
        return await AsyncHTTPClient().fetch(url, **kwargs)
    except HTTPClientError as error:
        return error.response


async def raw_get(host: str, path: str, headers: dict[str, str]) -> int:
    """GET ``path`` with exactly these header names, on a connection of its own; the response's status code."""
    address, port = host.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(address, int(port))
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    await reader.read()
    writer.close()
    return status


def server_spans(traced):
    return [s for s in traced.exporter.get_finished_spans() if s.kind.name == "SERVER"]


def test_route_template_names_stable_attributes_and_user(traced) -> None:
    """A request under a base URL containing ``%`` gives one span named by its route template, with exactly the stable
    HTTP attributes and the handler's user name, status UNSET, and its query token recorded as the trace's known
    secret."""

    async def drive(host):
        response = await fetch(f"http://{host}{PREFIX}/api/users/bob/server?token=abcd1234&x=1")
        assert response.code == 200 and response.body == b"bob"

    serve_and(drive)
    (span,) = server_spans(traced)
    route = PREFIX + "/api/users/{user_name}/server"
    assert span.name == f"GET {route}"
    assert dict(span.attributes) == {
        "http.request.method": "GET",
        "url.scheme": "http",
        "url.path": f"{PREFIX}/api/users/bob/server",
        "url.query": "token=abcd1234&x=1",
        "network.protocol.version": "1.1",
        "client.address": "127.0.0.1",
        "http.route": route,
        "server.address": "127.0.0.1",
        "server.port": span.attributes["server.port"],
        "user_agent.original": span.attributes["user_agent.original"],
        "http.response.status_code": 200,
        "jupyterhub.user.name": "alice",
    }
    assert span.status.status_code.name == "UNSET"
    assert traced.known.get(span.context.trace_id) == ("abcd1234",)


@pytest.mark.parametrize("case", ["lower", "title", "upper"])
def test_the_headers_read_are_found_in_any_case(traced, case: str) -> None:
    """The request span finds a ``traceparent`` (the remote parent), the ``Authorization`` credential (to the
    trace's known secrets) and the ``User-Agent`` however the client spelled their names; with none of them it
    starts a new trace and records no secret."""
    spell = {"lower": str.lower, "title": str.title, "upper": str.upper}[case]
    parent_trace, parent_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"

    async def drive(host):
        headers = {
            spell("traceparent"): f"00-{parent_trace}-{parent_span}-01",
            spell("authorization"): "token header-secret-0123",
            spell("user-agent"): "probe/1.0",
        }
        path = f"{PREFIX}/api/users/bob/server"
        assert (
            await raw_get(host, path, headers) == 200
        )  # the names as spelled (an instrumented client injects its own)
        assert await raw_get(host, path, {"Accept": "*/*"}) == 200

    serve_and(drive)
    first, second = server_spans(traced)
    assert format(first.context.trace_id, "032x") == parent_trace
    assert format(first.parent.span_id, "016x") == parent_span and first.parent.is_remote
    assert first.attributes["user_agent.original"] == "probe/1.0"
    assert traced.known.get(first.context.trace_id) == ("header-secret-0123",)
    assert second.parent is None and second.context.trace_id != first.context.trace_id
    assert "user_agent.original" not in second.attributes
    assert traced.known.get(second.context.trace_id) == ()


@pytest.mark.parametrize(
    ("path", "error_type", "message"),
    [("/boom", "RuntimeError", "RuntimeError: it broke"), ("/unavailable", "HTTPError", "HTTPError: HTTP 503")],
)
def test_5xx_is_one_error_span_with_the_exception(traced, path: str, error_type: str, message: str) -> None:
    """A handler raising an exception or ``HTTPError(503)`` gives one server span with status ERROR described by the
    exception, its ``error.type``, a single ``exception`` event and the 5xx status code."""

    async def drive(host):
        assert (await fetch(f"http://{host}{path}")).code in (500, 503)

    serve_and(drive)
    (span,) = server_spans(traced)
    assert span.status.status_code.name == "ERROR"
    assert span.status.description.startswith(message)
    assert span.attributes["error.type"] == error_type
    assert [e.name for e in span.events] == ["exception"]
    assert span.attributes["http.response.status_code"] in (500, 503)


def test_unmatched_requests_share_one_name(traced) -> None:
    """Requests to paths no route matches (404) are all named ``GET unmatched`` and have no ``http.route``."""

    async def drive(host):
        for path in ("/nope", "/other/path"):
            assert (await fetch(f"http://{host}{path}")).code == 404

    serve_and(drive)
    spans = server_spans(traced)
    assert [s.name for s in spans] == ["GET unmatched", "GET unmatched"]
    assert all("http.route" not in s.attributes for s in spans)


def test_websocket_span_ends_when_the_socket_closes(traced) -> None:
    """A WebSocket's span is not finished while the socket is open and, once it closes, is one ``GET /ws`` span with
    status code 101."""

    async def drive(host):
        connection = await tornado.websocket.websocket_connect(f"ws://{host}/ws")
        await connection.write_message("hi")
        assert await connection.read_message() == "hi"
        await asyncio.sleep(0.05)
        assert not server_spans(traced)  # still open
        connection.close()
        await asyncio.sleep(0.2)

    serve_and(drive)
    (span,) = server_spans(traced)
    assert span.name == "GET /ws" and span.attributes["http.response.status_code"] == 101


def test_contrib_server_metrics_are_not_recorded(traced) -> None:
    """With the corrections installed, requests record no ``http.server`` metric of the contrib instrumentation."""

    async def drive(host):
        await fetch(f"http://{host}/boom")
        await fetch(f"http://{host}{PREFIX}/api/users/bob/server")

    serve_and(drive)
    data = traced.reader.get_metrics_data()
    names = {m.name for rm in (data.resource_metrics if data else []) for sm in rm.scope_metrics for m in sm.metrics}
    assert not {n for n in names if n.startswith("http.server")}


def test_install_is_reversible() -> None:
    """``ServerCorrections.install`` replaces every contrib function it lists, a second install replaces nothing, and
    its undo puts the originals back."""
    originals = {name: getattr(contrib, name) for name in ServerCorrections._REPLACED}
    corrections = ServerCorrections(KnownSecrets())
    undo = corrections.install(contrib)
    assert all(getattr(contrib, name) is not original for name, original in originals.items())
    assert corrections.install(contrib) == []
    for restore in undo:
        restore()
    assert {name: getattr(contrib, name) for name in ServerCorrections._REPLACED} == originals


def test_request_secrets_finds_every_credential_form() -> None:
    """``request_secrets`` finds exactly the query ``code``, the form password, the bearer token, both cookies and the
    token in the path."""
    from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

    headers = HTTPHeaders(
        {
            "Host": "127.0.0.1",
            "Authorization": "Bearer bearer-secret",
            "Cookie": "jupyterhub-session-id=cookie-secret; _xsrf=xsrf-secret",
        }
    )
    uri = "/hub/api/authorizations/token/path-secret?code=code-secret&a=b"
    request = HTTPServerRequest(start_line=RequestStartLine("POST", uri, "HTTP/1.1"), headers=headers)
    request.query_arguments = {"code": [b"code-secret"], "a": [b"b"]}
    request.body_arguments = {"password": [b"form-secret"], "username": [b"alice"]}
    assert sorted(request_secrets(request)) == sorted(
        ["code-secret", "form-secret", "bearer-secret", "cookie-secret", "xsrf-secret", "path-secret"]
    )


def test_probes_are_counted_not_traced_unless_asked() -> None:
    """JupyterHub's health and metrics handlers start no request span by default, and do with trace_probes; any
    other handler starts one either way."""
    from jupyterhub.handlers.metrics import MetricsHandler
    from jupyterhub.handlers.pages import HealthCheckHandler

    probes = [object.__new__(HealthCheckHandler), object.__new__(MetricsHandler)]
    default, traced = ServerCorrections(KnownSecrets()), ServerCorrections(KnownSecrets(), trace_probes=True)
    tracer = TracerProvider().get_tracer("test")
    assert [default._start(tracer, probe) for probe in probes] == [None, None]
    assert default._is_probe(UserServer) is False
    for probe in probes:  # traced: it goes on to read the request (which a bare handler has not)
        with pytest.raises(AttributeError, match="request"):
            traced._start(tracer, probe)


def test_a_probes_class_is_left_unwrapped_while_probes_are_untraced(traced) -> None:
    """While probes are not traced, the contrib leaves JupyterHub's probe classes unwrapped (no ``prepare`` or
    ``on_finish`` wrapper runs for a probe) and still wraps every other handler class."""
    from jupyterhub.handlers.metrics import MetricsHandler
    from jupyterhub.handlers.pages import HealthCheckHandler

    class Other(tornado.web.RequestHandler):
        def get(self):
            self.write("ok")

    tracer = TracerProvider().get_tracer("test")
    for probe in (HealthCheckHandler, MetricsHandler):
        before = {name: probe.__dict__.get(name) for name in ("prepare", "on_finish", "log_exception")}
        assert contrib.patch_handler_class(tracer, None, probe) is False
        assert {name: probe.__dict__.get(name) for name in before} == before
        for name in before:  # on the class and every base: no wrapt proxy anywhere
            assert not isinstance(inspect.getattr_static(probe, name), wrapt.ObjectProxy)
        assert not hasattr(probe, "_otel_patched_key")
    assert contrib.patch_handler_class(tracer, None, Other) is True
    try:
        assert isinstance(Other.__dict__["prepare"], wrapt.FunctionWrapper)
        wrapped = Other.__dict__["prepare"]
        assert contrib.patch_handler_class(tracer, None, Other) is False  # once per class, as the contrib does
        assert Other.__dict__["prepare"] is wrapped
    finally:
        contrib.unpatch_handler_class(Other)


def test_a_subclass_of_a_patched_class_is_answered_as_the_contrib_answers_it(traced) -> None:
    """The replaced ``patch_handler_class`` answers an already-patched class itself: exactly as the contrib's own
    function does (its marker is inherited, so a subclass of a patched class is not patched again), which this pins
    for the installed contrib."""

    class Parent(tornado.web.RequestHandler):
        def get(self):
            self.write("ok")

    class Child(Parent):
        pass

    tracer = TracerProvider().get_tracer("test")
    shipped = contrib.patch_handler_class.__self__._original["patch_handler_class"]
    assert contrib.patch_handler_class(tracer, None, Parent) is True
    try:
        assert contrib.patch_handler_class(tracer, None, Child) is False
        assert shipped(tracer, None, Child) is False  # the contrib's own answer, the same
        assert "prepare" not in Child.__dict__
    finally:
        contrib.unpatch_handler_class(Parent)


def test_the_contribs_class_patching_is_replaced_only_while_probes_are_untraced() -> None:
    """Default corrections replace the contrib's ``patch_handler_class`` and their undo restores it; with
    ``trace_probes`` it stays the contrib's own."""
    original = contrib.patch_handler_class
    for trace_probes, replaced in ((False, True), (True, False)):
        undo = ServerCorrections(KnownSecrets(), trace_probes=trace_probes).install(contrib)
        try:
            assert (contrib.patch_handler_class is not original) is replaced
        finally:
            for restore in undo:
                restore()
        assert contrib.patch_handler_class is original


def test_a_request_hook_given_in_code_gets_a_non_recording_span_for_an_untraced_probe(traced) -> None:
    """Where the contrib did wrap a probe's class (served before jh_otel installed, or a contrib whose
    ``patch_handler_class`` jh_otel leaves), its ``_prepare`` calls a ``server_request_hook`` with ``ctx.span``: for a
    probe that is the invalid, non-recording span (no AttributeError into the request), no context is left on the handler, and none is
    exported."""
    from jupyterhub.handlers.pages import HealthCheckHandler

    handler = object.__new__(HealthCheckHandler)
    handler.request = SimpleNamespace(uri="/hub/health")
    hooked, served = [], []
    tracer = TracerProvider().get_tracer("test")
    mode = None  # jh_otel's replacements read no semantic-convention mode
    contrib._prepare(tracer, None, lambda span, h: hooked.append(span), mode, lambda: served.append(1), handler, (), {})
    assert served == [1] and hooked == [trace.INVALID_SPAN] and not hooked[0].is_recording()
    assert "_otel_trace_context_key" not in handler.__dict__
    contrib._on_finish(tracer, None, mode, lambda: None, handler, (), {})
    assert traced.exporter.get_finished_spans() == ()


def test_a_request_longer_than_the_secrets_ttl_keeps_them_from_its_end() -> None:
    """A request that outlasts the known secrets' TTL (an event stream) hands its credentials in again at its end:
    its trace's token is kept counting from the request's end, not from its start, which the TTL has passed."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = TornadoInstrumentor()
    instrumentor.instrument(tracer_provider=provider, meter_provider=MeterProvider())
    known = KnownSecrets(ttl=0.2)
    undo = ServerCorrections(known).install(contrib)
    started = time.monotonic()
    try:

        async def drive(host):
            response = await fetch(f"http://{host}/slow", headers={"Authorization": "token slow-secret-0123"})
            assert response.code == 200

        serve_and(drive)
    finally:
        for restore in undo:
            restore()
        instrumentor.uninstrument()
    (span,) = [s for s in exporter.get_finished_spans() if s.kind.name == "SERVER"]
    assert span.end_time - span.start_time >= 400_000_000  # longer than the TTL
    # kept from the request's end (no clock read after it here: a slow machine cannot let the TTL run out)
    added, secrets = known._by_trace[span.context.trace_id]
    assert secrets == ("slow-secret-0123",)
    assert added >= started + 0.4
