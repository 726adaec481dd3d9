"""The standard ``OTEL_*`` variables that would stop the SDK from being configured at all, checked beforehand.

``opentelemetry-instrument`` configures the SDK before it loads any instrumentor, and one bad value makes its
configurator raise: an unknown exporter name, an OTLP protocol other than ``grpc`` and ``http/protobuf``, a
Prometheus port that is not one or is in use, an OTLP timeout that is not a number. Then *no*
instrumentor is loaded (jh_otel included), the hub serves JupyterHub's own metrics only, and nothing says why but
two chained tracebacks. An OTLP/HTTP endpoint without a scheme does not stop the configurator, but every export
to it fails. (An unknown ``OTEL_PROPAGATORS`` name makes the wrapper itself fail before it starts the program, so
the hub does not start at all; ``jh-otel check`` reports it.)

:func:`findings` lists each such value with the accepted ones and what is used instead (the valid part of a list,
or the SDK's default); :func:`sanitize` applies that to an environment. jh_otel runs it in the wrapper before the
program starts (:mod:`jh_otel.environment_variables`) and in :func:`jh_otel.configure`, so a bad standard setting
costs only that setting: the rest of the configuration, jh_otel's catalogue on ``/hub/metrics`` and every valid
exporter keep working. ``jh-otel check`` reports the same lines before a deploy.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from urllib.parse import urlsplit

SIGNALS = {"traces": "OTEL_TRACES_EXPORTER", "metrics": "OTEL_METRICS_EXPORTER", "logs": "OTEL_LOGS_EXPORTER"}
OTLP_PROTOCOLS = ("grpc", "http/protobuf")
"""What the SDK's configurator accepts (it has no ``http/json`` exporter)."""
_BY_PROTOCOL = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
DEFAULT_PROMETHEUS_PORT = 9464
_HTTP_PATHS = {"traces": "v1/traces", "metrics": "v1/metrics", "logs": "v1/logs"}


@dataclass(frozen=True)
class Finding:
    variable: str
    value: str
    message: str
    """``VARIABLE='value' is invalid: expected ...; using ...``."""
    replacement: str | None
    """The value used instead; None: the variable is removed and the SDK's default applies."""
    extra: tuple[tuple[str, str], ...] = ()
    """Other variables set so that only this setting is lost (a per-signal endpoint, say)."""


def installed_exporters(signal: str) -> tuple[str, ...]:
    """Exporter names the SDK can load for ``signal`` (its entry points), plus ``none``."""
    names = {ep.name for ep in entry_points(group=f"opentelemetry_{signal}_exporter")}
    return tuple(sorted(names | {"none"}))


def installed_propagators() -> tuple[str, ...]:
    names = {ep.name for ep in entry_points(group="opentelemetry_propagator")}
    return tuple(sorted(names | {"none"}))


def split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def protocol(environ: Mapping[str, str], signal: str) -> str:
    """The OTLP protocol of ``signal`` ("" for the shared setting): its own, else the shared one, else grpc."""
    own = environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL", "").strip() if signal else ""
    return own or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip() or "grpc"


def otlp_signals(environ: Mapping[str, str]) -> list[str]:
    """The signals exported over OTLP (traces and metrics by default, as the distro sets them)."""
    found = []
    for signal, variable in SIGNALS.items():
        exporters = split(environ.get(variable, "")) or (["otlp"] if signal != "logs" else [])
        if any(e.startswith("otlp") for e in exporters):
            found.append(signal)
    return found


def with_scheme(value: str, protocol: str) -> str:
    """The gRPC exporters also take a bare ``host:port``."""
    return value if "://" in value or protocol != "grpc" else f"http://{value}"


def endpoint_problem(value: str) -> bool:
    """Whether ``value`` is not an http(s) URL with a host (and a valid port, if any)."""
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        return True
    return parts.scheme not in ("http", "https") or not parts.hostname or port == 0


def default_endpoint(signal: str, protocol: str) -> str:
    if protocol == "grpc":
        return "http://localhost:4317"
    return f"http://localhost:4318/{_HTTP_PATHS[signal]}" if signal else "http://localhost:4318"


def _exporter_known(name: str, signal: str, environ: Mapping[str, str], installed: tuple[str, ...]) -> bool:
    if name == "otlp":  # the SDK maps it to the exporter of the signal's protocol
        return _BY_PROTOCOL.get(protocol(environ, signal), "otlp") in installed or (
            protocol(environ, signal) not in _BY_PROTOCOL  # a bad protocol is a finding of its own
        )
    return name in installed


def _exporters(environ: Mapping[str, str]) -> list[Finding]:
    found = []
    for signal, variable in SIGNALS.items():
        value = environ.get(variable)
        if value is None or not value.strip():
            continue
        installed = installed_exporters(signal)
        names = split(value)
        unknown = [n for n in names if not _exporter_known(n, signal, environ, installed)]
        if not unknown:
            continue
        kept = ",".join(n for n in names if n not in unknown) or "none"
        found.append(
            Finding(
                variable,
                value,
                f"{variable}={value!r} is invalid: unknown exporter {', '.join(map(repr, unknown))}, expected any of "
                f"{', '.join(installed)}; using {kept!r}",
                kept,
            )
        )
    return found


def _protocols(environ: Mapping[str, str]) -> list[Finding]:
    found = []
    for variable in ("OTEL_EXPORTER_OTLP_PROTOCOL", *(f"OTEL_EXPORTER_OTLP_{s.upper()}_PROTOCOL" for s in SIGNALS)):
        value = environ.get(variable)
        if value and value.strip() and value.strip() not in OTLP_PROTOCOLS:
            fallback = "the default grpc" if variable == "OTEL_EXPORTER_OTLP_PROTOCOL" else "the shared protocol"
            message = f"{variable}={value!r} is invalid: expected one of {', '.join(OTLP_PROTOCOLS)}; using {fallback}"
            found.append(Finding(variable, value, message, None))
    return found


def _endpoints(environ: Mapping[str, str]) -> list[Finding]:
    found = []
    in_use = otlp_signals(environ)
    for signal in SIGNALS:
        variable = f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"
        value = environ.get(variable, "").strip()
        if value and endpoint_problem(with_scheme(value, protocol(environ, signal))):
            path = "" if protocol(environ, signal) == "grpc" else "/" + _HTTP_PATHS[signal]
            message = (
                f"{variable}={value!r} is invalid: expected a URL such as http://collector:4318{path}; "
                f"{signal} use the shared endpoint or the default"
            )
            found.append(Finding(variable, value, message, None))
    variable = "OTEL_EXPORTER_OTLP_ENDPOINT"
    value = environ.get(variable, "").strip()
    if not value:
        return found
    if endpoint_problem(value if "://" in value else f"http://{value}"):  # not even a host and port
        message = f"{variable}={value!r} is invalid: expected a URL such as http://collector:4318; using the default"
        return [*found, Finding(variable, value, message, None)]
    # a bare host:port suits gRPC; a signal exported over HTTP without an endpoint of its own cannot use it
    broken = [
        s
        for s in in_use
        if not environ.get(f"OTEL_EXPORTER_OTLP_{s.upper()}_ENDPOINT", "").strip()
        and endpoint_problem(with_scheme(value, protocol(environ, s)))
    ]
    if not broken:
        return found
    own = {s for s in in_use if environ.get(f"OTEL_EXPORTER_OTLP_{s.upper()}_ENDPOINT", "").strip()}
    users = [s for s in in_use if s not in own and s not in broken]
    over = ", ".join(f"{s} over {protocol(environ, s)}" for s in broken)
    expected = f"{variable}={value!r} is invalid for {over}: expected a URL such as http://collector:4318"
    if not users:
        return [*found, Finding(variable, value, f"{expected}; using the default", None)]
    extra = tuple(
        (f"OTEL_EXPORTER_OTLP_{s.upper()}_ENDPOINT", default_endpoint(s, protocol(environ, s))) for s in broken
    )
    uses = ", ".join(f"{s} use the default {url}" for (_, url), s in zip(extra, broken))
    return [*found, Finding(variable, value, f"{expected}; {uses}", value, extra)]


def _timeouts(environ: Mapping[str, str]) -> list[Finding]:
    found = []
    for variable in ("OTEL_EXPORTER_OTLP_TIMEOUT", *(f"OTEL_EXPORTER_OTLP_{s.upper()}_TIMEOUT" for s in SIGNALS)):
        value = environ.get(variable)
        if value is None or not value.strip():
            continue
        try:
            ok = float(value) >= 0
        except ValueError:
            ok = False
        if not ok:
            message = f"{variable}={value!r} is invalid: expected a number of milliseconds; using the default"
            found.append(Finding(variable, value, message, None))
    return found


def _prometheus_port(environ: Mapping[str, str]) -> list[Finding]:
    variable = "OTEL_EXPORTER_PROMETHEUS_PORT"
    value = environ.get(variable)
    if value is None or not value.strip():
        return []
    if value.strip().isdigit() and 1 <= int(value) <= 65535:
        return []
    message = f"{variable}={value!r} is invalid: expected a port from 1 to 65535; using the default"
    return [Finding(variable, value, f"{message} {DEFAULT_PROMETHEUS_PORT}", None)]


def _prometheus_port_free(environ: Mapping[str, str]) -> list[Finding]:
    """The Prometheus exporter binds its port while the SDK is configured: a port in use (another hub on the host,
    say) would stop the configuration too. Then the exporter is left out; ``/hub/metrics`` still serves the
    catalogue."""
    variable = "OTEL_METRICS_EXPORTER"
    names = split(environ.get(variable, ""))
    if "prometheus" not in names:
        return []
    host = environ.get("OTEL_EXPORTER_PROMETHEUS_HOST", "").strip() or "localhost"
    port = int(environ.get("OTEL_EXPORTER_PROMETHEUS_PORT", "").strip() or DEFAULT_PROMETHEUS_PORT)
    if _bindable(host, port):
        return []
    kept = ",".join(n for n in names if n != "prometheus") or "none"
    message = (
        f"{variable}={environ[variable]!r}: the prometheus exporter cannot listen on {host}:{port} (in use, or not "
        f"an address of this host: OTEL_EXPORTER_PROMETHEUS_HOST and _PORT); using {kept!r}"
    )
    return [Finding(variable, environ[variable], message, kept)]


def _bindable(host: str, port: int) -> bool:
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return False
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the exporter's HTTP server does
        try:
            probe.bind(address)
        except OSError:
            return False
    return True


def _propagators(environ: Mapping[str, str]) -> list[Finding]:
    variable = "OTEL_PROPAGATORS"
    value = environ.get(variable)
    if value is None or not value.strip():
        return []
    installed = installed_propagators()
    names = split(value)
    unknown = [n for n in names if n not in installed]
    if not unknown:
        return []
    kept = ",".join(n for n in names if n not in unknown) or "none"
    message = (
        f"{variable}={value!r} is invalid: unknown propagator {', '.join(map(repr, unknown))}, expected any of "
        f"{', '.join(installed)}; using {kept!r}"
    )
    return [Finding(variable, value, message, kept)]


RULES = (_exporters, _protocols, _endpoints, _timeouts, _prometheus_port, _prometheus_port_free, _propagators)
"""In order: a later rule sees the values the earlier ones chose (an endpoint is judged by the protocol used)."""


def _apply(finding: Finding, environ: MutableMapping[str, str]) -> None:
    if finding.replacement is None:
        environ.pop(finding.variable, None)
    else:
        environ[finding.variable] = finding.replacement
    for variable, value in finding.extra:
        environ[variable] = value


def findings(environ: Mapping[str, str]) -> list[Finding]:
    """Every standard value that would stop the SDK's configuration (or every export), one finding each."""
    working = dict(environ)
    found: list[Finding] = []
    for rule in RULES:
        for finding in rule(working):
            found.append(finding)
            _apply(finding, working)
    return found


def sanitize(environ: MutableMapping[str, str]) -> list[str]:
    """Apply :func:`findings` to ``environ``; returns one ``jh_otel: ...`` line per variable changed."""
    lines = []
    for finding in findings(environ):
        _apply(finding, environ)
        lines.append(f"jh_otel: {finding.message}")
    return lines
