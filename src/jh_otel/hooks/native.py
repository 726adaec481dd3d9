"""Mirror every observation of JupyterHub's native metric objects into the catalogue.

JupyterHub imports its metric objects by name into many modules (``from ..metrics import X``), so replacing the
module attribute would miss them; the objects themselves are shared, so jh_otel patches them, as instance
attributes that :meth:`NativeMirror.uninstall` deletes again. JupyterHub's own call still runs first and
unchanged; label values are turned into strings as ``prometheus_client`` does (``str(enum)``), so the enum-repr
values JupyterHub exposes (``ServerPollStatus.running``) come out identical. A native family that has fewer labels
than the catalogue's (5.x's spawn histogram has no ``reason``) records ``""`` for the missing ones.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

from prometheus_client import Counter
from prometheus_client.context_managers import Timer

from .._guard import guarded
from ..catalogue import Catalogue, Family, Kind
from ..instruments import Instruments

Record = Callable[[float, tuple[str, ...]], None]


class _Mirror:
    """Stands in for a native metric child: forwards to it, then records the same value."""

    __slots__ = ("_native", "_record", "_labels")

    def __init__(self, native: Any, record: Record, labels: tuple[str, ...]) -> None:
        self._native = native
        self._record = record
        self._labels = labels

    def _mirror(self, value: float) -> None:
        with guarded("mirroring a native metric"):
            self._record(value, self._labels)

    def observe(self, amount: float, *args: Any, **kwargs: Any) -> None:
        self._native.observe(amount, *args, **kwargs)
        self._mirror(amount)

    def inc(self, amount: float = 1, *args: Any, **kwargs: Any) -> None:
        self._native.inc(amount, *args, **kwargs)
        self._mirror(amount)

    def time(self) -> Timer:
        return Timer(self, "observe")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._native, name)


def follow(catalogue: Catalogue, module: ModuleType) -> Catalogue:
    """``catalogue`` as the installed JupyterHub defines its own metrics: each native family takes the native
    object's labels and buckets, so the families served are JupyterHub's own, exactly, on every version (5.0's
    event-loop buckets start at 0.025 where 6.x's start at 0.05; 5.x's spawn histogram has no ``reason`` label)."""
    families = []
    for family in catalogue:
        native = getattr(module, family.native or "", None)
        families.append(_as_native(family, native) if native is not None else family)
    return Catalogue(catalogue.prefix, tuple(families))


def _as_native(family: Family, native: Any) -> Family:
    labels = tuple(getattr(native, "_labelnames", family.labels))
    changes: dict[str, Any] = {}
    series = family.series
    if labels != family.labels and set(labels) <= set(family.labels):
        keep = [family.labels.index(label) for label in labels]
        changes["labels"] = labels
        series = tuple(tuple(values[i] for i in keep) for values in family.series)
    # the series JupyterHub itself made at startup (5.x's status values throttled, too-many-users...) exist at zero too
    created = tuple(tuple(str(v) for v in key) for key in getattr(native, "_metrics", {}) if len(key) == len(labels))
    if labels and (set(created) - set(series) or series is not family.series):
        changes["series"] = tuple(dict.fromkeys(series + created))
    bounds = getattr(native, "_upper_bounds", None)
    if family.kind is Kind.HISTOGRAM and bounds:
        buckets = tuple(float(b) for b in bounds if not math.isinf(b))
        if buckets != family.buckets:
            changes["buckets"] = buckets
    return dataclasses.replace(family, **changes) if changes else family


class NativeMirror:
    def __init__(self, module: ModuleType, catalogue: Catalogue, instruments: Instruments) -> None:
        self._module = module
        self._catalogue = catalogue
        self._instruments = instruments
        self._patched: list[tuple[Any, str]] = []

    def install(self) -> None:
        for family in self._catalogue:
            native = getattr(self._module, family.native or "", None)
            if native is None:
                continue
            record = self._instruments[family.name].record
            if native._labelnames:
                self._patch(native, "labels", _labels(native, native.labels, family.labels, record))
            else:
                method = "inc" if isinstance(native, Counter) else "observe"
                self._patch(native, method, _forward(getattr(native, method), record))

    def _patch(self, native: Any, attribute: str, replacement: Any) -> None:
        setattr(native, attribute, replacement)
        self._patched.append((native, attribute))

    def uninstall(self) -> None:
        for native, attribute in self._patched:
            native.__dict__.pop(attribute, None)
        self._patched.clear()


def _forward(original: Callable[..., None], record: Record) -> Callable[..., None]:
    """An unlabelled metric's ``observe``/``inc``: the original, then the mirror."""

    def forward(amount: float = 1, *args: Any, **kwargs: Any) -> None:
        original(amount, *args, **kwargs)
        with guarded("mirroring a native metric"):
            record(amount, ())

    return forward


def _labels(native: Any, original: Callable[..., Any], ours: tuple[str, ...], record: Record) -> Callable[..., Any]:
    names = tuple(native._labelnames)

    def labels(*args: Any, **kwargs: Any) -> Any:
        child = original(*args, **kwargs)
        with guarded("mirroring a native metric"):
            given = dict(zip(names, map(str, args))) if args else {k: str(v) for k, v in kwargs.items()}
            return _Mirror(child, record, tuple(given.get(label, "") for label in ours))
        return child

    return labels
