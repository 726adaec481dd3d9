"""What jh_otel relies on in other packages' private code, checked when it installs.

jh_otel replaces or wraps a few private functions of the contrib instrumentations and of JupyterHub (the tornado
instrumentation's span start and end, the SQLAlchemy engine tracer's internals, JupyterHub's readiness wait...).
Each part that does declares the signatures it depends on as :class:`Expect` rows; :func:`unmet` compares them with
what is installed. A part whose expectations are not met is left out with one warning that names the part and the
versions installed, and the hub keeps serving with the rest of the telemetry: a private function that changed in a
release jh_otel was not tested with never turns a request into an error.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

log = logging.getLogger("jh_otel")

_KINDS = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


@dataclass(frozen=True)
class Expect:
    """``module.qualname`` is a function (or method, looked up on its class) whose leading positional parameters are
    ``parameters``; ``parameters=None`` only asks that the attribute exists."""

    module: str
    qualname: str
    parameters: tuple[str, ...] | None = None

    def target(self) -> str:
        return f"{self.module}.{self.qualname}"


def resolve(module: str, qualname: str) -> Any:
    """The object ``module.qualname`` (``AttributeError``/``ImportError`` when it is not there)."""
    owner: Any = importlib.import_module(module)
    for part in qualname.split("."):
        owner = getattr(owner, part)
    return owner


def positional_parameters(function: Any) -> list[inspect.Parameter] | None:
    """``function``'s positional parameters (``self`` included for a function looked up on a class), or None when
    it has no inspectable signature."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return None
    return [p for p in parameters if p.kind in _KINDS]


def problem(expect: Expect) -> str | None:
    """Why ``expect`` is not met, or None when it is. Extra trailing parameters are fine when they have defaults
    (jh_otel does not pass them); other differences are not."""
    try:
        found = resolve(expect.module, expect.qualname)
    except (ImportError, AttributeError):
        return f"{expect.target()} is missing"
    if expect.parameters is None:
        return None
    parameters = positional_parameters(found)
    if parameters is None:
        return f"{expect.target()} has no signature to check"
    names = tuple(p.name for p in parameters)
    extra = parameters[len(expect.parameters) :]
    if names[: len(expect.parameters)] != expect.parameters or any(p.default is p.empty for p in extra):
        return f"{expect.target()} takes ({', '.join(names)}), not ({', '.join(expect.parameters)})"
    return None


def versions(distributions: Iterable[str]) -> str:
    """``name version`` of each distribution, for a warning."""
    found = []
    for name in distributions:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def unmet(part: str, expectations: Iterable[Expect], distributions: Iterable[str]) -> bool:
    """True (after one warning naming ``part``, the mismatch and the installed versions) when any expectation is not
    met; False when ``part`` can be installed."""
    problems = [p for p in map(problem, expectations) if p]
    if not problems:
        return False
    log.warning(
        "jh_otel: leaving out %s: %s (installed: %s); the rest of the telemetry is unaffected",
        part,
        "; ".join(problems),
        versions(distributions),
    )
    return True
