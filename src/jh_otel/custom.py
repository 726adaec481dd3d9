"""Custom metrics: the seed spec's helpers, and instruments of one's own, in both exports.

For ``jupyterhub_config.py``, custom spawners and authenticators::

    from jh_otel import custom

    custom.record_custom_event("user_login", user.name)          # jupyterhub_custom_events_total
    custom.update_custom_gauge("gpu_memory", 2.5e9, user.name)   # jupyterhub_custom_resource_usage
    with custom.time_custom_operation("sync_home"):              # jupyterhub_custom_operation_duration_seconds
        ...

    @custom.time_custom_operation("fetch_quota")                 # sync or async functions
    async def fetch_quota(...): ...

    LOGINS = custom.counter("user_login", "Total user logins", ["username", "authenticator"])
    LOGINS.inc(username=name, authenticator="PAMAuthenticator")  # jupyterhub_user_login_total

Instruments declared with :func:`counter`, :func:`gauge` and :func:`histogram` are served on ``/hub/metrics`` (and
the exporter port) and pushed over OTLP like the catalogue. Labels named ``user`` or ``username`` are bounded: past
``OTEL_PYTHON_JUPYTERHUB_MAX_USER_LABELS`` distinct names a family records new ones as ``_other``, so no deployment
can grow its series without limit. Nothing here raises into the hub: a bad declaration logs one line and gives an
instrument that records nothing; recording before the hub is instrumented does nothing.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry

from .catalogue import DEFAULT_BUCKETS, Catalogue, Family, Kind
from .instruments import OVERFLOW, Instruments

log = logging.getLogger(__name__)

USER_LABELS = frozenset({"user", "username"})
_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class UserLabels:
    """Bounds the distinct values of user labels, per family."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._seen: dict[str, set[str]] = {}
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def bound(self, family: str, names: Sequence[str], values: tuple[str, ...]) -> tuple[str, ...]:
        if not USER_LABELS.intersection(names):
            return values
        bounded = list(values)
        with self._lock:
            seen = self._seen.setdefault(family, set())
            for i, name in enumerate(names):
                if name not in USER_LABELS or values[i] in seen:
                    continue
                if len(seen) < self.cap:
                    seen.add(values[i])
                else:
                    bounded[i] = OVERFLOW
                    if family not in self._warned:
                        self._warned.add(family)
                        log.warning(
                            "jh_otel: %s has %d distinct user names; recording new ones as %s "
                            "(OTEL_PYTHON_JUPYTERHUB_MAX_USER_LABELS)",
                            family,
                            self.cap,
                            OVERFLOW,
                        )
        return tuple(bounded)


class Instrument:
    """A declared instrument; a no-op until the hub is instrumented, and forever if its declaration was bad."""

    def __init__(self, family: Family | None) -> None:
        self.family = family
        self._instruments: Instruments | None = None
        self._metrics: CustomMetrics | None = None

    def _materialize(self, metrics: CustomMetrics) -> None:
        if self.family is None:
            return
        catalogue = Catalogue(metrics.instruments.catalogue.prefix, (self.family,))
        try:
            instruments = Instruments(catalogue, lambda: None)
            collector = instruments.collector()
            metrics.registry.register(collector)
            metrics.collectors.append(collector)
        except Exception as error:  # a name already served, typically
            log.error("jh_otel: cannot serve %s: %s", self.family.prometheus(catalogue.prefix), error)
            return
        self._instruments, self._metrics = instruments, metrics

    def _dematerialize(self) -> None:
        self._instruments = self._metrics = None

    def _record(self, value: float, labels: dict[str, Any]) -> None:
        try:
            instruments, metrics, family = self._instruments, self._metrics, self.family
            if instruments is None or metrics is None or family is None:
                return
            values = metrics.users.bound(
                family.name, family.labels, tuple(str(labels.get(n, "")) for n in family.labels)
            )
            if family.kind is Kind.GAUGE:
                instruments.set_gauge(family.name, values, float(value))
            else:
                instruments[family.name].record(float(value), values)
        except Exception:
            log.warning("jh_otel: could not record %s", self.family and self.family.name, exc_info=True)


class Declarations:
    """The instruments declared with :func:`counter`, :func:`gauge` and :func:`histogram` (from
    ``jupyterhub_config.py``, before or after the hub is instrumented), and the installed :class:`CustomMetrics` that
    the spec's helpers record into, if any."""

    def __init__(self) -> None:
        self.instruments: list[Instrument] = []
        self.active: CustomMetrics | None = None


DECLARED = Declarations()
"""Where declarations go and the helpers record by default (like ``prometheus_client.REGISTRY``)."""


class CustomMetrics:
    """The custom-metrics part of one hub's telemetry: the spec's helpers record into its catalogue instruments,
    and every declared instrument is served from :meth:`install` until :meth:`uninstall`."""

    def __init__(
        self,
        instruments: Instruments,
        users: UserLabels,
        registry: CollectorRegistry = REGISTRY,
        declarations: Declarations = DECLARED,
    ) -> None:
        self.instruments = instruments
        self.users = users
        self.registry = registry
        self.declarations = declarations
        self.collectors: list[Any] = []

    def families(self) -> list[Any]:
        """The declared instruments' families with data, for the OTLP export (:mod:`jh_otel.producer`)."""
        found: list[Any] = []
        for instrument in self.declarations.instruments:
            if instrument._metrics is self and instrument._instruments is not None:
                found.extend(instrument._instruments.families())
        return found

    def install(self) -> None:
        previous = self.declarations.active
        if previous is not None and previous is not self:
            previous.uninstall()
        for instrument in self.declarations.instruments:
            instrument._materialize(self)
        self.declarations.active = self

    def uninstall(self) -> None:
        """Stop recording and serving; declarations are kept for the next :meth:`install`."""
        if self.declarations.active is self:
            self.declarations.active = None
        for collector in self.collectors:
            try:
                self.registry.unregister(collector)
            except KeyError:
                pass
        self.collectors.clear()
        for instrument in self.declarations.instruments:
            if instrument._metrics is self:
                instrument._dematerialize()

    def record(self, name: str, value: float, values: tuple[str, ...]) -> None:
        """One observation of the catalogue family ``name`` (the spec's helpers), user labels bounded."""
        try:
            family = self.instruments.catalogue[name]
            values = self.users.bound(name, family.labels, values)
            if family.kind is Kind.GAUGE:
                self.instruments.set_gauge(name, values, float(value))
            else:
                self.instruments[name].record(float(value), values)
        except Exception:
            log.warning("jh_otel: could not record %s", name, exc_info=True)


class Counter(Instrument):
    def inc(self, amount: float = 1, **labels: Any) -> None:
        self._record(amount, labels)


class Gauge(Instrument):
    def set(self, value: float, **labels: Any) -> None:
        self._record(value, labels)


class Histogram(Instrument):
    def observe(self, value: float, **labels: Any) -> None:
        self._record(value, labels)

    def time(self, **labels: Any) -> Timer:
        """Times a block or a function (sync or async) into this histogram."""
        return Timer(lambda seconds, _status: self.observe(seconds, **labels))


def _declare(
    kind: Kind,
    cls: type[Instrument],
    name: str,
    documentation: str,
    labels: Iterable[str],
    declarations: Declarations,
    buckets: Sequence[float] | None = None,
) -> Any:
    instrument = cls(_family(kind, name, documentation, tuple(labels), buckets))
    declarations.instruments.append(instrument)
    if declarations.active is not None:
        instrument._materialize(declarations.active)
    return instrument


def _family(
    kind: Kind, name: str, documentation: str, labels: tuple[str, ...], buckets: Sequence[float] | None
) -> Family | None:
    base = name.removesuffix("_total") if kind is Kind.COUNTER else name
    problems = [f"name {name!r}" for n in [base] if not _NAME.match(n) or n.startswith("__")]
    problems += [f"label {label!r}" for label in labels if not _NAME.match(label) or label == "le"]
    if problems:
        log.error(
            "jh_otel: custom %s %r not declared: invalid %s (letters, digits and _, not starting with a digit)",
            kind.value,
            name,
            ", ".join(problems),
        )
        return None
    if kind is Kind.HISTOGRAM and base.endswith("_seconds"):
        otel, unit = base.removesuffix("_seconds"), "s"
    else:
        otel, unit = base, "{value}" if kind is Kind.GAUGE else "{event}"
    return Family(
        base,
        kind,
        documentation or base,
        otel,
        unit,
        labels,
        buckets=tuple(buckets or DEFAULT_BUCKETS) if kind is Kind.HISTOGRAM else (),
        origin="custom",
        hook="custom",
    )


def counter(
    name: str, documentation: str = "", labels: Iterable[str] = (), *, declarations: Declarations = DECLARED
) -> Counter:
    """A counter ``<prefix>_<name>_total`` in both exports."""
    return _declare(Kind.COUNTER, Counter, name, documentation, labels, declarations)


def gauge(
    name: str, documentation: str = "", labels: Iterable[str] = (), *, declarations: Declarations = DECLARED
) -> Gauge:
    """A gauge ``<prefix>_<name>`` in both exports (the last value set per label set)."""
    return _declare(Kind.GAUGE, Gauge, name, documentation, labels, declarations)


def histogram(
    name: str,
    documentation: str = "",
    labels: Iterable[str] = (),
    buckets: Sequence[float] | None = None,
    *,
    declarations: Declarations = DECLARED,
) -> Histogram:
    """A histogram ``<prefix>_<name>``; a name ending in ``_seconds`` has the OTLP unit ``s``."""
    return _declare(Kind.HISTOGRAM, Histogram, name, documentation, labels, declarations, buckets)


class Timer:
    """Context manager (``with``/``async with``) and decorator (sync or async) calling ``done(seconds, status)``
    once, with ``status`` ``success`` or ``error`` (the block raised)."""

    def __init__(self, done: Callable[[float, str], None]) -> None:
        self._done = done
        self._start = 0.0

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, kind: Any, *exc: Any) -> None:
        self._finish(kind)

    async def __aenter__(self) -> Timer:
        return self.__enter__()

    async def __aexit__(self, kind: Any, *exc: Any) -> None:
        self._finish(kind)

    def _finish(self, kind: Any) -> None:
        try:
            self._done(time.perf_counter() - self._start, "success" if kind is None else "error")
        except Exception:
            log.warning("jh_otel: could not record a timed operation", exc_info=True)

    def __call__(self, function: Callable[..., Any]) -> Callable[..., Any]:
        done = self._done
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                async with Timer(done):
                    return await function(*args, **kwargs)

            return timed_async

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with Timer(done):
                return function(*args, **kwargs)

        return timed


# --- the seed spec's helpers, on the catalogue's custom families ---------------------------------------------------


def _catalogue_record(name: str, value: float, values: tuple[str, ...], declarations: Declarations) -> None:
    metrics = declarations.active
    if metrics is not None:
        metrics.record(name, value, values)


def record_custom_event(event_type: str, user: str | None = None, *, declarations: Declarations = DECLARED) -> None:
    """Count one ``event_type`` event (``jupyterhub_custom_events_total``); ``user`` defaults to ``anonymous``."""
    _catalogue_record("custom_events", 1, (str(event_type), str(user or "anonymous")), declarations)


def update_custom_gauge(
    resource_type: str, value: float, user: str | None = None, *, declarations: Declarations = DECLARED
) -> None:
    """Set ``jupyterhub_custom_resource_usage``; ``user`` defaults to ``system``."""
    _catalogue_record("custom_resource_usage", value, (str(resource_type), str(user or "system")), declarations)


def time_custom_operation(operation: str, status: str | None = None, *, declarations: Declarations = DECLARED) -> Timer:
    """Time a block or function into ``jupyterhub_custom_operation_duration_seconds``: ``status`` is the given
    one, else ``success``, or ``error`` when it raised."""
    return Timer(
        lambda seconds, outcome: _catalogue_record(
            "custom_operation_duration_seconds", seconds, (str(operation), status or outcome), declarations
        )
    )
