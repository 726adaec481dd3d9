"""The ``jh-otel`` command: check the telemetry settings before a deploy, print the metric catalogue, run the demo.

::

    jh-otel check [--no-network] [--timeout SECONDS]   one line per problem; exit 0 when none, 1 otherwise
    jh-otel metrics [--format markdown|json]           the catalogue, as the current settings name it
    jh-otel demo [demo options]                        the demo hub (python -m jh_otel.demo)

Exit codes: 0 success, 1 a problem was found (``check``), 2 bad command-line usage.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import urlsplit

from . import standard
from .catalogue import build_catalogue
from .settings import parse_settings

SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
POSITIVE_INTEGERS = (
    "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_METRIC_EXPORT_TIMEOUT",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_BSP_EXPORT_TIMEOUT",
)


def setting_problems(environ: Mapping[str, str]) -> list[str]:
    """Every bad jh_otel or OpenTelemetry setting in ``environ``, one line each: jh_otel's own, the standard ones
    that would stop the SDK's configuration (:mod:`jh_otel.standard`, which jh_otel leaves out at start), and those
    the SDK itself replaces by a default with a warning of its own."""
    problems = list(parse_settings(environ).errors)
    problems += [finding.message for finding in standard.findings(environ)]
    sampler = environ.get("OTEL_TRACES_SAMPLER", "").strip()
    if sampler and sampler not in SAMPLERS:
        problems.append(f"OTEL_TRACES_SAMPLER={sampler!r} is invalid: expected one of {', '.join(SAMPLERS)}")
    argument = environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    if argument and sampler.endswith("traceidratio"):
        try:
            ratio = float(argument)
        except ValueError:
            ratio = -1.0
        if not 0.0 <= ratio <= 1.0:
            problems.append(f"OTEL_TRACES_SAMPLER_ARG={argument!r} is invalid: expected a ratio from 0 to 1")
    for variable in POSITIVE_INTEGERS:
        value = environ.get(variable, "").strip()
        if value and not (value.isdigit() and int(value) > 0):
            problems.append(f"{variable}={value!r} is invalid: expected a whole number above 0")
    if not environ.get("OTEL_SERVICE_NAME", "").strip() and "service.name=" not in environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    ):
        problems.append("OTEL_SERVICE_NAME is not set: telemetry would say service.name=unknown_service")
    return problems


def otlp_endpoints(environ: Mapping[str, str]) -> dict[str, str]:
    """The OTLP endpoint each signal exporting over OTLP will use (per-signal variable, else the shared one, else
    the protocol's default)."""
    shared = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    found = {}
    for signal in standard.otlp_signals(environ):
        protocol = standard.protocol(environ, signal)
        own = environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT", "").strip()
        default = "http://localhost:4317" if protocol == "grpc" else "http://localhost:4318"
        found[signal] = standard.with_scheme(own or shared or default, protocol)
    return found


def reachability_problems(
    environ: Mapping[str, str], timeout: float, connect: Callable[..., object] = socket.create_connection
) -> list[str]:
    """One line per OTLP endpoint that does not accept a TCP connection within ``timeout``."""
    problems = []
    for signal, url in otlp_endpoints(environ).items():
        if standard.endpoint_problem(url):
            continue  # already reported as a setting
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            connection = connect((parts.hostname, port), timeout=timeout)
            getattr(connection, "close", lambda: None)()
        except OSError as error:
            problems.append(f"{signal}: OTLP endpoint {url} is not reachable: {error.strerror or error}")
    return problems


def _check(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    problems = setting_problems(environ)
    if not args.no_network:
        problems += reachability_problems(environ, args.timeout)
    for problem in problems:
        print(problem)
    if not problems:
        endpoints = otlp_endpoints(environ)
        where = ", ".join(f"{signal} to {url}" for signal, url in endpoints.items()) or "no OTLP export"
        print(f"ok: settings valid; {where}" + ("" if args.no_network else " (reachable)"))
    return 1 if problems else 0


def _metrics(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    catalogue = build_catalogue(parse_settings(environ))
    if args.format == "json":
        families = [
            {
                "name": family.prometheus(catalogue.prefix),
                "type": family.kind.value,
                "labels": list(family.labels),
                "otel_instrument": family.instrument(catalogue.prefix),
                "unit": family.unit,
                "origin": family.origin,
                "help": family.help,
                "definition": family.definition,
                **({"buckets": list(family.buckets)} if family.buckets else {}),
            }
            for family in catalogue
        ]
        print(json.dumps(families, indent=2))
    else:
        print(catalogue.markdown(), end="")
    return 0


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="jh-otel",
        description="jh_otel: OpenTelemetry for JupyterHub.",
        epilog="Exit codes: 0 success, 1 a problem found (check), 2 bad usage.",
    )
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser(
        "check",
        help="validate the OTEL_* and jh_otel settings in the environment and reach the OTLP endpoints",
        description="Validate the OTEL_* and jh_otel settings of this environment, one line per problem, and check "
        "that each OTLP endpoint in use accepts a connection. Exit 0 when all is well, 1 otherwise.",
    )
    check.add_argument("--no-network", action="store_true", help="only validate the settings")
    check.add_argument("--timeout", type=float, default=3.0, help="seconds per endpoint connection (default 3)")
    metrics = commands.add_parser("metrics", help="print the metric catalogue", description="Print the catalogue.")
    metrics.add_argument("--format", choices=("markdown", "json"), default="markdown")
    commands.add_parser("demo", help="run the demo hub (see jh-otel demo --help)", add_help=False)
    return main


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ if environ is None else environ
    if argv[:1] == ["demo"]:
        from .demo import main as demo

        return demo(argv[1:])
    args = parser().parse_args(argv)
    return {"check": _check, "metrics": _metrics}[args.command](args, environ)


if __name__ == "__main__":
    sys.exit(main())
