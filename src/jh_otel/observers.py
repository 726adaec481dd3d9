"""Observable-gauge readings: a catalogue gauge's series, read from the current snapshot (no I/O)."""

from __future__ import annotations

from collections.abc import Callable

from .catalogue import Family
from .snapshot import Snapshot


def readings(family: Family, snapshot: Snapshot) -> list[tuple[tuple[str, ...], float]]:
    """(label values, value) pairs of ``family`` in ``snapshot``; its known series always present."""
    value = getattr(snapshot, family.snapshot or "")
    if isinstance(value, dict):
        known = {labels: 0.0 for labels in family.series}
        known.update(value)
        return [(labels, float(v)) for labels, v in known.items()]
    return [((), float(value))]


def reader(family: Family, current: Callable[[], Snapshot]) -> Callable[[], list[tuple[tuple[str, ...], float]]]:
    """A zero-argument function giving ``family``'s readings of whatever snapshot is current."""
    return lambda: readings(family, current())
