"""Where the cost comes from: /hub/health CPU per request and RSS of four hubs side by side.

    .venv/bin/python benchmarks/variants.py [--otlp-protocol grpc|http/protobuf] [--rounds 3] [--seconds 6]

- ``plain``: ``jupyterhub`` without the wrapper;
- ``wrapper, jh_otel disabled``: ``opentelemetry-instrument`` with ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=jupyterhub``
  (the SDK, the exporters and their threads, nothing of jh_otel);
- ``jh_otel``: ``OTEL_METRICS_EXPORTER=prometheus,otlp``;
- ``jh_otel, Prometheus only``: ``OTEL_METRICS_EXPORTER=prometheus`` (jh_otel then creates no OTel instruments).

The OTLP endpoint is a closed loopback port (exports fail quietly in the background, as with a collector that is
down). Rounds alternate between the hubs; medians are printed as a markdown table.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).parent))

from run import python_load, wrk_load  # noqa: E402

from hubproc import Hub, free_port  # noqa: E402

VARIANTS = {
    "plain": (False, {}),
    "wrapper, jh_otel disabled": (True, {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "jupyterhub"}),
    "jh_otel": (True, {}),
    "jh_otel, Prometheus only": (True, {"OTEL_METRICS_EXPORTER": "prometheus"}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--otlp-protocol", choices=("grpc", "http/protobuf"), default="grpc")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=6)
    args = parser.parse_args()
    load = wrk_load if shutil.which("wrk") else python_load
    base = {
        "OTEL_SERVICE_NAME": "jupyterhub",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "prometheus,otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": args.otlp_protocol,
        "OTEL_METRIC_EXPORT_INTERVAL": "5000",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        hubs = {}
        try:
            for i, (name, (wrapper, extra)) in enumerate(VARIANTS.items()):
                env = {**base, "OTEL_EXPORTER_PROMETHEUS_PORT": str(free_port()), **extra}
                hubs[name] = Hub(Path(tmp) / str(i), env, wrapper=wrapper).start()
            for _ in range(args.rounds):
                for name, hub in hubs.items():
                    process = psutil.Process(hub.proc.pid)
                    before = sum(process.cpu_times()[:2])
                    result = load(hub.hub_port, "/hub/health", {}, args.seconds, 4)
                    cpu = sum(process.cpu_times()[:2]) - before
                    results[name].append((result.rps, cpu / max(result.ok, 1) * 1e6))
            print(f"OTLP protocol {args.otlp_protocol}, load generator {load.__name__}, {args.rounds} rounds\n")
            print("| variant | /hub/health req/s | hub CPU per request (us) | RSS (MiB) |\n|---|---:|---:|---:|")
            for name, hub in hubs.items():
                rss = psutil.Process(hub.proc.pid).memory_info().rss / 2**20
                rps = statistics.median(r for r, _ in results[name])
                cpu = statistics.median(c for _, c in results[name])
                print(f"| {name} | {rps:,.0f} | {cpu:.0f} | {rss:.1f} |")
        finally:
            for hub in hubs.values():
                hub.stop()


if __name__ == "__main__":
    main()
