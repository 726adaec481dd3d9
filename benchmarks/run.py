#!/usr/bin/env python
"""Overhead of jh_otel on a real JupyterHub: a plain hub against a hub under ``opentelemetry-instrument``.

Run from the repository root with the project's venv::

    .venv/bin/python benchmarks/run.py            # full: 10 s per load run, 5 interleaved rounds
    .venv/bin/python benchmarks/run.py --quick    # smoke: 3 s per load run, 1 round

Both hubs run at the same time (on loopback only) and every load measurement alternates between them (ABBA
order), so slow drift of the machine hits both alike. See benchmarks/README.md for what is measured and how.
Prints a markdown table and writes benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from hubproc import SERVICE_TOKEN, Hub, free_port  # noqa: E402
from otlp_receiver import OTLPReceiver  # noqa: E402

HOST = "127.0.0.1"
AUTH = {"Authorization": f"token {SERVICE_TOKEN}"}
MIB = 2**20
PLAIN, OTEL = "plain", "jh_otel"
VARIANTS = (PLAIN, OTEL)

# targets from the issue
HEALTH_RATIO_TARGET = 0.8
SCRAPE_MS_TARGET = 50.0
RSS_DELTA_MIB_TARGET = 15.0
SHUTDOWN_S_TARGET = 2.0


@dataclass(frozen=True)
class Mode:
    name: str
    duration: float  # seconds per measured load run
    warmup: float  # seconds of unmeasured load before the rounds
    rounds: int  # interleaved rounds per endpoint and variant
    scrapes: int  # timed scrapes per endpoint
    probe: float  # seconds of the event-loop latency probe
    shutdown_reps: int  # pairs of hubs for the shutdown measurement


FULL = Mode("full", duration=10, warmup=3, rounds=5, scrapes=20, probe=8, shutdown_reps=3)
QUICK = Mode("quick", duration=3, warmup=1, rounds=1, scrapes=20, probe=4, shutdown_reps=1)

SMALL_USERS = 200
LARGE_USERS = 10_000
BATCH = 1000
CONNECTIONS = 4  # the hub is one single-threaded event loop; a few connections keep it busy


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------
# Load generators
# --------------------------------------------------------------------------


@dataclass
class LoadResult:
    tool: str
    ok: int
    errors: int
    elapsed: float
    loadgen_cpu: float  # CPU seconds the load generator used

    @property
    def rps(self) -> float:
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0


_WRK_TOTAL = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)\b")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s*(\d+)")
_WRK_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_UNIT_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def wrk_load(port: int, path: str, headers: dict[str, str], duration: float, connections: int) -> LoadResult:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "10s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    command.append(f"http://{HOST}:{port}{path}")
    before = _children_cpu()
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    cpu = _children_cpu() - before
    out = done.stdout
    total = _WRK_TOTAL.search(out)
    if done.returncode != 0 or total is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{out}\n{done.stderr}")
    requests_done = int(total.group(1))
    elapsed = float(total.group(2)) * _UNIT_SECONDS[total.group(3)]
    non2xx = int(m.group(1)) if (m := _WRK_NON2XX.search(out)) else 0
    socket_errors = sum(map(int, m.groups())) if (m := _WRK_SOCKET.search(out)) else 0
    return LoadResult("wrk", requests_done - non2xx, non2xx + socket_errors, elapsed, cpu)


def python_load(port: int, path: str, headers: dict[str, str], duration: float, connections: int) -> LoadResult:
    """Threads, each with one keep-alive http.client connection, as fast as the hub answers."""
    max_per_thread = 2_000_000
    ok = [0] * connections
    errors = [0] * connections
    start_gate = threading.Event()
    stop_at = [0.0]

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        start_gate.wait(30)
        for _ in range(max_per_thread):
            if time.monotonic() >= stop_at[0]:
                break
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                response.read()
                if 200 <= response.status < 400:
                    ok[i] += 1
                else:
                    errors[i] += 1
            except (OSError, http.client.HTTPException):
                errors[i] += 1
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=10)
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(connections)]
    for thread in threads:
        thread.start()
    cpu_before = _self_cpu()
    start = time.monotonic()
    stop_at[0] = start + duration
    start_gate.set()
    for thread in threads:
        thread.join(max(0.1, stop_at[0] + 15 - time.monotonic()))
    elapsed = time.monotonic() - start
    # the benchmark process also hosts the OTLP receiver; its share is small (one export per 5 s)
    return LoadResult("python", sum(ok), sum(errors), elapsed, _self_cpu() - cpu_before)


# --------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------


def hub_cpu(hub: Hub) -> float:
    times = psutil.Process(hub.proc.pid).cpu_times()
    return times.user + times.system


def measure_load(hub: Hub, path: str, headers: dict[str, str], duration: float, loader) -> dict[str, Any]:
    machine_before = psutil.cpu_times()
    cpu_before = hub_cpu(hub)
    result: LoadResult = loader(hub.hub_port, path, headers, duration, CONNECTIONS)
    cpu = hub_cpu(hub) - cpu_before
    machine_after = psutil.cpu_times()
    busy = lambda t: t.user + t.system + t.nice + getattr(t, "irq", 0) + getattr(t, "softirq", 0)  # noqa: E731
    total = lambda t: busy(t) + t.idle + getattr(t, "iowait", 0)  # noqa: E731
    wall = max(1e-9, total(machine_after) - total(machine_before))
    machine_busy = (busy(machine_after) - busy(machine_before)) / wall
    steal = (getattr(machine_after, "steal", 0) - getattr(machine_before, "steal", 0)) / wall
    return {
        "tool": result.tool,
        "ok": result.ok,
        "errors": result.errors,
        "elapsed_s": round(result.elapsed, 3),
        "rps": round(result.rps, 1),
        "hub_cpu_s": round(cpu, 3),
        "hub_cpu_per_request_us": round(1e6 * cpu / result.ok, 1) if result.ok else None,
        "hub_cpu_utilisation": round(cpu / result.elapsed, 3) if result.elapsed else None,
        "loadgen_cpu_utilisation": round(result.loadgen_cpu / result.elapsed, 3) if result.elapsed else None,
        "machine_busy_fraction": round(machine_busy, 3),  # of all cores
        "machine_steal_fraction": round(steal, 3),  # taken by the hypervisor, of all cores
    }


def throughput(hubs: dict[str, Hub], path: str, headers: dict[str, str], mode: Mode, loader) -> dict[str, Any]:
    for variant in VARIANTS:  # warm-up, not measured
        loader(hubs[variant].hub_port, path, headers, mode.warmup, CONNECTIONS)
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for r in range(mode.rounds):
        order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
        for variant in order:
            run = measure_load(hubs[variant], path, headers, mode.duration, loader)
            runs[variant].append(run)
            log(
                f"  {path} round {r + 1} {variant}: {run['rps']:.0f} req/s, "
                f"{run['hub_cpu_per_request_us']} us CPU/req, hub CPU {run['hub_cpu_utilisation']:.2f}, "
                f"loadgen CPU {run['loadgen_cpu_utilisation']:.2f}, errors {run['errors']}"
            )
    # rounds alternate, so each round is a pair measured seconds apart: their ratio cancels slow drift
    paired = [o["rps"] / p["rps"] for p, o in zip(runs[PLAIN], runs[OTEL]) if p["rps"]]
    log(f"  {path}: per-round jh_otel/plain throughput ratios {[round(r, 2) for r in paired]}")
    summary: dict[str, Any] = {
        "paired_ratios": [round(r, 3) for r in paired],
        "paired_ratio_median": round(statistics.median(paired), 3) if paired else None,
    }
    for variant in VARIANTS:
        rps = [run["rps"] for run in runs[variant]]
        cpu = [run["hub_cpu_per_request_us"] for run in runs[variant] if run["hub_cpu_per_request_us"]]
        summary[variant] = {
            "rps_median": round(statistics.median(rps), 1),
            "rps_min": min(rps),
            "rps_max": max(rps),
            "rps_spread_pct": round(100 * (max(rps) - min(rps)) / statistics.median(rps), 1) if rps else None,
            "hub_cpu_per_request_us_median": round(statistics.median(cpu), 1) if cpu else None,
            "errors": sum(run["errors"] for run in runs[variant]),
            "runs": runs[variant],
        }
    return summary


def get(conn: http.client.HTTPConnection, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    return response.status, response.read()


def scrape_stats(port: int, path: str, headers: dict[str, str] | None, n: int) -> dict[str, Any]:
    """``n`` timed GETs on one keep-alive connection after one untimed one."""
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        status, body = get(conn, path, headers)
        if status != 200:
            raise RuntimeError(f"GET {port}{path} -> {status}: {body[:200]!r}")
        times = []
        for _ in range(n):
            start = time.perf_counter()
            status, body = get(conn, path, headers)
            times.append(time.perf_counter() - start)
            if status != 200:
                raise RuntimeError(f"GET {port}{path} -> {status}")
        times.sort()
        return {
            "bytes": len(body),
            "lines": body.count(b"\n"),
            "median_ms": round(1000 * statistics.median(times), 2),
            "p90_ms": round(1000 * times[int(0.9 * (len(times) - 1))], 2),
            "max_ms": round(1000 * times[-1], 2),
            "n": n,
        }
    finally:
        conn.close()


def metric_value(text: str, name: str) -> float | None:
    match = re.search(rf"^{re.escape(name)}(?:\{{[^}}]*\}})?\s+(\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def hub_metrics_text(hub: Hub) -> str:
    response = requests.get(f"http://{HOST}:{hub.hub_port}/hub/metrics", headers=AUTH, timeout=60)
    response.raise_for_status()
    return response.text


def user_count(hub: Hub) -> int:
    response = requests.get(f"http://{HOST}:{hub.hub_port}/hub/api/users", headers=AUTH, timeout=60)
    response.raise_for_status()
    return len(response.json())


def wait_total_users(hub: Hub, expected: int, timeout: float) -> float | None:
    """Poll /hub/metrics until jupyterhub_total_users == expected; returns seconds waited or None."""
    start = time.monotonic()
    for _ in range(int(timeout / 0.25) + 1):
        if metric_value(hub_metrics_text(hub), "jupyterhub_total_users") == expected:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            break
        time.sleep(0.25)
    return None


def create_users(hubs: dict[str, Hub], start: int, stop: int) -> dict[str, float]:
    """Users user{start}..user{stop-1} on every hub, in batches of BATCH. The hubs are filled at the same time,
    one thread each (each hub is one single-threaded process; the machine has two cores); returns the seconds
    each hub took."""
    took: dict[str, float] = {}
    failures: list[str] = []

    def fill(variant: str, hub: Hub) -> None:
        t0 = time.monotonic()
        session = requests.Session()
        try:
            for first in range(start, stop, BATCH):
                names = [f"user{i:05d}" for i in range(first, min(stop, first + BATCH))]
                response = session.post(
                    f"http://{HOST}:{hub.hub_port}/hub/api/users", headers=AUTH, json={"usernames": names}, timeout=600
                )
                if response.status_code != 201:
                    failures.append(
                        f"{variant}: creating {len(names)} users -> {response.status_code}: {response.text[:300]}"
                    )
                    return
        except requests.RequestException as error:
            failures.append(f"{variant}: {error}")
        finally:
            took[variant] = round(time.monotonic() - t0, 2)

    threads = [threading.Thread(target=fill, args=item, daemon=True) for item in hubs.items()]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 1800
    for thread in threads:
        thread.join(max(0.1, deadline - time.monotonic()))
    if failures or any(thread.is_alive() for thread in threads):
        raise RuntimeError(f"creating users failed: {failures or 'timed out'}")
    return took


def rss(hub: Hub) -> dict[str, float]:
    process = psutil.Process(hub.proc.pid)
    info = process.memory_full_info()
    return {
        "rss_mib": round(info.rss / MIB, 1),
        "pss_mib": round(info.pss / MIB, 1),
        "uss_mib": round(info.uss / MIB, 1),
    }


def latency_probe(port: int, seconds: float) -> dict[str, Any]:
    """Back-to-back GET /hub/health on one connection: the slowest answers show how long the event loop was
    blocked (by a snapshot refresh, say)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    latencies: list[tuple[float, float]] = []
    start = time.monotonic()
    try:
        for _ in range(1_000_000):
            now = time.monotonic()
            if now - start >= seconds:
                break
            t0 = time.perf_counter()
            get(conn, "/hub/health")
            latencies.append((now - start, time.perf_counter() - t0))
    finally:
        conn.close()
    values = sorted(lat for _, lat in latencies)
    median = statistics.median(values)
    threshold = max(5 * median, 0.003)
    spikes = [(round(at, 2), round(1000 * lat, 1)) for at, lat in latencies if lat > threshold]
    return {
        "requests": len(values),
        "median_ms": round(1000 * median, 3),
        "p99_ms": round(1000 * values[int(0.99 * (len(values) - 1))], 2),
        "max_ms": round(1000 * values[-1], 2),
        "spike_threshold_ms": round(1000 * threshold, 2),
        "spikes": spikes[:40],  # (seconds into the probe, latency ms)
        "spike_count": len(spikes),
    }


def offline_count_users(db_path: Path, repetitions: int = 20) -> dict[str, Any]:
    """Time jh_otel's two snapshot queries (jh_otel.snapshot.count_users) on a copy of the hub's database."""
    from datetime import datetime as dt

    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    from jh_otel.snapshot import count_users

    copy = db_path.with_name("snapshot-timing.sqlite")
    shutil.copyfile(db_path, copy)
    engine = create_engine(f"sqlite:///{copy}")
    db = sessionmaker(bind=engine)()
    times = []
    try:
        total, _active = count_users(db, dt.now(timezone.utc).replace(tzinfo=None))  # imports, warm cache
        db.rollback()
        for _ in range(repetitions):
            t0 = time.perf_counter()
            total, _active = count_users(db, dt.now(timezone.utc).replace(tzinfo=None))
            db.rollback()
            times.append(time.perf_counter() - t0)
    finally:
        db.close()
        engine.dispose()
        copy.unlink(missing_ok=True)
    return {
        "users": total,
        "median_ms": round(1000 * statistics.median(times), 2),
        "max_ms": round(1000 * max(times), 2),
        "n": repetitions,
    }


def light_traffic(hub: Hub, n: int = 50) -> None:
    session = requests.Session()
    session.headers.update(AUTH)
    base = f"http://{HOST}:{hub.hub_port}/hub"
    for i in range(n):
        session.get(f"{base}/health", timeout=10)
        if i % 10 == 0:
            session.get(f"{base}/api/users", timeout=10)
            session.get(f"{base}/api/no-such-endpoint", timeout=10)
    session.post(f"{base}/api/users", json={"usernames": ["traffic-a", "traffic-b"]}, timeout=30)


# --------------------------------------------------------------------------
# Hubs
# --------------------------------------------------------------------------


PROTOCOL = {"value": "grpc"}  # set from --otlp-protocol


def otel_env(otlp_endpoint: str, traces: str = "none") -> tuple[dict[str, str], int]:
    exporter_port = free_port()
    return {
        "OTEL_SERVICE_NAME": "jupyterhub",
        "OTEL_METRICS_EXPORTER": "prometheus,otlp",
        "OTEL_TRACES_EXPORTER": traces,
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": PROTOCOL["value"],
        "OTEL_EXPORTER_PROMETHEUS_HOST": HOST,
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(exporter_port),
        "OTEL_METRIC_EXPORT_INTERVAL": "5000",
        "OTEL_PYTHON_JUPYTERHUB_REFRESH_INTERVAL": "2",
    }, exporter_port


def start_pair(workdir: Path, env: dict[str, str]) -> dict[str, Hub]:
    """A plain hub and a jh_otel hub. Both get the same OTEL_* environment; only the wrapper differs (without
    it nothing in the plain hub reads those variables)."""
    hubs = {
        PLAIN: Hub(workdir / PLAIN, env, wrapper=False),
        OTEL: Hub(workdir / OTEL, env, wrapper=True),
    }
    for variant, hub in hubs.items():
        t0 = time.monotonic()
        hub.start(timeout=120)
        log(f"{variant} hub up in {time.monotonic() - t0:.1f}s (pid {hub.proc.pid}, hub port {hub.hub_port})")
    return hubs


def stop_all(hubs: dict[str, Hub]) -> dict[str, float]:
    return {variant: round(hub.stop(), 3) for variant, hub in hubs.items()}


def shutdown_unreachable(workdir: Path, reps: int) -> dict[str, Any]:
    """Pairs of hubs whose OTLP endpoint is a closed loopback port; SIGTERM after some traffic and a wait
    (different per repetition, to land at different points of the 5 s export cycle)."""
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for rep in range(reps):
        closed = free_port()  # nobody listens here
        env, _ = otel_env(f"http://{HOST}:{closed}", traces="otlp")
        hubs = start_pair(workdir / f"shutdown{rep}", env)
        try:
            for hub in hubs.values():
                light_traffic(hub)
            time.sleep(6 + 1.5 * rep)  # at least one export attempt has failed and is being retried
            order = VARIANTS if rep % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                hub = hubs[variant]
                took = hub.stop()
                text = hub.log()
                results[variant].append(
                    {
                        "seconds": round(took, 3),
                        "returncode": hub.proc.returncode,
                        # jh_otel gave up flushing after OTEL_PYTHON_JUPYTERHUB_SHUTDOWN_TIMEOUT (default 0.5 s)
                        "flush_timeout_warning": "not flushed within" in text,
                    }
                )
                log(
                    f"  shutdown rep {rep + 1} {variant}: {took:.2f}s (exit {hub.proc.returncode}, "
                    f"flush timed out: {results[variant][-1]['flush_timeout_warning']})"
                )
        finally:
            stop_all(hubs)
    return {
        v: {
            "max_s": max(r["seconds"] for r in results[v]),
            "median_s": statistics.median([r["seconds"] for r in results[v]]),
            "runs": results[v],
        }
        for v in VARIANTS
    }


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def ratio(a: Any, b: Any) -> str:
    return f"{b / a:.2f}x" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a else "—"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def mode_probe(results: dict[str, Any]) -> str:
    return f"{results['mode']['probe']:.0f} s"


def table(results: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str, str]] = []
    h = results["health"]
    p, o, paired = h[PLAIN]["rps_median"], h[OTEL]["rps_median"], h["paired_ratio_median"]
    rows.append(
        (
            f"/hub/health throughput, req/s (median of {len(h[PLAIN]['runs'])} rounds; ratio: median of "
            f"per-round ratios)",
            fmt(p, 0),
            fmt(o, 0),
            f"{paired:.2f}x",
            f">= {HEALTH_RATIO_TARGET}x: {verdict(paired >= HEALTH_RATIO_TARGET)}",
        )
    )
    rows.append(
        (
            "/hub/health hub CPU per request, us",
            fmt(h[PLAIN]["hub_cpu_per_request_us_median"]),
            fmt(h[OTEL]["hub_cpu_per_request_us_median"]),
            ratio(h[PLAIN]["hub_cpu_per_request_us_median"], h[OTEL]["hub_cpu_per_request_us_median"]),
            "",
        )
    )
    u = results["users_api"]
    rows.append(
        (
            f"/hub/api/users ({SMALL_USERS} users) throughput, req/s",
            fmt(u[PLAIN]["rps_median"]),
            fmt(u[OTEL]["rps_median"]),
            f"{u['paired_ratio_median']:.2f}x",
            "",
        )
    )
    up, uo = u[PLAIN]["hub_cpu_per_request_us_median"], u[OTEL]["hub_cpu_per_request_us_median"]
    rows.append(("/hub/api/users hub CPU per request, ms", fmt(up / 1000, 1), fmt(uo / 1000, 1), ratio(up, uo), ""))
    m = results["memory"]
    for key, users, target in (("small", SMALL_USERS, True), ("large", LARGE_USERS, False)):
        if key not in m:
            continue
        delta = m[key][OTEL]["rss_mib"] - m[key][PLAIN]["rss_mib"]
        judged = f"<= +{RSS_DELTA_MIB_TARGET:.0f} MiB: {verdict(delta <= RSS_DELTA_MIB_TARGET)}" if target else ""
        label = f"hub RSS after warm-up, {users} users, MiB" if target else f"hub RSS at {users:,} users, MiB"
        rows.append((label, fmt(m[key][PLAIN]["rss_mib"]), fmt(m[key][OTEL]["rss_mib"]), f"{delta:+.1f} MiB", judged))
    for key, users in (("small", SMALL_USERS), ("large", LARGE_USERS)):
        s = results["scrape"].get(key)
        if not s:
            continue
        hp, ho = s["hub_metrics"][PLAIN], s["hub_metrics"][OTEL]
        rows.append(
            (
                f"/hub/metrics size at {users:,} users, bytes",
                fmt(hp["bytes"]),
                fmt(ho["bytes"]),
                ratio(hp["bytes"], ho["bytes"]),
                "",
            )
        )
        target = ""
        if key == "large":
            target = f"< {SCRAPE_MS_TARGET:.0f} ms: {verdict(ho['median_ms'] < SCRAPE_MS_TARGET)}"
        rows.append(
            (
                f"/hub/metrics scrape at {users:,} users, median ms",
                fmt(hp["median_ms"], 2),
                fmt(ho["median_ms"], 2),
                ratio(hp["median_ms"], ho["median_ms"]),
                target,
            )
        )
        if "hub_metrics_via_proxy" in s:
            pp, po = s["hub_metrics_via_proxy"][PLAIN], s["hub_metrics_via_proxy"][OTEL]
            rows.append(
                (
                    f"/hub/metrics via the proxy at {users:,} users, median ms",
                    fmt(pp["median_ms"], 2),
                    fmt(po["median_ms"], 2),
                    ratio(pp["median_ms"], po["median_ms"]),
                    f"< {SCRAPE_MS_TARGET:.0f} ms: {verdict(po['median_ms'] < SCRAPE_MS_TARGET)}",
                )
            )
        e = s["exporter_metrics"]
        target = f"< {SCRAPE_MS_TARGET:.0f} ms: {verdict(e['median_ms'] < SCRAPE_MS_TARGET)}" if key == "large" else ""
        rows.append(
            (
                f"exporter-port /metrics at {users:,} users: bytes / median ms",
                "—",
                f"{fmt(e['bytes'])} / {fmt(e['median_ms'], 2)}",
                "—",
                target,
            )
        )
    lp = results.get("event_loop_probe")
    if lp:
        rows.append(
            (
                f"/hub/health latency at {LARGE_USERS:,} users, back-to-back for {mode_probe(results)}: "
                "p99 / max ms (max = longest event-loop block)",
                f"{fmt(lp[PLAIN]['p99_ms'], 2)} / {fmt(lp[PLAIN]['max_ms'], 1)}",
                f"{fmt(lp[OTEL]['p99_ms'], 2)} / {fmt(lp[OTEL]['max_ms'], 1)}",
                "",
                "",
            )
        )
    cu = results.get("snapshot_queries_offline")
    if cu:
        rows.append(
            (
                f"snapshot queries (count_users) at {cu['users']:,} users, median ms (offline)",
                "—",
                fmt(cu["median_ms"], 2),
                "—",
                "",
            )
        )
    live = results.get("shutdown_live_collector_s")
    if live:
        rows.append(
            (
                f"shutdown at {LARGE_USERS:,} users, live OTLP receiver, s",
                fmt(live[PLAIN], 2),
                fmt(live[OTEL], 2),
                ratio(live[PLAIN], live[OTEL]),
                "",
            )
        )
    sd = results["shutdown_unreachable"]
    rows.append(
        (
            f"shutdown, OTLP collector unreachable, max of {len(sd[OTEL]['runs'])} s",
            fmt(sd[PLAIN]["max_s"], 2),
            fmt(sd[OTEL]["max_s"], 2),
            ratio(sd[PLAIN]["max_s"], sd[OTEL]["max_s"]),
            f"< {SHUTDOWN_S_TARGET:.0f} s: {verdict(sd[OTEL]['max_s'] < SHUTDOWN_S_TARGET)}",
        )
    )
    lines = ["| metric | plain | jh_otel | ratio | target |", "|---|---:|---:|---:|---|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Python, CPU count and the versions of the packages that matter (plus ``extra`` packages)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "cpus": str(os.cpu_count())}
    for package in (
        "jupyterhub",
        "jh-otel",
        "opentelemetry-sdk",
        "opentelemetry-exporter-otlp-proto-grpc",
        "opentelemetry-exporter-prometheus",
        "prometheus_client",
        *extra,
    ):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "missing"
    return out


def code_state() -> dict[str, Any]:
    """The commit and any uncommitted change under src/ and tests/ (the code both hubs ran)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    diff = git("diff", "HEAD", "--", "src", "tests", "pyproject.toml")
    return {
        "head": git("rev-parse", "--short", "HEAD"),
        "uncommitted": git("status", "--porcelain", "--", "src", "tests", "pyproject.toml").splitlines(),
        "diff_sha1": hashlib.sha1(diff.encode()).hexdigest()[:12] if diff else "",
    }


def pick_loader(choice: str) -> tuple[Any, str]:
    """The load generator for ``--loadgen`` (``auto``: wrk if it is on PATH, else the Python one) and its
    description; ``ValueError`` when ``wrk`` is asked for and not on PATH."""
    wrk = shutil.which("wrk")
    if choice == "wrk" and not wrk:
        raise ValueError("wrk is not on PATH")
    use_wrk = wrk is not None and choice != "python"
    loader = wrk_load if use_wrk else python_load
    tool = "wrk" if use_wrk else "python (threads + http.client keep-alive)"
    if use_wrk:
        tool += " " + subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("[")[0].strip()
    return loader, tool


def run_header(mode: Mode, tool: str, protocol: str, workdir: Path, packages: tuple[str, ...] = ()) -> dict[str, Any]:
    """What every results file starts with: how the run was made, on which versions and which code."""
    return {
        "mode": mode.__dict__,
        "load_generator": tool,
        "otlp_protocol": protocol,
        "connections": CONNECTIONS,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(packages),
        "workdir": str(workdir),
        "code": code_state(),
    }


def common_arguments(parser: argparse.ArgumentParser, *, quick: str, output: str, protocol: str, why: str) -> None:
    """The options every benchmark script takes: --quick, --loadgen, --output, --keep, --otlp-protocol."""
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator (auto: wrk if on PATH, else the built-in Python one)",
    )
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parent / output)
    parser.add_argument("--keep", action="store_true", help="keep the hubs' working directories (and logs)")
    parser.add_argument(
        "--otlp-protocol",
        choices=("grpc", "http/protobuf"),
        default=protocol,
        help=f"OTLP transport of the jh_otel hub ({why})",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_arguments(
        parser,
        quick="3 s load runs and one round: a smoke run",
        output="results.json",
        protocol="grpc",
        why="grpc, the distro's default, imports grpcio: ~9 MiB",
    )
    args = parser.parse_args()
    PROTOCOL["value"] = args.otlp_protocol
    mode = QUICK if args.quick else FULL

    try:
        loader, tool = pick_loader(args.loadgen)
    except ValueError as error:
        parser.error(str(error))
    log(f"mode {mode.name}; load generator: {tool}; {CONNECTIONS} connections")

    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="jh_otel_bench_"))
    results: dict[str, Any] = run_header(mode, tool, args.otlp_protocol, workdir)
    receiver = OTLPReceiver().start()
    hubs: dict[str, Hub] = {}
    ok = False
    try:
        endpoint = receiver.grpc_endpoint if PROTOCOL["value"] == "grpc" else receiver.http_endpoint
        env, exporter_port = otel_env(endpoint)
        hubs = start_pair(workdir / "main", env)
        results["exporter_port"] = exporter_port

        baseline = {v: user_count(h) for v, h in hubs.items()}  # JupyterHub creates an "admin" user
        results["users_before"] = baseline
        log(f"creating {SMALL_USERS} users on each hub (there were {baseline})")
        results["create_small_s"] = create_users(hubs, 0, SMALL_USERS)

        log("/hub/health throughput")
        results["health"] = throughput(hubs, "/hub/health", {}, mode, loader)
        log(f"/hub/api/users throughput at {SMALL_USERS} users")
        results["users_api"] = throughput(hubs, "/hub/api/users", AUTH, mode, loader)

        results["memory"] = {"small": {v: rss(h) for v, h in hubs.items()}}
        log(f"RSS after warm-up: {results['memory']['small']}")

        def scrape_all(label: str) -> None:
            s: dict[str, Any] = {"hub_metrics": {}, "hub_metrics_via_proxy": {}}
            for variant, hub in hubs.items():
                s["hub_metrics"][variant] = scrape_stats(hub.hub_port, "/hub/metrics", AUTH, mode.scrapes)
                s["hub_metrics_via_proxy"][variant] = scrape_stats(hub.port, "/hub/metrics", AUTH, mode.scrapes)
            s["exporter_metrics"] = scrape_stats(exporter_port, "/metrics", None, mode.scrapes)
            results["scrape"][label] = s
            log(
                f"scrapes ({label}): "
                + json.dumps(
                    {
                        k: {v: d.get("median_ms") for v, d in val.items()}
                        if k != "exporter_metrics"
                        else val["median_ms"]
                        for k, val in s.items()
                    }
                )
            )

        results["scrape"] = {}
        results["snapshot_wait_small_s"] = wait_total_users(hubs[OTEL], baseline[OTEL] + SMALL_USERS, 30)
        scrape_all("small")

        log(f"creating users up to {LARGE_USERS:,} on each hub, batches of {BATCH}")
        results["create_large_s"] = create_users(hubs, SMALL_USERS, LARGE_USERS)
        log(f"  took {results['create_large_s']} s (both hubs filled at the same time)")
        results["snapshot_wait_large_s"] = wait_total_users(hubs[OTEL], baseline[OTEL] + LARGE_USERS, 30)
        log(f"  jh_otel snapshot shows {LARGE_USERS} users after {results['snapshot_wait_large_s']}s")
        results["total_users_reported"] = {
            v: metric_value(hub_metrics_text(h), "jupyterhub_total_users") for v, h in hubs.items()
        }
        scrape_all("large")
        results["memory"]["large"] = {v: rss(h) for v, h in hubs.items()}

        log(f"event-loop latency probe at {LARGE_USERS:,} users ({mode.probe:.0f}s each)")
        results["event_loop_probe"] = {v: latency_probe(hubs[v].hub_port, mode.probe) for v in VARIANTS}
        for v in VARIANTS:
            p = results["event_loop_probe"][v]
            log(
                f"  {v}: median {p['median_ms']} ms, p99 {p['p99_ms']} ms, max {p['max_ms']} ms, "
                f"spikes {p['spike_count']}: {p['spikes'][:10]}"
            )
        results["snapshot_queries_offline"] = offline_count_users(hubs[OTEL].dir / "jupyterhub.sqlite")
        log(f"  jh_otel snapshot queries at {LARGE_USERS:,} users: {results['snapshot_queries_offline']}")

        results["shutdown_live_collector_s"] = stop_all(hubs)
        log(f"shutdown with the live receiver: {results['shutdown_live_collector_s']}")
        results["otlp_metric_exports_received"] = len(receiver.requests())

        log("shutdown with the OTLP collector unreachable")
        results["shutdown_unreachable"] = shutdown_unreachable(workdir, mode.shutdown_reps)
        ok = True
    finally:
        stop_all(hubs)
        receiver.stop()
        results["run_time_s"] = round(time.monotonic() - started, 1)
        results["code_at_end"] = code_state()
        results["code_changed_during_run"] = results["code_at_end"] != results["code"]
        if results["code_changed_during_run"]:
            log(f"WARNING: src/ or tests/ changed during the run: {results['code']} -> {results['code_at_end']}")
        if ok:
            args.output.write_text(json.dumps(results, indent=2) + "\n")
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"failed; hub logs kept in {workdir}")
    print()
    print(table(results))
    print()
    print(
        f"load generator: {tool}; mode: {mode.name}; code {results['code']['head']}"
        f"{' + uncommitted changes' if results['code']['uncommitted'] else ''}; run time {results['run_time_s']}s; "
        f"results: {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
