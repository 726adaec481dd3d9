"""Bounded shutdown: a provider stuck exporting cannot hold the hub's exit past the timeout."""

from __future__ import annotations

import atexit
import threading
import time

from jh_otel.shutdown import shutdown_providers


class StuckProvider:
    """Like a TracerProvider whose exporter waits on an unreachable collector (no timeout argument)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.called = threading.Event()

    def shutdown(self) -> None:
        self.called.set()
        self.release.wait(30)


class QuickProvider:
    def __init__(self) -> None:
        self.timeout_millis = None

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        self.timeout_millis = timeout_millis


def test_shutdown_returns_within_the_timeout_and_unregisters_exit_handlers(monkeypatch) -> None:
    """A stuck provider is abandoned after the timeout; the others get the timeout; exit handlers are removed."""
    stuck, quick = StuckProvider(), QuickProvider()
    unregistered = []
    monkeypatch.setattr(atexit, "unregister", unregistered.append)
    start = time.monotonic()
    took = shutdown_providers(0.3, [stuck, quick])
    try:
        assert 0.25 <= took < 1.0 and time.monotonic() - start < 1.0
        assert stuck.called.is_set()
        assert quick.timeout_millis == 300
        assert unregistered == [stuck.shutdown, quick.shutdown]
    finally:
        stuck.release.set()
