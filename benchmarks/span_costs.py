#!/usr/bin/env python
"""What one traced request costs, piece by piece, away from JupyterHub: the floor under ``/hub/health``.

Run from the repository root::

    .venv/bin/python benchmarks/span_costs.py          # about 2 minutes

Part 1, in this process: microseconds per span for the SDK alone (start with 10 attributes, two more, end, into a
BatchSpanProcessor with an exporter that drops everything), for the OTLP exporters' ``encode_spans`` and jh_otel's
encoder, for jh_otel's scrubbing of a clean span, and per SQLite query untraced, with the contrib engine tracer and
with jh_otel's. Part 2: a bare tornado server (one handler answering a small
JSON body, like ``/hub/health``) in a child process, loaded with ``wrk``, in interleaved rounds: CPU per request
plain, with the contrib tornado instrumentation as shipped, and with jh_otel's corrections (both with stable HTTP
conventions, spans into the same dropping exporter). Loopback only. Prints a markdown table and writes
``benchmarks/results-span-costs.json``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
MODES = ("plain", "contrib", "jh_otel")
ROUNDS, SECONDS = 5, 5
ATTRIBUTES = {
    "http.request.method": "GET",
    "url.scheme": "http",
    "url.path": "/hub/health",
    "network.protocol.version": "1.1",
    "client.address": "127.0.0.1",
    "http.route": "/hub/health",
    "server.address": "127.0.0.1",
    "server.port": 8081,
    "user_agent.original": "wrk",
    "tornado.handler": "jupyterhub.handlers.pages.HealthCheckHandler",
}


def dropping_provider():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    return provider


def sql_costs(n: int = 3000) -> dict[str, float]:
    """Microseconds per SQLite query (a JupyterHub-like SELECT): untraced, with the contrib engine tracer as
    shipped, with jh_otel's; each traced into the dropping exporter."""
    import tempfile

    import sqlalchemy
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import NoOpMeterProvider

    from jh_otel.tracing.sql import HubEngineTracer

    tracer = dropping_provider().get_tracer("span_costs")
    usage = NoOpMeterProvider().get_meter("span_costs").create_up_down_counter("usage")
    statement = sqlalchemy.text("SELECT users.id, users.name FROM users WHERE users.id IN (1, 2, 3) LIMIT 10")
    with tempfile.TemporaryDirectory() as tmp:
        engine = sqlalchemy.create_engine(f"sqlite:///{tmp}/jupyterhub.sqlite")
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text("CREATE TABLE users (id INTEGER, name TEXT)"))

        def timed() -> float:
            with engine.connect() as connection:
                start = time.perf_counter()
                for _ in range(n):
                    connection.execute(statement).fetchall()
                return (time.perf_counter() - start) / n * 1e6

        out = {"sql_untraced_us": timed()}
        for name, attach, detach in (
            ("sql_contrib_us", lambda: EngineTracer(tracer, engine, usage), EngineTracer.remove_all_event_listeners),
            ("sql_jh_otel_us", lambda: HubEngineTracer(tracer, engine), HubEngineTracer.remove_all_event_listeners),
        ):
            attach()
            out[name] = timed()
            detach()
        engine.dispose()
    return {key: round(value, 1) for key, value in out.items()}


def per_span_costs(n: int = 20_000) -> dict[str, float]:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from jh_otel.tracing.encoding import SpanEncoder
    from jh_otel.tracing.scrubbing import KnownSecrets, scrub_span

    tracer = dropping_provider().get_tracer("span_costs")
    start = time.perf_counter()
    for _ in range(n):
        span = tracer.start_span("GET /hub/health", attributes=ATTRIBUTES)
        span.set_attribute("http.response.status_code", 200)
        span.set_attribute("jupyterhub.user.name", "alice")
        span.end()
    sdk = (time.perf_counter() - start) / n * 1e6

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    for _ in range(5000):
        provider.get_tracer("span_costs").start_span("GET /hub/health", attributes=ATTRIBUTES).end()
    spans = list(memory.get_finished_spans())
    timings = {}
    for name, encode in (("encode_spans", lambda b: encode_spans(b).SerializePartialToString()), ("jh_otel", None)):
        encoder = SpanEncoder()
        start = time.perf_counter()
        for i in range(0, len(spans), 512):
            (encode or encoder.encode)(spans[i : i + 512])
        timings[name] = (time.perf_counter() - start) / len(spans) * 1e6
    known = KnownSecrets()
    start = time.perf_counter()
    for span in spans:
        scrub_span(span, known)
    scrub = (time.perf_counter() - start) / len(spans) * 1e6
    return {
        "sdk_start_set_end_us": round(sdk, 1),
        "encode_spans_us": round(timings["encode_spans"], 1),
        "jh_otel_encoder_us": round(timings["jh_otel"], 1),
        "scrub_clean_span_us": round(scrub, 1),
    }


def serve(mode: str, port: int) -> None:
    """The child: a bare tornado server, instrumented as ``mode`` says."""
    import asyncio

    import tornado.web
    from tornado.httpserver import HTTPServer

    class Health(tornado.web.RequestHandler):
        def get(self):
            self.write({"ok": True})

    if mode != "plain":
        from opentelemetry.instrumentation import tornado as contrib
        from opentelemetry.instrumentation.tornado import TornadoInstrumentor
        from opentelemetry.metrics import NoOpMeterProvider

        from jh_otel.tracing import stable_http_semconv
        from jh_otel.tracing.scrubbing import KnownSecrets
        from jh_otel.tracing.server import ServerCorrections

        stable_http_semconv()
        provider = dropping_provider()
        TornadoInstrumentor().instrument(tracer_provider=provider, meter_provider=NoOpMeterProvider())
        if mode == "jh_otel":
            ServerCorrections(KnownSecrets()).install(contrib)

    async def main() -> None:
        app = tornado.web.Application([(r"/hub/health", Health)], log_function=lambda handler: None)
        HTTPServer(app).listen(port, "127.0.0.1")
        await asyncio.Event().wait()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def request_costs() -> dict[str, list[float]]:
    servers = {}
    for mode in MODES:
        port = free_port()
        proc = subprocess.Popen([sys.executable, __file__, "--serve", mode, str(port)], cwd=ROOT.parent)
        servers[mode] = (proc, f"http://127.0.0.1:{port}/hub/health")
    time.sleep(3)
    costs: dict[str, list[float]] = {mode: [] for mode in MODES}
    try:
        for _, url in servers.values():
            subprocess.run(["wrk", "-t1", "-c4", "-d2s", url], capture_output=True, check=True)  # warm up
        for round_ in range(ROUNDS):
            order = MODES if round_ % 2 == 0 else MODES[::-1]
            for mode in order:
                proc, url = servers[mode]
                before = cpu_seconds(proc.pid)
                out = subprocess.run(["wrk", "-t1", "-c4", f"-d{SECONDS}s", url], capture_output=True, text=True).stdout
                requests = int(re.search(r"(\d+) requests in", out).group(1))
                costs[mode].append((cpu_seconds(proc.pid) - before) / requests * 1e6)
    finally:
        for proc, _ in servers.values():
            proc.kill()
            proc.wait()
    return costs


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(sys.argv[2], int(sys.argv[3]))
        return 0
    if shutil.which("wrk") is None:
        print("span_costs.py needs wrk (apt-get install -y wrk)")
        return 1
    sys.path.insert(0, str(ROOT.parent / "src"))
    spans = per_span_costs() | sql_costs()
    requests = request_costs()
    median = {mode: statistics.median(values) for mode, values in requests.items()}
    rows = [
        ("SDK span: start with 10 attributes, 2 more, end, into a BatchSpanProcessor", spans["sdk_start_set_end_us"]),
        ("OTLP exporters' encode_spans, per span", spans["encode_spans_us"]),
        ("jh_otel's span encoder, per span", spans["jh_otel_encoder_us"]),
        ("jh_otel's scrubbing of a clean span", spans["scrub_clean_span_us"]),
        ("SQLite query, CPU per query: untraced", spans["sql_untraced_us"]),
        ("... with the contrib engine tracer as shipped, added", spans["sql_contrib_us"] - spans["sql_untraced_us"]),
        ("... with jh_otel's engine tracer, added", spans["sql_jh_otel_us"] - spans["sql_untraced_us"]),
        ("bare tornado request, CPU per request: plain", median["plain"]),
        ("... with the contrib tornado instrumentation, added", median["contrib"] - median["plain"]),
        ("... with jh_otel's corrected request spans, added", median["jh_otel"] - median["plain"]),
    ]
    print("| measurement | us |\n|---|---:|")
    for label, value in rows:
        print(f"| {label} | {value:,.1f} |")
    output = ROOT / "results-span-costs.json"
    output.write_text(json.dumps({"per_span": spans, "request_cpu_us": requests, "rounds": ROUNDS}, indent=2) + "\n")
    print(f"\nper-round CPU per request: {json.dumps({k: [round(v) for v in vs] for k, vs in requests.items()})}")
    print(f"results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
