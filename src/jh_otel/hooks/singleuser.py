"""What spawned single-user servers inherit from a hub that runs under ``opentelemetry-instrument``.

``opentelemetry-instrument`` puts its ``sitecustomize`` directory on ``PYTHONPATH``, and ``Spawner.env_keep``
passes ``PYTHONPATH`` on, so every single-user server starts auto-instrumented but without the hub's ``OTEL_*``
settings: it exports to a collector that may not exist and takes seconds to stop. ``Spawner.get_env`` is wrapped:

- ``off`` (default): the auto-instrumentation directory is taken out of the server's ``PYTHONPATH``;
- ``inherit``: it stays, and the server gets the hub's ``OTEL_*`` settings with ``service.name`` set to
  ``jupyterhub-singleuser``, its user and server as resource attributes, and no Prometheus exporter port (it
  would clash with the hub's), and ``TRACEPARENT``: the trace context of ``jupyterhub.spawner.start``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from .._guard import guarded
from ..tracing.singleuser import carrier_environment

SERVICE_NAME = "jupyterhub-singleuser"


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


def inherited(env: dict[str, str], hub_environ: Mapping[str, str], user: str, server: str) -> dict[str, str]:
    for key, value in hub_environ.items():
        if key.startswith("OTEL_") and not key.startswith("OTEL_EXPORTER_PROMETHEUS_"):
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
