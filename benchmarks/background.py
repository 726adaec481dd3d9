#!/usr/bin/env python
"""Does jh_otel's background work block the hub? Health checks and per-server resource sampling, at their busiest.

Run from the repository root with the project's venv::

    .venv/bin/python benchmarks/background.py            # 3 servers, 2,000 users, 20 s probes
    .venv/bin/python benchmarks/background.py --quick    # 1 server, 200 users, 6 s probes

Two jh_otel hubs, the same users and running single-user servers on each: a *quiet* one (built-in health checks
every hour, resource usage off) and a *busy* one (health checks every second, a registered sync check every second,
resource usage sampled every second). On each, back-to-back ``GET /hub/health`` on one connection (run.py's latency
probe): the slowest answers show how long the event loop was held. Also read from the busy hub: each check's
duration (``/hub/api/jh-otel/health``) and the hub's CPU.

Prints a markdown table and writes benchmarks/results-background.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import AUTH, HOST, create_users, latency_probe, log, otel_env, run_header, stop_all  # noqa: E402

from hubproc import Hub  # noqa: E402

QUIET, BUSY = "quiet", "busy"
REGISTERED_CHECK = """
import os
from jh_otel import health
health.register_check("tmp_writable", lambda: os.access("/tmp", os.W_OK), interval=1, timeout=2)
"""


def start_servers(hub: Hub, names: list[str]) -> None:
    for name in names:
        response = requests.post(f"http://{HOST}:{hub.hub_port}/hub/api/users/{name}/server", headers=AUTH, timeout=60)
        if response.status_code not in (201, 202):
            raise RuntimeError(f"spawning {name}: {response.status_code} {response.text[:200]}")
    for name in names:
        hub.wait_server(name, ready=True, timeout=120)


def check_durations(hub: Hub, reads: int) -> dict[str, float]:
    """Median duration (ms) of each check's runs, read once a second."""
    seen: dict[str, dict[str, float]] = {}
    for _ in range(reads):
        report = requests.get(f"http://{HOST}:{hub.hub_port}/hub/api/jh-otel/health", headers=AUTH, timeout=30).json()
        for name, result in report["checks"].items():
            if "time" in result:
                seen.setdefault(name, {})[result["time"]] = 1000 * result["duration_seconds"]
        time.sleep(1)
    return {name: round(statistics.median(runs.values()), 2) for name, runs in sorted(seen.items())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 server, 200 users, 6 s probes")
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parent / "results-background.json")
    args = parser.parse_args()
    servers, users, seconds = (1, 200, 6.0) if args.quick else (3, 2000, 20.0)
    workdir = Path(tempfile.mkdtemp(prefix="jh_otel_bench_background_"))
    mode = SimpleNamespace(servers=servers, users=users, probe_s=seconds)
    results: dict[str, Any] = run_header(mode, "latency probe", "none", workdir)  # type: ignore[arg-type]
    hubs: dict[str, Hub] = {}
    try:
        for label, extra, config in (
            (QUIET, {"OTEL_PYTHON_JUPYTERHUB_HEALTH_INTERVAL": "3600"}, ""),
            (
                BUSY,
                {"OTEL_PYTHON_JUPYTERHUB_HEALTH_INTERVAL": "1", "OTEL_PYTHON_JUPYTERHUB_RESOURCE_USAGE": "on"},
                REGISTERED_CHECK,
            ),
        ):
            env, _ = otel_env("http://127.0.0.1:1")
            env |= extra | {"OTEL_PYTHON_JUPYTERHUB_REFRESH_INTERVAL": "1", "OTEL_METRICS_EXPORTER": "prometheus"}
            hubs[label] = Hub(workdir / label, env, extra_config=config).start(timeout=120)
            log(f"{label} hub up (hub port {hubs[label].hub_port})")
        create_users(hubs, 0, users)
        names = [f"user{i:05d}" for i in range(servers)]
        for hub in hubs.values():
            start_servers(hub, names)
        log(f"{servers} servers running on each hub")
        time.sleep(3)
        for label in (QUIET, BUSY, QUIET, BUSY):
            process = psutil.Process(hubs[label].proc.pid)
            cpu_before = sum(process.cpu_times()[:2])
            probe = latency_probe(hubs[label].hub_port, seconds)
            probe["hub_cpu_s"] = round(sum(process.cpu_times()[:2]) - cpu_before, 2)
            results.setdefault(label, []).append(probe)
            log(f"{label}: median {probe['median_ms']} ms, p99 {probe['p99_ms']} ms, max {probe['max_ms']} ms")
        results["busy_check_ms"] = check_durations(hubs[BUSY], 10)
    finally:
        results["shutdown_s"] = stop_all(hubs)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    rows = []
    for label in (QUIET, BUSY):
        runs = results[label]
        median = round(statistics.median(r["median_ms"] for r in runs), 3)
        rows.append(
            f"| {label} | {median} | {max(r['p99_ms'] for r in runs)} | {max(r['max_ms'] for r in runs)} | "
            f"{sum(r['spike_count'] for r in runs)} |"
        )
    print(
        f"{servers} servers, {users} users, 2 probes of {seconds:g} s per hub\n\n"
        "| hub | median ms | p99 ms (worst probe) | max ms | spikes |\n|---|---|---|---|---|\n" + "\n".join(rows)
    )
    print(f"\nbusy hub, median duration of each check (ms): {results['busy_check_ms']}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
