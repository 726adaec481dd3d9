"""jh_otel: OpenTelemetry for JupyterHub: every ``jupyterhub_*`` metric exactly once, and traces that explain it.

Usage
-----
Install next to JupyterHub and run the hub under the OpenTelemetry wrapper::

    pip install jh-otel
    OTEL_SERVICE_NAME=jupyterhub OTEL_METRICS_EXPORTER=prometheus,otlp OTEL_TRACES_EXPORTER=otlp \\
        opentelemetry-instrument jupyterhub -f jupyterhub_config.py

or, without the wrapper, add one line to ``jupyterhub_config.py`` (it reads the same ``OTEL_*`` variables)::

    import jh_otel; jh_otel.configure()

Either way the hub gets the metric catalogue (``jh-otel`` README, or :mod:`jh_otel.catalogue`): JupyterHub's own
metrics and the seed spec's, on ``/hub/metrics`` (still behind the ``read:metrics`` scope), on the OpenTelemetry
Prometheus exporter port when ``prometheus`` is among ``OTEL_METRICS_EXPORTER`` (``OTEL_EXPORTER_PROMETHEUS_HOST``,
default ``localhost``, and ``..._PORT``, default 9464), and over OTLP when ``otlp`` is.

With a traces exporter (``OTEL_TRACES_EXPORTER=otlp``) it also gets traces (:mod:`jh_otel.tracing`): request
spans named by route template, SQL spans, client spans for the proxy API, and JupyterHub's own operations
(``jupyterhub.login``, ``jupyterhub.spawn`` and its steps, ``jupyterhub.stop``, polls, proxy calls, startup), every
credential scrubbed before export.

Configuration
-------------
======================================================  ==========  =================================================
Variable                                                Default     Meaning
======================================================  ==========  =================================================
``OTEL_PYTHON_JUPYTERHUB_REFRESH_INTERVAL``             ``15``      Seconds between hub-state snapshots (users,
                                                                    servers, memory, CPU gauges); 0.5 to 3600.
``OTEL_PYTHON_JUPYTERHUB_SHUTDOWN_TIMEOUT``             ``0.5``     Seconds the hub's shutdown may spend flushing
                                                                    telemetry; 0 to 30.
``OTEL_PYTHON_JUPYTERHUB_SINGLEUSER_INSTRUMENTATION``    ``off``     ``off``: spawned servers do not inherit
                                                                    ``opentelemetry-instrument``; ``inherit``: they
                                                                    do, with the hub's ``OTEL_*`` settings and
                                                                    ``service.name=jupyterhub-singleuser`` and the
                                                                    spawn's trace context.
``OTEL_PYTHON_JUPYTERHUB_TRACES``                       ``on``      ``off``: no jh_otel spans (operations, SQL).
``OTEL_PYTHON_JUPYTERHUB_LOG_CORRELATION``              ``off``     ``on``: hub log lines end with the trace and
                                                                    span ids inside a span.
``OTEL_PYTHON_JUPYTERHUB_EXEMPLARS``                    ``off``     ``on``: histograms carry the trace id of the
                                                                    span they were observed in as an exemplar;
                                                                    ``/hub/metrics`` serves OpenMetrics on request.
``OTEL_PYTHON_JUPYTERHUB_HEALTH_INTERVAL``              ``30``      Seconds between runs of the built-in health
                                                                    checks; 1 to 3600.
``OTEL_PYTHON_JUPYTERHUB_MAX_USER_LABELS``              ``200``     Distinct user names per family under a user
                                                                    label; later ones are ``_other``.
``OTEL_PYTHON_JUPYTERHUB_RESOURCE_USAGE``               ``off``     ``on``: CPU and memory of each local server's
                                                                    process tree.
``OTEL_PYTHON_JUPYTERHUB_GC_FREEZE``                    ``on``      ``on``: startup objects are left out of full
                                                                    garbage collections once the hub has started.
``OTEL_PYTHON_JUPYTERHUB_LEAN_SPANS``                   ``on``      ``on``: sampled spans are lean objects until they
                                                                    end or need more than attributes; ``off``: SDK's.
``OTEL_PYTHON_JUPYTERHUB_TRACE_PROBES``                 ``off``     ``on``: the health and metrics probes are traced
                                                                    too (they are always in the request metrics).
``OTEL_PYTHON_JUPYTERHUB_PROFILE_OPTION``               profile     The ``user_options`` key naming a spawn's
                                                                    profile (label of the spawn-phase families).
``OTEL_PYTHON_JUPYTERHUB_MAX_PROFILE_LABELS``           ``50``      Distinct profiles under a profile label; later
                                                                    ones are ``_other``.
``OTEL_PYTHON_JUPYTERHUB_SPAWN_RECORDS``                ``on``      ``on``: one ``jupyterhub.spawn`` log record and
                                                                    one hub log line per spawn.
``OTEL_PYTHON_JUPYTERHUB_SPAN_BUFFER``                  ``4``       MiB of encoded spans kept through a collector
                                                                    outage, newest sent first; ``0``: the SDK's own.
``OTEL_PYTHON_JUPYTERHUB_SQL_SPAN_MIN_DURATION``        ``0``       Seconds a SQL statement must take to get a span
                                                                    (a failing one always does); 0 to 60.
``JUPYTERHUB_METRICS_PREFIX``                           jupyterhub  JupyterHub's own: the metric name prefix.
``JUPYTERHUB_SERVER_SPAWN_DURATION_SECONDS_BUCKETS``    JupyterHub  JupyterHub's own: spawn histogram buckets.
``JUPYTERHUB_SERVER_STOP_DURATION_SECONDS_BUCKETS``     JupyterHub  JupyterHub's own: stop histogram buckets.
======================================================  ==========  =================================================

A bad value is reported in one line naming the variable and the accepted values; that setting keeps its default
and the hub starts anyway.

API
---
- :class:`JupyterHubInstrumentor` -- ``instrument(meter_provider=..., tracer_provider=..., settings=...,
  registry=...)``.
- :func:`configure` -- the one-line setup.
- :func:`parse_settings`, :class:`Settings`, :func:`build_catalogue`.
- :mod:`jh_otel.health` -- ``register_check(name, function, interval, timeout)``.
- :mod:`jh_otel.custom` -- ``record_custom_event``, ``update_custom_gauge``, ``time_custom_operation``, and
  ``counter``/``gauge``/``histogram`` for instruments of one's own.
- ``jh-otel check|metrics|demo`` -- the command (:mod:`jh_otel.cli`).
"""

from __future__ import annotations

from typing import Any

from .catalogue import build_catalogue
from .instrumentor import JupyterHubInstrumentor
from .settings import Settings, parse_settings
from .version import __version__

__all__ = [
    "JupyterHubInstrumentor",
    "Settings",
    "__version__",
    "build_catalogue",
    "configure",
    "parse_settings",
]


def configure(*, sdk: bool = True, **kwargs: Any) -> None:
    """Set OpenTelemetry up from ``jupyterhub_config.py``, as ``opentelemetry-instrument`` would.

    Runs the distro and configurator (providers and exporters from the ``OTEL_*`` variables) and every installed
    instrumentor, jh_otel's included. Does nothing when the hub already runs under ``opentelemetry-instrument``.
    With ``sdk=False`` only jh_otel is instrumented, with the given keyword arguments (see
    :meth:`JupyterHubInstrumentor.instrument`).
    """
    instrumentor = JupyterHubInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        return
    if sdk:
        import logging
        import os

        from opentelemetry.instrumentation.auto_instrumentation import initialize

        from .environment_variables import prepare

        for line in prepare(os.environ):  # a bad standard setting costs only that setting (jh_otel.standard)
            logging.getLogger("jh_otel").error("%s", line)
        initialize()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(**kwargs)
