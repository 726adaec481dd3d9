#!/usr/bin/env python
"""The hub's span export pipeline away from the hub: spans/s end to end, losses, and no credential in what leaves.

A child process (``python benchmarks/pipeline.py JSON``: its own GIL; the OTLP receiver stays in the harness, which
answers an export as soon as it parses) runs the hub's pipeline, ``BatchSpanProcessor(ScrubbingSpanExporter(
Outbox(OTLPSpanExporter(http))))`` with jh_otel's span encoder, on an SDK ``TracerProvider``. Spans come in
hub-shaped traces: a ``GET /hub/api/users/{user_name}`` request span (12 attributes; a service token registered in
``KnownSecrets`` as the request's credential, and in ``url.query`` for one request in ten) and its 10 SQL spans.

Rows: as fast as the producer loop goes with ``max_queue_size`` = all spans (nothing can be dropped); paced at the
target rate with the SDK's default batch settings (queue 2048, batch 512, 5 s delay), where no span may be lost and
the producer must keep the pace; the worst case for scrubbing (a unique token in every span's URL); and for
reference the plain ``OTLPSpanExporter`` (its own encoder, no scrubbing).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

VARIANT_KEY = "benchmark.hub"  # hubs.HUB_LABEL (not imported: the child needs none of the harness)
SMALL_USERS = 200
SPAN_NAME = "GET /hub/api/users/{user_name}"
SQL_PER_REQUEST = 10  # what a /hub/api/users request makes at 200 users
SQL_TABLES = (
    "api_tokens",
    "users",
    "user_group_map",
    "user_role_map",
    "shares",
    "spawners",
    "servers",
    "roles",
    "oauth_clients",
    "groups",
)


def pipeline_child(params: dict[str, Any]) -> dict[str, Any]:
    """In the child process: ``params['spans']`` hub-like spans through BatchSpanProcessor(ScrubbingSpanExporter(
    Outbox(OTLPSpanExporter))) with jh_otel's span encoder (the hub's pipeline; ``scrub=False``: the plain exporter
    with its own encoder), paced at ``params['rate']`` spans/s (0: as fast as the loop goes), then force_flush."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import SpanKind, set_span_in_context

    from jh_otel.tracing import encoding, outbox
    from jh_otel.tracing.scrubbing import KnownSecrets, ScrubbingSpanExporter

    n, rate, secret = int(params["spans"]), float(params["rate"]), str(params["secret"])
    known = KnownSecrets()
    exporter: Any = OTLPSpanExporter(endpoint=params["endpoint"])
    if params.get("scrub", True):
        exporter = ScrubbingSpanExporter(exporter, known)
        encoding.install()
        outbox.install([(exporter, "inner")], 4 * 2**20)  # the hub's default OTEL_PYTHON_JUPYTERHUB_SPAN_BUFFER
    processor = BatchSpanProcessor(exporter, **params["bsp"])
    batch = getattr(processor, "_batch_processor", None)
    provider = TracerProvider(resource=Resource.create({"service.name": "jupyterhub", VARIANT_KEY: "pipeline"}))
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("jh_otel.benchmark")
    max_queue = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    hub_shape = params.get("shape", "hub") == "hub"
    i = 0
    while i < n:
        if rate and i % 50 < SQL_PER_REQUEST + 1:
            ahead = t0 + i / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
        if batch is not None and i % 500 < SQL_PER_REQUEST + 1:
            max_queue = max(max_queue, len(batch._queue))
        user = f"user{i % SMALL_USERS:05d}"
        token = f"{secret}{i:07d}"
        # hub shape: a service's API request (its token in the Authorization header, and in the URL for one request
        # in ten) and the request's SQL; worst case: every span a request with a token in its URL
        query = f"token={token}&include_stopped_servers=1" if not hub_shape or i % 110 == 0 else "state=ready"
        span = tracer.start_span(
            SPAN_NAME,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": "GET",
                "url.scheme": "http",
                "url.path": f"/hub/api/users/{user}",
                "url.query": query,
                "http.route": "/hub/api/users/{user_name}",
                "server.address": "127.0.0.1",
                "server.port": 8081,
                "network.protocol.version": "1.1",
                "client.address": "127.0.0.1",
                "user_agent.original": "python-requests/2.32.3",
            },
        )
        known.add(span.get_span_context().trace_id, [token])  # what the hub's request handling does
        i += 1
        if hub_shape:
            context = set_span_in_context(span)
            for table in SQL_TABLES[: min(SQL_PER_REQUEST, n - i)]:
                tracer.start_span(
                    f"SELECT {table}",
                    context=context,
                    kind=SpanKind.CLIENT,
                    attributes={
                        "db.system": "sqlite",
                        "db.name": "jupyterhub.sqlite",
                        "db.statement": f"SELECT {table}.id, {table}.name FROM {table} WHERE {table}.id = ?",
                        "db.operation": "SELECT",
                        "db.sql.table": table,
                    },
                ).end()
                i += 1
        span.set_attribute("http.response.status_code", 200)
        span.set_attribute("jupyterhub.service.name", "e2e")
        span.end()
    produced = time.perf_counter()
    flushed_ok = processor.force_flush()
    flushed = time.perf_counter()
    cpu = time.process_time() - cpu0
    provider.shutdown()
    return {
        "created": n,
        "producer_s": round(produced - t0, 3),
        "end_to_end_s": round(flushed - t0, 3),
        "force_flush_ok": flushed_ok,
        "cpu_s": round(cpu, 3),
        "max_queue_seen": max_queue,
    }


def pipeline_row(
    receiver: Any,
    n: int,
    rate: float,
    bsp: dict[str, int],
    scrub: bool = True,
    shape: str = "hub",
    pythonpath: str = "",
) -> dict[str, Any]:
    """One child run into ``receiver`` (an ``OTLPReceiver``), checked span by span."""
    from hubs import log

    from jh_otel.scrub import REDACTED

    receiver.clear()
    secret = secrets.token_hex(8)
    params = {
        "endpoint": receiver.http_traces_url,
        "spans": n,
        "rate": rate,
        "secret": secret,
        "bsp": bsp,
        "scrub": scrub,
        "shape": shape,
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}  # nothing from the environment
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), json.dumps(params)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120 + n / 500,
    )
    if done.returncode != 0:
        raise RuntimeError(f"pipeline child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    child = json.loads(done.stdout.strip().splitlines()[-1])
    receiver.wait_for(lambda r: len(r.spans()) >= n, timeout=10)
    spans = receiver.spans()
    unique = len({s.span_id for s in spans})
    e2e = child["end_to_end_s"]
    result = {
        **child,
        "bsp": bsp or "SDK defaults (queue 2048, batch 512, schedule delay 5000 ms)",
        "paced_at": rate or None,
        "scrubbing": scrub,
        "shape": shape,
        "received": len(spans),
        "received_unique": unique,
        "lost": n - unique,
        "exports": len(receiver.requests("traces")),
        "producer_spans_per_s": round(n / child["producer_s"], 1) if child["producer_s"] else None,
        "spans_per_s_end_to_end": round(unique / e2e, 1) if e2e else None,
        "spans_with_token": sum(1 for s in spans if secret in s.name or secret in repr(s.attributes)),
        "export_bodies_with_token": sum(1 for body in receiver.raw_bodies("traces") if secret.encode() in body),
        "spans_with_redacted_query": sum(1 for s in spans if f"token={REDACTED}" in str(s.attributes.get("url.query"))),
        "stderr_tail": done.stderr[-1000:],
    }
    receiver.clear()
    log(
        f"  pipeline {n:,} {shape}-shaped spans{f' paced at {rate:,.0f}/s' if rate else ''}"
        f"{'' if scrub else ', no scrubbing'}: received {unique:,} (lost {result['lost']}), "
        f"{result['spans_per_s_end_to_end']} spans/s end to end, producer {result['producer_spans_per_s']} spans/s, "
        f"{result['exports']} exports, max queue {child['max_queue_seen']}, "
        f"token in {result['spans_with_token']} spans / {result['export_bodies_with_token']} bodies"
    )
    return result


def run(n: int, paced_n: int, rate: float, pythonpath: str = "") -> dict[str, Any]:
    """The four rows, each into a fresh in-process receiver; and the summary the targets are judged on."""
    from otlp_receiver import OTLPReceiver

    rows: dict[str, Any] = {}
    receiver = OTLPReceiver().start()
    try:
        # as fast as the producer loop goes; the queue holds every span, so nothing can be dropped
        rows["unpaced"] = pipeline_row(receiver, n, 0, {"max_queue_size": n}, pythonpath=pythonpath)
        # at the target rate with the SDK's default batch settings, as the hub runs them
        rows["paced"] = pipeline_row(receiver, paced_n, rate, {}, pythonpath=pythonpath)
        # the worst case for scrubbing: a token in every span's URL
        rows["worst_case"] = pipeline_row(receiver, n, 0, {"max_queue_size": n}, shape="worst", pythonpath=pythonpath)
        # for reference: the first row without ScrubbingSpanExporter (tokens do arrive here), to see its share
        rows["no_scrubbing"] = pipeline_row(receiver, n, 0, {"max_queue_size": n}, scrub=False, pythonpath=pythonpath)
    finally:
        receiver.stop()
    paced = rows["paced"]
    scrubbed = [rows[key] for key in ("unpaced", "paced", "worst_case")]
    summary = {
        "paced_lost": paced["lost"],
        "paced_rate": rate,
        "paced_producer_spans_per_s": paced["producer_spans_per_s"],
        # the producer kept the pace: the pipeline took 5,000 spans/s without holding the producing thread back
        "paced_kept_pace": (paced["producer_spans_per_s"] or 0) >= 0.98 * rate,
        "unpaced_spans_per_s": rows["unpaced"]["spans_per_s_end_to_end"],
        "worst_case_spans_per_s": rows["worst_case"]["spans_per_s_end_to_end"],
        "no_scrubbing_spans_per_s": rows["no_scrubbing"]["spans_per_s_end_to_end"],
        "lost_any_scrubbed_row": sum(r["lost"] for r in scrubbed),
        "tokens_leaked": sum(r["spans_with_token"] + r["export_bodies_with_token"] for r in scrubbed),
    }
    if not summary["paced_kept_pace"]:
        summary["invalid"] = f"the producer did not keep {rate:,.0f} spans/s (machine busy?)"
    return {"rows": rows, "summary": summary}


if __name__ == "__main__":
    print(json.dumps(pipeline_child(json.loads(sys.argv[1]))))
