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
from .snapshot import Snapshot

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


class _Binding:
    """What recording needs once the hub is instrumented."""

    def __init__(
        self,
        instruments: Instruments,
        meter: Any,
        users: UserLabels,
        registry: CollectorRegistry,
        withhold: Callable[[Iterable[str]], None],
    ) -> None:
        self.instruments = instruments
        self.withhold = withhold
        self.meter = meter
        self.users = users
        self.registry = registry
        self.collectors: list[Any] = []


_binding: _Binding | None = None
_declared: list[Instrument] = []


class Instrument:
    """A declared instrument; a no-op until the hub is instrumented, and forever if its declaration was bad."""

    def __init__(self, family: Family | None) -> None:
        self.family = family
        self._instruments: Instruments | None = None

    def _materialize(self, binding: _Binding) -> None:
        if self.family is None:
            return
        catalogue = Catalogue(binding.instruments.catalogue.prefix, (self.family,))
        binding.withhold(catalogue.names())  # served here, not also by OpenTelemetry's Prometheus rendering
        try:
            self._instruments = Instruments(catalogue, binding.meter, Snapshot)
            collector = self._instruments.collector()
            binding.registry.register(collector)
            binding.collectors.append(collector)
        except Exception as error:  # a name already served, typically
            log.error("jh_otel: cannot serve %s: %s", self.family.prometheus(catalogue.prefix), error)
            self._instruments = None

    def _values(self, labels: dict[str, Any]) -> tuple[str, ...] | None:
        if self.family is None or self._instruments is None or _binding is None:
            return None
        names = self.family.labels
        values = tuple(str(labels.get(name, "")) for name in names)
        return _binding.users.bound(self.family.name, names, values)

    def _record(self, value: float, labels: dict[str, Any]) -> None:
        try:
            values = self._values(labels)
            if values is None:
                return
            assert self._instruments is not None and self.family is not None
            if self.family.kind is Kind.GAUGE:
                self._instruments.set_gauge(self.family.name, values, float(value))
            else:
                self._instruments[self.family.name].record(float(value), values)
        except Exception:
            log.warning("jh_otel: could not record %s", self.family and self.family.name, exc_info=True)


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


def _declare(kind: Kind, cls: type[Instrument], name: str, documentation: str, labels: Iterable[str], **kw) -> Any:
    family = _family(kind, name, documentation, tuple(labels), kw.get("buckets"))
    instrument = cls(family)
    _declared.append(instrument)
    if _binding is not None:
        instrument._materialize(_binding)
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


def counter(name: str, documentation: str = "", labels: Iterable[str] = ()) -> Counter:
    """A counter ``<prefix>_<name>_total`` in both exports."""
    return _declare(Kind.COUNTER, Counter, name, documentation, labels)


def gauge(name: str, documentation: str = "", labels: Iterable[str] = ()) -> Gauge:
    """A gauge ``<prefix>_<name>`` in both exports (the last value set per label set)."""
    return _declare(Kind.GAUGE, Gauge, name, documentation, labels)


def histogram(
    name: str, documentation: str = "", labels: Iterable[str] = (), buckets: Sequence[float] | None = None
) -> Histogram:
    """A histogram ``<prefix>_<name>``; a name ending in ``_seconds`` has the OTLP unit ``s``."""
    return _declare(Kind.HISTOGRAM, Histogram, name, documentation, labels, buckets=buckets)


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


def _catalogue_record(name: str, value: float, values: tuple[str, ...]) -> None:
    binding = _binding
    if binding is None:
        return
    try:
        family = binding.instruments.catalogue[name]
        values = binding.users.bound(name, family.labels, values)
        if family.kind is Kind.GAUGE:
            binding.instruments.set_gauge(name, values, float(value))
        else:
            binding.instruments[name].record(float(value), values)
    except Exception:
        log.warning("jh_otel: could not record %s", name, exc_info=True)


def record_custom_event(event_type: str, user: str | None = None) -> None:
    """Count one ``event_type`` event (``jupyterhub_custom_events_total``); ``user`` defaults to ``anonymous``."""
    _catalogue_record("custom_events", 1, (str(event_type), str(user or "anonymous")))


def update_custom_gauge(resource_type: str, value: float, user: str | None = None) -> None:
    """Set ``jupyterhub_custom_resource_usage``; ``user`` defaults to ``system``."""
    _catalogue_record("custom_resource_usage", value, (str(resource_type), str(user or "system")))


def time_custom_operation(operation: str, status: str | None = None) -> Timer:
    """Time a block or function into ``jupyterhub_custom_operation_duration_seconds``: ``status`` is the given
    one, else ``success``, or ``error`` when it raised."""
    return Timer(
        lambda seconds, outcome: _catalogue_record(
            "custom_operation_duration_seconds", seconds, (str(operation), status or outcome)
        )
    )


# --- binding, by HubTelemetry ---------------------------------------------------------------------------------------


def bind(
    instruments: Instruments,
    meter: Any,
    users: UserLabels,
    registry: CollectorRegistry = REGISTRY,
    withhold: Callable[[Iterable[str]], None] = lambda names: None,
) -> None:
    """Start recording into ``instruments`` (the hub's) and serving the declared instruments; ``withhold`` keeps
    their names out of OpenTelemetry's own Prometheus rendering (:meth:`jh_otel.exposition.Exposition.withhold`)."""
    global _binding
    unbind()
    binding = _Binding(instruments, meter, users, registry, withhold)
    for instrument in _declared:
        instrument._materialize(binding)
    _binding = binding


def unbind() -> None:
    """Stop recording and serving; declarations are kept for the next :func:`bind`."""
    global _binding
    binding, _binding = _binding, None
    if binding is None:
        return
    for collector in binding.collectors:
        try:
            binding.registry.unregister(collector)
        except KeyError:
            pass
    for instrument in _declared:
        instrument._instruments = None
