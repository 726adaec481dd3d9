#!/usr/bin/env python
"""What ``OTEL_PYTHON_JUPYTERHUB_EXEMPLARS=on`` costs: two jh_otel hubs with traces on, exemplars off and on.

Run from the repository root with the project's venv::

    .venv/bin/python benchmarks/exemplars.py            # run.py's FULL load runs
    .venv/bin/python benchmarks/exemplars.py --quick    # one round of 3 s

Both hubs run under ``opentelemetry-instrument`` with traces to a live in-process OTLP receiver (always sampled, so
every request records an exemplar) and 200 users. Measured as in run.py (ABBA rounds, paired ratios):
``/hub/health`` and ``/hub/api/users`` throughput of the exemplars-on hub over the exemplars-off hub, and
``/hub/metrics`` scrape time in the text format and in OpenMetrics (what Prometheus asks for) on the exemplars-on
hub.

Prints a markdown table and writes benchmarks/results-exemplars.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402
from run import (  # noqa: E402
    AUTH,
    FULL,
    QUICK,
    SMALL_USERS,
    common_arguments,
    create_users,
    log,
    otel_env,
    pick_loader,
    run_header,
    scrape_stats,
    stop_all,
    throughput,
)

from hubproc import Hub  # noqa: E402
from otlp_receiver import OTLPReceiver  # noqa: E402

OFF, ON = "exemplars off", "exemplars on"


def record_cost(n: int = 50_000) -> dict[str, float]:
    """Microseconds per histogram record inside a sampled span, without and with the exemplar (in this process,
    away from the load runs' noise)."""
    import functools
    import timeit

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    from jh_otel.catalogue import build_catalogue
    from jh_otel.hooks.exemplars import current_exemplar
    from jh_otel.instruments import Instruments
    from jh_otel.settings import parse_settings
    from jh_otel.snapshot import Snapshot

    catalogue = build_catalogue(parse_settings({}))
    tracer = TracerProvider().get_tracer("bench")
    costs = {}
    for label, exemplar in ((OFF, None), (ON, current_exemplar)):
        recorder = Instruments(catalogue, MeterProvider().get_meter("bench"), Snapshot, exemplar)[
            "request_duration_seconds"
        ]
        labels = ("GET", "jupyterhub.handlers.pages.HealthCheckHandler", "200")
        record = functools.partial(recorder.record, 0.001, labels)
        with tracer.start_as_current_span("request"):
            best = min(timeit.repeat(record, number=n, repeat=5))
        costs[label] = round(1e6 * best / n, 2)
    return costs


OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_arguments(
        parser,
        quick="3 s load runs and one round: a smoke run",
        output="results-exemplars.json",
        protocol="http/protobuf",
        why="http/protobuf, as the README recommends for the hub",
    )
    args = parser.parse_args()
    run.PROTOCOL["value"] = args.otlp_protocol
    mode = QUICK if args.quick else FULL
    loader, tool = pick_loader(args.loadgen)
    # throughput() compares run.PLAIN against run.OTEL: here "plain" is the exemplars-off hub
    run.PLAIN, run.OTEL, run.VARIANTS = OFF, ON, (OFF, ON)
    workdir = Path(tempfile.mkdtemp(prefix="jh_otel_bench_exemplars_"))
    results: dict[str, Any] = run_header(mode, tool, args.otlp_protocol, workdir)
    started = time.monotonic()
    hubs: dict[str, Hub] = {}
    with OTLPReceiver() as receiver:
        try:
            for label, switch in ((OFF, "off"), (ON, "on")):
                env, _ = otel_env(receiver.http_endpoint, traces="otlp")
                env |= {"OTEL_TRACES_SAMPLER": "always_on", "OTEL_PYTHON_JUPYTERHUB_EXEMPLARS": switch}
                hubs[label] = Hub(workdir / switch, env).start(timeout=120)
                log(f"{label} hub up (hub port {hubs[label].hub_port})")
            create_users(hubs, 0, SMALL_USERS)
            results["health"] = throughput(hubs, "/hub/health", {}, mode, loader)
            results["api_users"] = throughput(hubs, "/hub/api/users", AUTH, mode, loader)
            port = hubs[ON].hub_port
            results["scrape"] = {
                fmt: scrape_stats(port, "/hub/metrics", AUTH | accept, mode.scrapes)
                for fmt, accept in (("text", {}), ("openmetrics", {"Accept": OPENMETRICS}))
            }
        finally:
            results["shutdown_s"] = stop_all(hubs)
    results["record_us"] = record_cost()
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    scrape = results["scrape"]
    rows = "".join(
        f"| `{path}` req/s (median) | {results[key][OFF]['rps_median']} | {results[key][ON]['rps_median']} "
        f"(paired ratio {results[key]['paired_ratio_median']}) |\n"
        for key, path in (("health", "/hub/health"), ("api_users", "/hub/api/users"))
    )
    print(
        "| measure | exemplars off | exemplars on |\n|---|---|---|\n"
        + rows
        + f"| one histogram record in a sampled span, us | {results['record_us'][OFF]} | {results['record_us'][ON]} |\n"
        + f"| `/hub/metrics` text, median ms | - | {scrape['text']['median_ms']} ({scrape['text']['bytes']} B) |\n"
        f"| `/hub/metrics` OpenMetrics, median ms | - | {scrape['openmetrics']['median_ms']} "
        f"({scrape['openmetrics']['bytes']} B) |"
    )
    log(f"results in {args.output} ({results['elapsed_s']} s)")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
