"""What spawned single-user servers inherit from a hub that runs under ``opentelemetry-instrument``.

``opentelemetry-instrument`` puts its ``sitecustomize`` directory on ``PYTHONPATH``, and ``Spawner.env_keep``
passes ``PYTHONPATH`` on, so every single-user server starts auto-instrumented but without the hub's ``OTEL_*``
settings: it exports to a collector that may not exist and takes seconds to stop. ``Spawner.get_env`` is wrapped:

- ``off`` (default): the auto-instrumentation directory is taken out of the server's ``PYTHONPATH``;
- ``inherit``: it stays, and the server gets the hub's OpenTelemetry settings that say where and how to export
  (:data:`INHERITED`: exporter choice, endpoints, protocols, sampler, resource, service name, propagation, batch
  and interval tuning) with ``service.name`` set to ``jupyterhub-singleuser``, its user and server as resource
  attributes, no Prometheus exporter (its port would clash with the hub's), and ``TRACEPARENT``: the trace context
  of ``jupyterhub.spawner.start``.

Credentials stay in the hub: a user's server is an environment its user can read (``/proc/self/environ``,
``os.environ`` in a notebook), so what it inherits is an allow-list, never "every ``OTEL_*``". Headers (the
collector's API key: ``OTEL_EXPORTER_OTLP_*HEADERS``), client keys and certificates, and any variable not on the
list are not passed on, nor an endpoint URL with user info in it. An operator whose servers must authenticate to a
collector sets their variables on the spawner explicitly (``c.Spawner.environment``), where they take precedence.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from .._guard import guarded
from ..tracing.singleuser import carrier_environment

SERVICE_NAME = "jupyterhub-singleuser"
_SIGNALS = ("", "_TRACES", "_METRICS", "_LOGS")
INHERITED = frozenset(
    {
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_TRACES_EXPORTER",
        "OTEL_METRICS_EXPORTER",
        "OTEL_LOGS_EXPORTER",
        "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG",
        "OTEL_PROPAGATORS",
        "OTEL_SEMCONV_STABILITY_OPT_IN",
        "OTEL_METRIC_EXPORT_INTERVAL",
        "OTEL_METRIC_EXPORT_TIMEOUT",
        "OTEL_BSP_SCHEDULE_DELAY",
        "OTEL_BSP_MAX_QUEUE_SIZE",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
        "OTEL_BSP_EXPORT_TIMEOUT",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS",
        "OTEL_PYTHON_JUPYTERHUB_TRACES",
    }
    | {
        f"OTEL_EXPORTER_OTLP{signal}_{setting}"
        for signal in _SIGNALS
        for setting in ("ENDPOINT", "PROTOCOL", "COMPRESSION", "TIMEOUT", "INSECURE")
    }
)
"""The hub's variables a user's server inherits: where and how to export, never a credential (no ``*HEADERS``,
``*CLIENT_KEY``, ``*CLIENT_CERTIFICATE``, ``*CERTIFICATE``: the collector's secrets stay in the hub)."""


def auto_instrumentation_dir() -> str | None:
    try:
        from opentelemetry.instrumentation import auto_instrumentation
    except ImportError:
        return None
    return os.path.dirname(os.path.abspath(auto_instrumentation.__file__))


def without_wrapper(env: dict[str, str], wrapper_dir: str | None) -> dict[str, str]:
    path = env.get("PYTHONPATH")
    if path is None or wrapper_dir is None:
        return env
    kept = [p for p in path.split(os.pathsep) if p and os.path.abspath(p) != wrapper_dir]
    if kept:
        env["PYTHONPATH"] = os.pathsep.join(kept)
    else:
        env.pop("PYTHONPATH")
    return env


def _with_credentials(key: str, value: str) -> bool:
    """An endpoint URL that carries user info (``https://user:key@collector``)."""
    if not key.endswith("_ENDPOINT"):
        return False
    try:
        return "@" in urlsplit(value).netloc
    except ValueError:
        return True


def inherited(env: dict[str, str], hub_environ: Mapping[str, str], user: str, server: str) -> dict[str, str]:
    """``env`` (the spawner's, which wins) plus the allow-listed OpenTelemetry settings of the hub."""
    for key in INHERITED:
        value = hub_environ.get(key)
        if value is not None and not _with_credentials(key, value):
            env.setdefault(key, value)
    exporters = [e.strip() for e in env.get("OTEL_METRICS_EXPORTER", "").split(",") if e.strip()]
    if "prometheus" in exporters:
        env["OTEL_METRICS_EXPORTER"] = ",".join(e for e in exporters if e != "prometheus") or "none"
    if env.get("OTEL_SERVICE_NAME") in (None, hub_environ.get("OTEL_SERVICE_NAME")):
        env["OTEL_SERVICE_NAME"] = SERVICE_NAME
    attributes = f"jupyterhub.user.name={quote(user, safe='')},jupyterhub.server.name={quote(server, safe='')}"
    existing = env.get("OTEL_RESOURCE_ATTRIBUTES")
    env["OTEL_RESOURCE_ATTRIBUTES"] = f"{existing},{attributes}" if existing else attributes
    return env


class SingleUserEnvironment:
    def __init__(self, mode: str) -> None:
        self._mode = mode
        self._wrapper_dir = auto_instrumentation_dir()

    def wrapper(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        env = wrapped(*args, **kwargs)
        with guarded("preparing a single-user server's environment"):
            if self._mode == "off":
                env = without_wrapper(env, self._wrapper_dir)
            else:
                env = inherited(env, os.environ, instance.user.name, instance.name or "")
                env.update(carrier_environment())
        return env
