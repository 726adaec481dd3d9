#!/usr/bin/env python
"""Traces on: a plain hub against a jh_otel hub at full sampling, and the span pipeline's throughput.

Run from the repository root with the project's venv::

    .venv/bin/python benchmarks/traces.py            # full: run.py's FULL load runs, 50,000 pipeline spans
    .venv/bin/python benchmarks/traces.py --quick    # smoke: one round of 3 s, 20,000 pipeline spans

Two parts (see benchmarks/README.md):

- hub: a plain hub and a jh_otel hub with ``OTEL_TRACES_EXPORTER=otlp``, ``OTEL_TRACES_SAMPLER=always_on`` and OTLP
  to a live in-process ``OTLPReceiver``; 200 users; ``/hub/health`` and ``/hub/api/users`` throughput measured as in
  run.py (ABBA rounds). Then every request span the receiver got is matched against the requests the jh_otel hub
  served, so lost spans show. If spans were lost with the SDK's default batch settings, a separate row repeats the
  measurement with a larger ``OTEL_BSP_MAX_QUEUE_SIZE`` and a shorter ``OTEL_BSP_SCHEDULE_DELAY``.
- pipeline: in a child process (so it does not share a GIL with the receiver), hub-like request spans through
  ``BatchSpanProcessor(ScrubbingSpanExporter(OTLPSpanExporter(http)))`` to the receiver: spans/s end to end,
  received == created, and no token in anything that arrived.

Prints a markdown table and writes benchmarks/results-traces.json.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402
from run import (  # noqa: E402
    AUTH,
    CONNECTIONS,
    FULL,
    HEALTH_RATIO_TARGET,
    OTEL,
    PLAIN,
    QUICK,
    SMALL_USERS,
    LoadResult,
    Mode,
    code_state,
    create_users,
    fmt,
    log,
    otel_env,
    pick_loader,
    rss,
    stop_all,
    throughput,
    user_count,
    verdict,
)

from hubproc import Hub  # noqa: E402
from otlp_receiver import OTLPReceiver, Span  # noqa: E402

# targets from the issue ("Traces")
USERS_API_RATIO_TARGET = 0.95
SPANS_PER_S_TARGET = 5000.0

HEALTH, USERS_API = "/hub/health", "/hub/api/users"
PATHS = (HEALTH, USERS_API)
VARIANT_KEY = "benchmark.variant"  # resource attribute that tells the hubs' spans apart at the receiver
TUNED = "jh_otel_bsp_tuned"
# the separate row, run when the SDK defaults (queue 2048, schedule delay 5000 ms, batch 512) lost spans
TUNED_BSP = {"OTEL_BSP_MAX_QUEUE_SIZE": "32768", "OTEL_BSP_SCHEDULE_DELAY": "1000"}
FLUSH_TIMEOUT_S = 30.0  # how long to wait for the hub's batch span processor after the load
FLUSH_QUIET_S = 7.0  # ... or until no new span arrived for longer than the default 5 s schedule delay
QUEUE_FULL = "Queue full, dropping"  # the SDK's warning (logged at most once per 20 s)

PIPELINE_SPANS = {"full": 50_000, "quick": 20_000}
PIPELINE_PACED_SPANS = {"full": 50_000, "quick": 10_000}
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


# --------------------------------------------------------------------------
# Hub part
# --------------------------------------------------------------------------


class CountingLoader:
    """Wraps a run.py load generator: counts the requests each (port, path) was sent, warm-up runs included."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.served: Counter[tuple[int, str]] = Counter()
        self.seconds: Counter[tuple[int, str]] = Counter()

    def __call__(self, port: int, path: str, headers: dict[str, str], duration: float, connections: int) -> LoadResult:
        result: LoadResult = self.loader(port, path, headers, duration, connections)
        self.served[(port, path)] += result.ok + result.errors
        self.seconds[(port, path)] += result.elapsed
        return result


def traces_env(endpoint: str, label: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """run.py's environment with traces on at full sampling, labelled for the receiver."""
    env, _ = otel_env(endpoint, traces="otlp")
    env["OTEL_TRACES_SAMPLER"] = "always_on"
    env["OTEL_RESOURCE_ATTRIBUTES"] = f"{VARIANT_KEY}={label}"
    env.update(extra or {})
    return env


def request_path(span: Span) -> str:
    attributes = span.attributes
    target = attributes.get("url.path") or attributes.get("http.target") or ""
    return str(target).split("?", 1)[0]


def is_request_span(span: Span, path: str) -> bool:
    """A server span of ``GET path`` (not of a longer route such as ``/hub/api/users/{user_name}``)."""
    if span.kind != "SERVER" or not span.name.startswith(f"GET {path}"):
        return False
    found = request_path(span)
    return found == path if found else span.name == f"GET {path}"


def is_sql_span(span: Span) -> bool:
    return any(key.startswith("db.") for key in span.attributes)


def wait_for_flush(receiver: OTLPReceiver, label: str, t0: int, t1: int, served: dict[str, int]) -> dict[str, Any]:
    """Poll the receiver until every request has its span, or nothing new arrived for FLUSH_QUIET_S, or
    FLUSH_TIMEOUT_S passed."""
    start = time.monotonic()
    last, last_change = -1, start
    complete = False
    for _ in range(int(FLUSH_TIMEOUT_S) + 2):
        spans = window_spans(receiver, label, t0, t1)
        got = {path: sum(1 for s in spans if is_request_span(s, path)) for path in PATHS}
        now = time.monotonic()
        if all(got[path] >= served[path] for path in PATHS):
            complete = True
            break
        if len(spans) != last:
            last, last_change = len(spans), now
        elif now - last_change >= FLUSH_QUIET_S:
            break
        if now - start >= FLUSH_TIMEOUT_S:
            break
        time.sleep(1.0)
    return {"waited_s": round(time.monotonic() - start, 1), "every_request_has_a_span": complete}


def window_spans(receiver: OTLPReceiver, label: str, t0: int, t1: int) -> list[Span]:
    """The spans of hub ``label`` that started between t0 and t1 (time.time_ns(), the SDK's clock too)."""
    return [s for s in receiver.spans() if s.resource.get(VARIANT_KEY) == label and t0 <= s.start_time_unix_nano <= t1]


def span_accounting(
    receiver: OTLPReceiver, label: str, t0: int, t1: int, served: dict[str, int], loaded_s: dict[str, float]
) -> dict[str, Any]:
    flush = wait_for_flush(receiver, label, t0, t1, served)
    spans = window_spans(receiver, label, t0, t1)
    out: dict[str, Any] = {"flush": flush, "spans_in_window": len(spans)}
    accounted: set[str] = set()
    for path in PATHS:
        requests_spans = [s for s in spans if is_request_span(s, path)]
        traces = {s.trace_id for s in requests_spans}
        in_traces = [s for s in spans if s.trace_id in traces]
        accounted |= traces
        sql = sum(1 for s in in_traces if is_sql_span(s))
        n = len(requests_spans)
        out[path] = {
            "requests_served": served[path],  # as counted by the load generator, warm-up included
            "request_spans_received": n,
            "unique_request_spans": len({s.span_id for s in requests_spans}),
            # > 0: requests without a span (lost); < 0: requests the hub served that the load generator did not
            # count (wrk stops with requests in flight)
            "missing": served[path] - n,
            "lost": max(0, served[path] - n),
            "spans_in_these_traces": len(in_traces),
            "spans_per_request": round(len(in_traces) / n, 2) if n else None,
            "sql_spans": sql,
            "sql_spans_per_request": round(sql / n, 2) if n else None,
            "loaded_s": round(loaded_s[path], 2),
            "spans_per_s_under_load": round(len(in_traces) / loaded_s[path], 1) if loaded_s[path] else None,
            "span_names": dict(Counter(s.name for s in in_traces).most_common(12)),
        }
    others = [s for s in spans if s.trace_id not in accounted]
    out["other_spans"] = len(others)
    out["other_span_names"] = dict(Counter(s.name for s in others).most_common(12))
    return out


def measure_row(label: str, hubs: dict[str, Hub], receiver: OTLPReceiver, mode: Mode, loader: Any) -> dict[str, Any]:
    """run.py's interleaved throughput of both paths on ``hubs`` (plain and a jh_otel hub), then the span count."""
    counting = CountingLoader(loader)
    port = hubs[OTEL].hub_port
    t0 = time.time_ns()
    row: dict[str, Any] = {"label": label}
    log(f"[{label}] {HEALTH} throughput")
    row["health"] = throughput(hubs, HEALTH, {}, mode, counting)
    log(f"[{label}] {USERS_API} throughput at {SMALL_USERS} users")
    row["users_api"] = throughput(hubs, USERS_API, AUTH, mode, counting)
    t1 = time.time_ns()
    served = {path: counting.served[(port, path)] for path in PATHS}
    loaded_s = {path: counting.seconds[(port, path)] for path in PATHS}
    log(f"[{label}] waiting for the hub's spans (requests served: {served})")
    row["spans"] = span_accounting(receiver, label, t0, t1, served, loaded_s)
    text = hubs[OTEL].log()
    row["queue_full_warnings"] = text.count(QUEUE_FULL)
    row["exporter_errors_in_log"] = sum(text.count(s) for s in ("Failed to export", "Exception while exporting"))
    row["rss"] = {v: rss(h) for v, h in hubs.items()}
    for path in PATHS:
        s = row["spans"][path]
        log(
            f"[{label}] {path}: served {s['requests_served']}, request spans {s['request_spans_received']}, "
            f"lost {s['lost']}, spans/request {s['spans_per_request']} (SQL {s['sql_spans_per_request']}), "
            f"{s['spans_per_s_under_load']} spans/s under load"
        )
    log(f"[{label}] flush {row['spans']['flush']}, '{QUEUE_FULL}' warnings: {row['queue_full_warnings']}")
    return row


def row_lost(row: dict[str, Any]) -> bool:
    return bool(row["queue_full_warnings"]) or any(row["spans"][path]["lost"] for path in PATHS)


def hub_part(
    receiver: OTLPReceiver, workdir: Path, mode: Mode, loader: Any, bsp_tuned: str, failures: list[str]
) -> dict[str, Any]:
    endpoint = receiver.grpc_endpoint if run.PROTOCOL["value"] == "grpc" else receiver.http_endpoint
    env = traces_env(endpoint, OTEL)
    out: dict[str, Any] = {"env": {k: v for k, v in env.items() if not k.endswith("_PORT")}, "rows": []}
    hubs: dict[str, Hub] = {}
    tuned: Hub | None = None
    try:
        # run.py's start_pair, but every hub is in ``hubs`` before it starts, so a failed start leaves none running
        hubs = {PLAIN: Hub(workdir / "main" / PLAIN, env, wrapper=False), OTEL: Hub(workdir / "main" / OTEL, env)}
        for variant, hub in hubs.items():
            t0 = time.monotonic()
            hub.start(timeout=120)
            log(f"{variant} hub up in {time.monotonic() - t0:.1f}s (pid {hub.proc.pid}, hub port {hub.hub_port})")
        out["users_before"] = {v: user_count(h) for v, h in hubs.items()}  # JupyterHub creates an "admin" user
        log(f"creating {SMALL_USERS} users on each hub (there were {out['users_before']})")
        out["create_users_s"] = create_users(hubs, 0, SMALL_USERS)
        row = measure_row(OTEL, hubs, receiver, mode, loader)
        out["rows"].append(row)
        if row["spans"]["spans_in_window"] == 0:
            failures.append(f"no span of the jh_otel hub arrived; hub log tail:\n{hubs[OTEL].log()[-3000:]}")
        if bsp_tuned == "always" or (bsp_tuned == "auto" and row_lost(row)):
            settings = ", ".join(f"{k}={v}" for k, v in TUNED_BSP.items())
            log(f"separate row: jh_otel hub with {settings} (below, 'jh_otel' is that hub)")
            tuned = Hub(workdir / TUNED, traces_env(endpoint, TUNED, TUNED_BSP), wrapper=True)
            tuned.start(timeout=120)
            create_users({TUNED: tuned}, 0, SMALL_USERS)
            tuned_row = measure_row(TUNED, {PLAIN: hubs[PLAIN], OTEL: tuned}, receiver, mode, loader)
            tuned_row["bsp"] = TUNED_BSP
            out["rows"].append(tuned_row)
    except Exception as error:  # a jh_otel hub that does not start, say: report it, go on with the pipeline
        failures.append(f"hub part: {type(error).__name__}: {str(error)[-3000:]}")
        log(f"hub part failed: {error}")
    finally:
        everything = {**hubs, **({TUNED: tuned} if tuned else {})}
        exited = [hub for hub in everything.values() if hub.proc is not None and hub.proc.poll() is not None]
        out["shutdown_s"] = stop_all(everything)
        for hub in exited:  # Hub.stop() leaves the process group of a hub that exited by itself (its proxy, say)
            hub._reap_children()
    return out


# --------------------------------------------------------------------------
# Pipeline part
# --------------------------------------------------------------------------


def pipeline_child(params: dict[str, Any]) -> dict[str, Any]:
    """In the child process: ``params['spans']`` hub-like spans through BatchSpanProcessor(ScrubbingSpanExporter(
    OTLPSpanExporter)) with jh_otel's span encoder (the hub's pipeline; ``scrub=False``: the plain exporter with its
    own encoder), paced at ``params['rate']`` spans/s (0: as fast as the loop goes), then force_flush."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import SpanKind, set_span_in_context

    from jh_otel.tracing import encoding
    from jh_otel.tracing.scrubbing import KnownSecrets, ScrubbingSpanExporter

    n, rate, secret = int(params["spans"]), float(params["rate"]), str(params["secret"])
    known = KnownSecrets()
    exporter: Any = OTLPSpanExporter(endpoint=params["endpoint"])
    if params.get("scrub", True):
        exporter = ScrubbingSpanExporter(exporter, known)
        encoding.install()
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
    receiver: OTLPReceiver, n: int, rate: float, bsp: dict[str, int], scrub: bool = True, shape: str = "hub"
) -> dict[str, Any]:
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
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--pipeline-child", json.dumps(params)],
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
    log(
        f"  pipeline {n:,} {shape}-shaped spans{f' paced at {rate:,.0f}/s' if rate else ''}"
        f"{'' if scrub else ', no scrubbing'}: "
        f"received {unique:,} "
        f"(lost {result['lost']}), {result['spans_per_s_end_to_end']} spans/s end to end, producer "
        f"{result['producer_spans_per_s']} spans/s, {result['exports']} exports, max queue {child['max_queue_seen']}, "
        f"token in {result['spans_with_token']} spans / {result['export_bodies_with_token']} bodies"
    )
    return result


def pipeline_part(n: int, paced_n: int, rate: float, failures: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    receiver = OTLPReceiver().start()
    try:
        # as fast as the producer loop goes; the queue holds every span, so nothing can be dropped
        out["unpaced"] = pipeline_row(receiver, n, 0, {"max_queue_size": n})
        # at the target rate with the SDK's default batch settings, as the hub runs them
        out["paced"] = pipeline_row(receiver, paced_n, rate, {})
        # the worst case for scrubbing: a token in every span's URL
        out["unpaced_worst_case"] = pipeline_row(receiver, n, 0, {"max_queue_size": n}, shape="worst")
        # for reference: the first row without ScrubbingSpanExporter (tokens do arrive here), to see its share
        out["unpaced_no_scrubbing"] = pipeline_row(receiver, n, 0, {"max_queue_size": n}, scrub=False)
        for key in ("unpaced", "paced", "unpaced_worst_case"):
            row = out[key]
            if row["lost"] or row["spans_with_token"] or row["export_bodies_with_token"]:
                failures.append(
                    f"pipeline {key}: lost {row['lost']}, token in {row['spans_with_token']} spans / "
                    f"{row['export_bodies_with_token']} export bodies"
                )
    except Exception as error:
        failures.append(f"pipeline part: {type(error).__name__}: {str(error)[-3000:]}")
        log(f"pipeline part failed: {error}")
    finally:
        receiver.stop()
    return out


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def hub_rows(row: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    tag = "" if row["label"] == OTEL else f"[{', '.join(f'{k}={v}' for k, v in TUNED_BSP.items())}] "
    rows: list[tuple[str, str, str, str, str]] = []
    for path, key, target in (
        (HEALTH, "health", HEALTH_RATIO_TARGET),
        (USERS_API, "users_api", USERS_API_RATIO_TARGET),
    ):
        t = row[key]
        paired = t["paired_ratio_median"]
        what = f"{path} ({SMALL_USERS} users, SQL spans on)" if path == USERS_API else path
        rows.append(
            (
                f"{tag}{what} throughput, req/s (median of {len(t[PLAIN]['runs'])} rounds; ratio: median of "
                "per-round ratios)",
                fmt(t[PLAIN]["rps_median"]),
                fmt(t[OTEL]["rps_median"]),
                f"{paired:.2f}x" if paired is not None else "—",
                f">= {target}x: {verdict(paired is not None and paired >= target)}",
            )
        )
        p, o = t[PLAIN]["hub_cpu_per_request_us_median"], t[OTEL]["hub_cpu_per_request_us_median"]
        rows.append(
            (
                f"{tag}{path} hub CPU per request, us",
                fmt(p),
                fmt(o),
                run.ratio(p, o),
                "",
            )
        )
    for path in PATHS:
        s = row["spans"][path]
        rows.append(
            (
                f"{tag}{path}: requests the jh_otel hub served / request spans received (lost)",
                "—",
                f"{fmt(s['requests_served'])} / {fmt(s['request_spans_received'])} ({fmt(s['lost'])})",
                "",
                f"no loss: {verdict(not s['lost'] and not row['queue_full_warnings'])}",
            )
        )
    h, u = row["spans"][HEALTH], row["spans"][USERS_API]
    rows.append(
        (
            f"{tag}spans per request: {HEALTH} / {USERS_API} (of which SQL)",
            "—",
            f"{fmt(h['spans_per_request'], 2)} / {fmt(u['spans_per_request'], 2)} "
            f"({fmt(u['sql_spans_per_request'], 2)})",
            "",
            "",
        )
    )
    rows.append(
        (
            f"{tag}spans/s the jh_otel hub made under load: {HEALTH} / {USERS_API}",
            "—",
            f"{fmt(h['spans_per_s_under_load'], 0)} / {fmt(u['spans_per_s_under_load'], 0)}",
            "",
            "",
        )
    )
    rows.append(
        (
            f"{tag}'{QUEUE_FULL} span' warnings in the jh_otel hub's log (at most one per 20 s)",
            "—",
            fmt(row["queue_full_warnings"]),
            "",
            "",
        )
    )
    return rows


def pipeline_rows(p: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """One table row per pipeline run, then the token check over every run that scrubbed."""
    hub_shape = f"hub-shaped traces (1 request + {SQL_PER_REQUEST} SQL spans)"
    runs = [
        ("unpaced", f"{hub_shape} as fast as the loop goes (queue = all spans)", True),
        ("paced", f"{hub_shape} paced at {{paced_at:,.0f}}/s, SDK-default batch settings", True),
        (
            "unpaced_worst_case",
            "worst case for scrubbing: a token in every span's URL, as fast as the loop goes",
            False,
        ),
        ("unpaced_no_scrubbing", f"for reference: {hub_shape}, the plain OTLPSpanExporter (no scrubbing)", False),
    ]
    rows: list[tuple[str, str, str, str, str]] = []
    for key, label, judged in runs:
        r = p.get(key)
        if not r:
            continue
        target = ""
        if judged:  # paced: the producer kept the pace and nothing was lost; unpaced: the rate itself
            if r["paced_at"]:
                ok = (r["producer_spans_per_s"] or 0) >= 0.98 * r["paced_at"]
            else:
                ok = (r["spans_per_s_end_to_end"] or 0) >= SPANS_PER_S_TARGET
            target = f">= {SPANS_PER_S_TARGET:,.0f} spans/s without loss: {verdict(ok and not r['lost'])}"
        rows.append(
            (
                f"pipeline, {r['created']:,} spans, {label.format(**r)}: spans/s end to end (received / created)",
                "—",
                f"{fmt(r['spans_per_s_end_to_end'], 0)} ({fmt(r['received_unique'])} / {fmt(r['created'])})",
                "",
                target,
            )
        )
    scrubbed = [p[key] for key, _, _ in runs[:3] if p.get(key)]
    if scrubbed:
        leaks = any(r["spans_with_token"] or r["export_bodies_with_token"] for r in scrubbed)
        rows.append(
            (
                "pipeline: received spans / export bodies containing a token (scrubbed runs)",
                "—",
                " + ".join(f"{r['spans_with_token']} / {r['export_bodies_with_token']}" for r in scrubbed),
                "",
                "none: " + verdict(not leaks),
            )
        )
    return rows


def table(results: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str, str]] = []
    for row in results.get("hub", {}).get("rows", []):
        rows += hub_rows(row)
    rows += pipeline_rows(results.get("pipeline", {}))
    lines = ["| metric | plain | jh_otel | ratio | target |", "|---|---:|---:|---:|---|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    run.common_arguments(
        parser,
        quick="run.py's quick load runs, fewer pipeline spans",
        output="results-traces.json",
        protocol="http/protobuf",
        why="default http/protobuf, the one README.md recommends for the hub",
    )
    parser.add_argument("--part", choices=("all", "hub", "pipeline"), default="all")
    parser.add_argument(
        "--bsp-tuned",
        choices=("auto", "always", "never"),
        default="auto",
        help="the separate row with a larger span queue (auto: only when the SDK defaults lost spans)",
    )
    parser.add_argument("--spans", type=int, help="pipeline spans (default 50,000; 20,000 with --quick)")
    parser.add_argument("--pipeline-rate", type=float, default=SPANS_PER_S_TARGET, help="paced pipeline row, spans/s")
    parser.add_argument("--pipeline-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pipeline_child:
        print(json.dumps(pipeline_child(json.loads(args.pipeline_child))))
        return 0

    run.PROTOCOL["value"] = args.otlp_protocol
    mode = QUICK if args.quick else FULL
    n = args.spans or PIPELINE_SPANS[mode.name]
    paced_n = args.spans or PIPELINE_PACED_SPANS[mode.name]
    if not 1 <= n <= 1_000_000:
        parser.error("--spans must be between 1 and 1,000,000")
    if not 1 <= args.pipeline_rate <= 1_000_000:
        parser.error("--pipeline-rate must be between 1 and 1,000,000")
    try:
        loader, tool = pick_loader(args.loadgen)
    except ValueError as error:
        parser.error(str(error))
    dropped = sorted(k for k in os.environ if k.startswith("OTEL_BSP_"))
    for key in dropped:  # the default row runs the SDK defaults; the tuned row sets its own
        del os.environ[key]
    if dropped:
        log(f"ignoring {dropped} from the environment")
    log(f"mode {mode.name}; load generator: {tool}; {CONNECTIONS} connections; OTLP {args.otlp_protocol}")

    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="jh_otel_traces_"))
    failures: list[str] = []
    packages = ("opentelemetry-exporter-otlp-proto-http", "opentelemetry-instrumentation-tornado")
    results: dict[str, Any] = {
        **run.run_header(mode, tool, args.otlp_protocol, workdir, packages),
        "targets": {
            "health_ratio": HEALTH_RATIO_TARGET,
            "users_api_ratio": USERS_API_RATIO_TARGET,
            "spans_per_s": SPANS_PER_S_TARGET,
        },
    }
    try:
        if args.part in ("all", "hub"):
            receiver = OTLPReceiver().start()
            try:
                results["hub"] = hub_part(receiver, workdir, mode, loader, args.bsp_tuned, failures)
                results["hub"]["otlp_exports_received"] = len(receiver.requests())
            finally:
                receiver.stop()
                del receiver  # its spans are no longer needed
        if args.part in ("all", "pipeline"):
            log(f"pipeline: {n:,} spans unpaced, {paced_n:,} paced at {args.pipeline_rate:,.0f}/s")
            results["pipeline"] = pipeline_part(n, paced_n, args.pipeline_rate, failures)
    finally:
        results["failures"] = failures
        results["run_time_s"] = round(time.monotonic() - started, 1)
        results["code_at_end"] = code_state()
        results["code_changed_during_run"] = results["code_at_end"] != results["code"]
        if results["code_changed_during_run"]:
            log(f"WARNING: src/ or tests/ changed during the run: {results['code']} -> {results['code_at_end']}")
        args.output.write_text(json.dumps(results, indent=2) + "\n")
        if failures or args.keep:
            log(f"hub logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(table(results))
    print()
    for failure in failures:
        print(f"FAILED: {failure}\n")
    print(
        f"load generator: {tool}; mode: {mode.name}; OTLP {args.otlp_protocol}; code {results['code']['head']}"
        f"{' + uncommitted changes' if results['code']['uncommitted'] else ''}; run time {results['run_time_s']}s; "
        f"results: {args.output}"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
