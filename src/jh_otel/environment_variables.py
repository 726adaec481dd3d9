"""jh_otel's variables as ``opentelemetry-instrument`` options, and the standard ones checked before the hub starts.

``opentelemetry-instrument`` imports each module of the ``opentelemetry_environment_variables`` entry-point group
to offer the ``OTEL_*`` names it defines as options: ``opentelemetry-instrument --jupyterhub_refresh_interval 5
jupyterhub`` sets ``OTEL_PYTHON_JUPYTERHUB_REFRESH_INTERVAL``. It does so in its own process, before it starts the
program and before the program configures the SDK. That is the one moment when a bad standard setting can still be
taken out before it stops the SDK's configurator, and with it every instrumentor (:mod:`jh_otel.standard`). So when
the wrapper imports this module, it also:

- leaves out each standard value that would stop the configuration, with one line on stderr naming the variable,
  the accepted values and what is used instead (the hub starts with the rest of its configuration);
- adds ``sqlalchemy`` to ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` when the installed SQLAlchemy is outside the range
  the contrib SQLAlchemy instrumentor declares (2.1 and later): that instrumentor would skip it anyway with an
  error line saying "nothing can be instrumented", while jh_otel traces the hub's engine itself. It marks the entry
  as its own in ``JH_OTEL_ADDED_DISABLED``: only the operator's ``sqlalchemy`` there switches jh_otel's SQL spans
  off. It adds nothing when the wrapper's command line sets ``--disabled_instrumentations`` (the wrapper applies
  it after this, in place of the variable).

The environment it leaves is the one the hub, and every process the hub starts, inherits. Values given as
options on the wrapper's command line are applied after this check and are not checked here; ``jh-otel check``
checks any environment before a deploy.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping, Sequence

from .settings import (
    JH_OTEL_ADDED_DISABLED,
    OTEL_PYTHON_JUPYTERHUB_EXEMPLARS,
    OTEL_PYTHON_JUPYTERHUB_GC_FREEZE,
    OTEL_PYTHON_JUPYTERHUB_HEALTH_INTERVAL,
    OTEL_PYTHON_JUPYTERHUB_LEAN_SPANS,
    OTEL_PYTHON_JUPYTERHUB_LOG_CORRELATION,
    OTEL_PYTHON_JUPYTERHUB_MAX_USER_LABELS,
    OTEL_PYTHON_JUPYTERHUB_REFRESH_INTERVAL,
    OTEL_PYTHON_JUPYTERHUB_RESOURCE_USAGE,
    OTEL_PYTHON_JUPYTERHUB_SHUTDOWN_TIMEOUT,
    OTEL_PYTHON_JUPYTERHUB_SINGLEUSER_INSTRUMENTATION,
    OTEL_PYTHON_JUPYTERHUB_SQL_SPAN_MIN_DURATION,
    OTEL_PYTHON_JUPYTERHUB_TRACE_PROBES,
    OTEL_PYTHON_JUPYTERHUB_TRACES,
)
from .settings import OTEL_PYTHON_DISABLED_INSTRUMENTATIONS as DISABLED

__all__ = [
    "OTEL_PYTHON_JUPYTERHUB_EXEMPLARS",
    "OTEL_PYTHON_JUPYTERHUB_GC_FREEZE",
    "OTEL_PYTHON_JUPYTERHUB_HEALTH_INTERVAL",
    "OTEL_PYTHON_JUPYTERHUB_LEAN_SPANS",
    "OTEL_PYTHON_JUPYTERHUB_LOG_CORRELATION",
    "OTEL_PYTHON_JUPYTERHUB_MAX_USER_LABELS",
    "OTEL_PYTHON_JUPYTERHUB_REFRESH_INTERVAL",
    "OTEL_PYTHON_JUPYTERHUB_RESOURCE_USAGE",
    "OTEL_PYTHON_JUPYTERHUB_SHUTDOWN_TIMEOUT",
    "OTEL_PYTHON_JUPYTERHUB_SINGLEUSER_INSTRUMENTATION",
    "OTEL_PYTHON_JUPYTERHUB_SQL_SPAN_MIN_DURATION",
    "OTEL_PYTHON_JUPYTERHUB_TRACE_PROBES",
    "OTEL_PYTHON_JUPYTERHUB_TRACES",
    "prepare",
]

WRAPPER = "opentelemetry-instrument"


def sqlalchemy_outside_contrib_range() -> bool:
    """Whether the installed SQLAlchemy falls outside what the contrib instrumentor declares (read from metadata,
    without importing either)."""
    from importlib.metadata import PackageNotFoundError, requires, version

    from packaging.requirements import Requirement

    try:
        installed = version("sqlalchemy")
        declared = requires("opentelemetry-instrumentation-sqlalchemy") or []
    except PackageNotFoundError:
        return False
    for line in declared:
        requirement = Requirement(line)
        if requirement.name.lower() == "sqlalchemy":
            return not requirement.specifier.contains(installed, prereleases=True)
    return False


def prepare(environ: MutableMapping[str, str], argv: Sequence[str] = ()) -> list[str]:
    """Make ``environ`` one the SDK can be configured from (:func:`jh_otel.standard.sanitize`) and quiet the
    contrib SQLAlchemy instrumentor where it cannot apply; returns the lines to show. ``argv``: the wrapper's command
    line, whose ``--disabled_instrumentations`` the wrapper applies after this and which then replaces the variable."""
    from .standard import sanitize, split

    lines = sanitize(environ)
    disabled = split(environ.get(DISABLED, ""))
    if (
        "sqlalchemy" not in disabled
        and "*" not in disabled
        and not _disabled_option(argv)
        and sqlalchemy_outside_contrib_range()
    ):
        environ[DISABLED] = ",".join([*disabled, "sqlalchemy"])
        # marked as jh_otel's, so that jh_otel's own SQL spans still follow only the operator's entries
        added = split(environ.get(JH_OTEL_ADDED_DISABLED, ""))
        environ[JH_OTEL_ADDED_DISABLED] = ",".join(dict.fromkeys([*added, "sqlalchemy"]))
    return lines


def _disabled_option(argv: Sequence[str]) -> bool:
    """Whether the wrapper's command line sets the disabled instrumentations (argparse takes any unambiguous prefix
    of ``--disabled_instrumentations``, with its value after ``=`` or as the next argument)."""
    option = "--disabled_instrumentations"
    return any(
        len(name) >= len("--disabled") and option.startswith(name) for name in (arg.split("=", 1)[0] for arg in argv)
    )


def _in_the_wrapper() -> bool:
    return os.path.basename(sys.argv[0]) == WRAPPER


if _in_the_wrapper():
    try:
        for _line in prepare(os.environ, sys.argv[1:]):
            print(_line, file=sys.stderr)
    except Exception as _error:  # the wrapper must start the program whatever happens here
        print("jh_otel: could not check the OpenTelemetry settings:", type(_error).__name__, _error, file=sys.stderr)
