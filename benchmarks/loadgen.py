#!/usr/bin/env python
"""Load generators: ``wrk`` for a mix of one static GET, a Python generator in a child process for the rest.

The Python generator runs as ``python benchmarks/loadgen.py`` with a JSON spec on stdin and prints one JSON line: it
shares no GIL with the harness (which hosts the OTLP receiver). Each connection is a thread with one keep-alive
``http.client`` connection that runs the spec's weighted ops back to back, its choices drawn from a seeded
``random.Random`` (the same sequence on both hubs of a round), until the duration or the op cap is reached. It reads
the hub's CPU time (``psutil``) when the load starts and when it ends, so the hub's idle time around the child's
start-up is not counted.

Also here: the latency probe (``"mode": "probe"``): back-to-back ``GET /hub/health`` on one connection, whose
slowest answers show the longest stalls of the hub's event loop.
"""

from __future__ import annotations

import bisect
import http.client
import json
import random
import re
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
LOADGEN = Path(__file__).resolve()
MAX_OPS_PER_CONNECTION = 2_000_000
MAX_LATENCIES = 200_000  # per op, kept for percentiles
STOP_POLLS = 250  # after a 202 to a stop: polls of the user model, 20 ms apart at most
ERROR_SAMPLES = 8


def _cpu(pids: list[int]) -> dict[str, float]:
    import psutil

    out = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            out[str(pid)] = times.user + times.system
        except psutil.Error:
            out[str(pid)] = float("nan")
    return out


def _fill(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**values)
    if isinstance(value, dict):
        return {_fill(k, values): _fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    return value


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1)))], 2)

    return {"p50_ms": at(0.5), "p90_ms": at(0.9), "p99_ms": at(0.99), "max_ms": round(1000 * ordered[-1], 2)}


class _OpStats:
    def __init__(self) -> None:
        self.count = 0
        self.requests = 0
        self.ok = 0
        self.statuses: Counter[str] = Counter()
        self.latencies: list[float] = []


class _Worker(threading.Thread):
    def __init__(self, index: int, spec: dict[str, Any], gate: threading.Event, stop_at: list[float]) -> None:
        super().__init__(daemon=True, name=f"loadgen-{index}")
        self.index = index
        self.spec = spec
        self.context = spec["context"]
        self.gate = gate
        self.stop_at = stop_at
        self.rng = random.Random(spec["seed"] * 7919 + index)
        self.ops = spec["ops"]
        self.cumulative = []
        total = 0.0
        for op in self.ops:
            total += op["weight"]
            self.cumulative.append(total)
        self.total = total
        self.stats = {op["name"]: _OpStats() for op in self.ops}
        pools = self.context.get("spawn_pools") or []
        self.spawn_pool = pools[index] if index < len(pools) else []
        self.spawn_next = 0
        self.errors: list[str] = []
        self.conn = http.client.HTTPConnection(HOST, spec["port"], timeout=30)

    # -- one request --
    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            data = response.read()
            if response.will_close:
                self.conn.close()
            return response.status, data
        except (OSError, http.client.HTTPException) as error:
            self.conn.close()  # the next request opens a new connection
            self.note(f"{method} {path}: {type(error).__name__}: {error}")
            return 0, b""

    def note(self, message: str) -> None:
        if len(self.errors) < ERROR_SAMPLES:
            self.errors.append(message[:300])

    # -- one op --
    def pick_user(self, pool: str) -> str:
        if pool == "running":
            return self.rng.choice(self.context["running"])
        if pool == "spawn":
            user = self.spawn_pool[self.spawn_next % len(self.spawn_pool)]
            self.spawn_next += 1
            return user
        if pool == "admin":
            return "admin"
        return ""

    def auth(self, kind: str, user: str) -> dict[str, str]:
        if kind == "service":
            return {"Authorization": f"token {self.context['service_token']}"}
        if kind == "server":
            return {"Authorization": f"token {self.context['server_tokens'][user]}"}
        if kind == "cookie":
            login = self.context["cookies"][user]
            return {"Cookie": login["cookie"], "X-XSRFToken": login["xsrf"]}
        return {}

    def step(self, stats: _OpStats, step: dict[str, Any], values: dict[str, str], auth: dict[str, str]) -> int:
        path = step["path"].format(**values)
        body = None if step.get("body") is None else json.dumps(_fill(step["body"], values)).encode()
        headers = {**auth, **step.get("headers", {})}
        status, data = self.request(step["method"], path, body, headers)
        stats.requests += 1
        stats.statuses[str(status)] += 1
        good = status in step["expect"]
        if good and step.get("check") == "ready-event":
            good = b'"ready": true' in data
        if good:
            stats.ok += 1
        else:
            self.note(f"{step['method']} {path} -> {status}: {data[:200]!r}")
        if good and status == 202 and step.get("after_202") == "wait-stopped":
            self.wait_stopped(stats, values["user"], auth)
        return status if good else -1

    def wait_stopped(self, stats: _OpStats, user: str, auth: dict[str, str]) -> None:
        for _ in range(STOP_POLLS):
            status, data = self.request("GET", f"/hub/api/users/{user}", None, auth)
            stats.requests += 1
            stats.statuses[str(status)] += 1
            if status != 200:
                self.note(f"polling {user}'s stop -> {status}")
                return
            stats.ok += 1
            if not json.loads(data).get("servers"):
                return
            time.sleep(0.02)
        self.note(f"{user}'s server did not stop")

    def run_op(self, op: dict[str, Any]) -> None:
        stats = self.stats[op["name"]]
        user = self.pick_user(op.get("pool", ""))
        values = {
            "user": user,
            "offset": str(self.rng.randrange(0, max(1, self.context.get("users_count", 1)), 50)),
            "nonce": f"{self.rng.getrandbits(64):016x}",
            "now": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        }
        auth = self.auth(op["auth"], user)
        started = time.perf_counter()
        steps = op["steps"]
        for i, step in enumerate(steps):
            if self.step(stats, step, values, auth) < 0:
                if len(steps) > 1 and i < len(steps) - 1:  # a flow that failed half-way: still stop the server
                    self.step(stats, steps[-1], values, auth)
                break
        stats.count += 1
        if len(stats.latencies) < MAX_LATENCIES:
            stats.latencies.append(time.perf_counter() - started)

    def run(self) -> None:
        self.gate.wait(60)
        try:
            for _ in range(MAX_OPS_PER_CONNECTION):
                if time.monotonic() >= self.stop_at[0]:
                    break
                index = bisect.bisect_right(self.cumulative, self.rng.random() * self.total)
                self.run_op(self.ops[min(index, len(self.ops) - 1)])
        finally:
            self.conn.close()


def run_mix(spec: dict[str, Any]) -> dict[str, Any]:
    """In the child: ``spec['connections']`` workers for ``spec['duration']`` seconds."""
    gate, stop_at = threading.Event(), [0.0]
    workers = [_Worker(i, spec, gate, stop_at) for i in range(spec["connections"])]
    for worker in workers:
        worker.start()
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = _cpu(spec.get("cpu_pids", []))
    start = time.monotonic()
    stop_at[0] = start + spec["duration"]
    gate.set()
    for worker in workers:
        worker.join(max(0.1, stop_at[0] + 60 - time.monotonic()))
    elapsed = time.monotonic() - start
    cpu1 = _cpu(spec.get("cpu_pids", []))
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    ops: dict[str, Any] = {}
    for op in spec["ops"]:
        merged = _OpStats()
        for worker in workers:
            s = worker.stats[op["name"]]
            merged.count += s.count
            merged.requests += s.requests
            merged.ok += s.ok
            merged.statuses.update(s.statuses)
            merged.latencies.extend(s.latencies)
        ops[op["name"]] = {
            "ops": merged.count,
            "requests": merged.requests,
            "ok": merged.ok,
            "statuses": dict(merged.statuses),
            **_percentiles(merged.latencies),
        }
    requests = sum(o["requests"] for o in ops.values())
    ok = sum(o["ok"] for o in ops.values())
    return {
        "tool": "python",
        "ok": ok,
        "errors": requests - ok,
        "elapsed_s": elapsed,
        "cpu_s": {pid: cpu1[pid] - cpu0[pid] for pid in cpu0},
        "loadgen_cpu_s": (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime),
        "ops": ops,
        "error_samples": [e for w in workers for e in w.errors][:ERROR_SAMPLES],
        "stragglers": sum(1 for w in workers if w.is_alive()),
    }


def run_each(spec: dict[str, Any]) -> dict[str, Any]:
    """In the child: every op once, on one connection (a check of the setup before any load)."""
    worker = _Worker(0, spec, threading.Event(), [float("inf")])
    try:
        for op in spec["ops"]:
            worker.run_op(op)
    finally:
        worker.conn.close()
    return {
        "ops": {
            name: {"requests": s.requests, "ok": s.ok, "statuses": dict(s.statuses)} for name, s in worker.stats.items()
        },
        "error_samples": worker.errors,
    }


def run_probe(spec: dict[str, Any]) -> dict[str, Any]:
    """In the child: back-to-back ``GET /hub/health`` on one connection for ``spec['duration']`` seconds."""
    conn = http.client.HTTPConnection(HOST, spec["port"], timeout=30)
    latencies: list[tuple[float, float]] = []
    cpu0 = _cpu(spec.get("cpu_pids", []))
    start = time.monotonic()
    try:
        for _ in range(5_000_000):
            now = time.monotonic()
            if now - start >= spec["duration"]:
                break
            t0 = time.perf_counter()
            conn.request("GET", "/hub/health")
            conn.getresponse().read()
            latencies.append((now - start, time.perf_counter() - t0))
    finally:
        conn.close()
    cpu1 = _cpu(spec.get("cpu_pids", []))
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
        "spike_count": len(spikes),
        "spikes": spikes[:40],  # (seconds into the probe, latency ms)
        "cpu_s": {pid: cpu1[pid] - cpu0[pid] for pid in cpu0},
    }


# --------------------------------------------------------------------------
# Harness side
# --------------------------------------------------------------------------


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the Python generator (or the probe) in a child process; its JSON result."""
    done = subprocess.run(
        [sys.executable, str(LOADGEN)],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        timeout=spec.get("duration", 0) + 120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


_WRK_TOTAL = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)\b")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s*(\d+)")
_WRK_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_UNIT_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def wrk(port: int, path: str, headers: dict[str, str], duration: float, connections: int, pids: list[int]) -> dict:
    """``wrk`` with one thread; the hub's CPU read around it (wrk starts in milliseconds)."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "10s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    command.append(f"http://{HOST}:{port}{path}")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0 = _cpu(pids)
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    cpu1 = _cpu(pids)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = done.stdout
    total = _WRK_TOTAL.search(out)
    if done.returncode != 0 or total is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{out}\n{done.stderr}")
    requests = int(total.group(1))
    non2xx = int(m.group(1)) if (m := _WRK_NON2XX.search(out)) else 0
    socket_errors = sum(map(int, m.groups())) if (m := _WRK_SOCKET.search(out)) else 0
    return {
        "tool": "wrk",
        "ok": requests - non2xx,
        "errors": non2xx + socket_errors,
        "elapsed_s": float(total.group(2)) * _UNIT_SECONDS[total.group(3)],
        "cpu_s": {pid: cpu1[pid] - cpu0[pid] for pid in cpu0},
        "loadgen_cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        "error_samples": [],
    }


def wrk_version() -> str:
    try:
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.split("[")[0].strip()


if __name__ == "__main__":
    request = json.loads(sys.stdin.read())
    mode = request.get("mode", "mix")
    result = {"probe": run_probe, "each": run_each, "mix": run_mix}[mode](request)
    print(json.dumps(result))
