"""Observable-gauge readings: a catalogue gauge's series, read from the current snapshot (no I/O)."""

from __future__ import annotations

from collections.abc import Callable

from .catalogue import Family
from .snapshot import Snapshot


def readings(family: Family, snapshot: Snapshot | None) -> list[tuple[tuple[str, ...], float]]:
    """(label values, value) pairs of ``family`` in ``snapshot``, its known series always present; none at all
    before the first snapshot (a gauge that has not been read yet is absent, not zero)."""
    if snapshot is None:
        return []
    value = getattr(snapshot, family.snapshot or "")
    if isinstance(value, dict):
        known = {labels: 0.0 for labels in family.series}
        known.update(value)
        return [(labels, float(v)) for labels, v in known.items()]
    return [((), float(value))]


def reader(family: Family, current: Callable[[], Snapshot | None]) -> Callable[[], list[tuple[tuple[str, ...], float]]]:
    """A zero-argument function giving ``family``'s readings of whatever snapshot is current."""
    return lambda: readings(family, current())
