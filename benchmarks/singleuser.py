"""How long a single-user server takes to start and to stop, on a plain hub and on hubs under the wrapper.

    .venv/bin/python benchmarks/singleuser.py [--rounds 3]

Variants: a plain hub; ``opentelemetry-instrument`` with jh_otel switched off
(``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=jupyterhub``: the servers inherit the wrapper through ``PYTHONPATH``
without any ``OTEL_*`` setting); and jh_otel with its default (``OTEL_PYTHON_JUPYTERHUB_SINGLEUSER_INSTRUMENTATION=
off``). The hubs export OTLP to a port nobody listens on, as with a collector that is down. Prints a markdown table
of median seconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

from hubproc import Hub, free_port  # noqa: E402

VARIANTS = {
    "plain hub": (False, {}),
    "wrapper, jh_otel disabled": (True, {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "jupyterhub"}),
    "jh_otel (default)": (True, {}),
}


def measure(wrapper: bool, extra: dict[str, str], rounds: int, workdir: Path) -> tuple[list[float], list[float]]:
    env = {
        "OTEL_SERVICE_NAME": "jupyterhub",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        **extra,
    }
    starts, stops = [], []
    with Hub(workdir, env, wrapper=wrapper) as hub:
        hub.api("POST", "/users/bench")
        for _ in range(rounds):
            t = time.monotonic()
            hub.api("POST", "/users/bench/server")
            hub.wait_server("bench", ready=True, timeout=120)
            starts.append(time.monotonic() - t)
            t = time.monotonic()
            hub.api("DELETE", "/users/bench/server")
            hub.wait_server("bench", ready=False, timeout=120)
            stops.append(time.monotonic() - t)
    return starts, stops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print("| variant | server start (s) | server stop (s) |\n|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, (wrapper, extra)) in enumerate(VARIANTS.items()):
            starts, stops = measure(wrapper, extra, args.rounds, Path(tmp) / str(i))
            print(f"| {name} | {statistics.median(starts):.2f} | {statistics.median(stops):.2f} |", flush=True)


if __name__ == "__main__":
    main()
