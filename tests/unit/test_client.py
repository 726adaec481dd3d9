"""Tornado's HTTP client under the contrib instrumentation, corrected: no client span while suppressed."""

from __future__ import annotations

import asyncio

import tornado.web
from opentelemetry.instrumentation import tornado as contrib
from opentelemetry.instrumentation.tornado import TornadoInstrumentor
from opentelemetry.instrumentation.utils import suppress_http_instrumentation, suppress_instrumentation
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from jh_otel.tracing import client


class Hello(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("hello")


def test_a_suppressed_fetch_makes_no_client_span_and_an_unsuppressed_one_does() -> None:
    """With the correction installed before the instrumentor binds it, a fetch inside either suppression context
    makes no span (JupyterHub 5's proxy check, the readiness polls), and an ordinary fetch makes its CLIENT span."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    undo = client.install(contrib)
    instrumentor = TornadoInstrumentor()
    instrumentor.instrument(tracer_provider=provider)

    async def main() -> list[bytes]:
        sock, port = bind_unused_port()
        server = HTTPServer(tornado.web.Application([(r"/", Hello)]))
        server.add_sockets([sock])
        url = f"http://127.0.0.1:{port}/"
        bodies = []
        try:
            with suppress_instrumentation():
                bodies.append((await AsyncHTTPClient().fetch(url)).body)
            with suppress_http_instrumentation():
                bodies.append((await AsyncHTTPClient().fetch(url)).body)
            assert [s for s in exporter.get_finished_spans() if s.kind.name == "CLIENT"] == []
            bodies.append((await AsyncHTTPClient().fetch(url)).body)
        finally:
            server.stop()
        return bodies

    try:
        assert asyncio.run(main()) == [b"hello"] * 3
        assert [s.kind.name for s in exporter.get_finished_spans() if s.kind.name == "CLIENT"] == ["CLIENT"]
    finally:
        instrumentor.uninstrument()
        for restore in undo:
            restore()
    assert not getattr(contrib.fetch_async, "_jh_otel", False)


def test_a_contrib_fetch_async_of_another_shape_is_left_alone(monkeypatch, caplog) -> None:
    """A contrib ``fetch_async`` that does not end with wrapt's (wrapped, instance, args, kwargs) is not replaced,
    with one warning."""

    def other(tracer, request_hook, args, kwargs, extra):  # a different tail
        return None

    monkeypatch.setattr(contrib, "fetch_async", other)
    assert client.install(contrib) == []
    assert contrib.fetch_async is other
    assert "leaving out suppression of tornado client spans" in caplog.text
