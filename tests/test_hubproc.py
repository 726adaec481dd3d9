"""Tests for the hub fixture's port helper (tests/hubproc.py)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

import hubproc


class _FakeSocket:
    """A socket whose ``bind(("127.0.0.1", 0))`` gets the next port of a script, as the kernel may hand them out."""

    ports: list[int] = []

    def __enter__(self) -> _FakeSocket:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def bind(self, address: tuple[str, int]) -> None:
        self.port = self.ports.pop(0)

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


def test_free_port_never_hands_out_a_port_twice_when_the_kernel_repeats_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two calls whose first two binds get the same port return two different ports (a proxy's public and API side)."""
    monkeypatch.setattr(hubproc, "_HANDED_OUT", set())
    monkeypatch.setattr(_FakeSocket, "ports", [41407, 41407, 41408])
    monkeypatch.setattr(socket, "socket", _FakeSocket)
    assert [hubproc.free_port(), hubproc.free_port()] == [41407, 41408]


def test_free_port_gives_up_after_100_repeats(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel that only ever repeats a handed-out port ends the loop with an error after 100 tries."""
    monkeypatch.setattr(hubproc, "_HANDED_OUT", {5000})
    monkeypatch.setattr(_FakeSocket, "ports", [5000] * 100)
    monkeypatch.setattr(socket, "socket", _FakeSocket)
    with pytest.raises(RuntimeError, match="after 100 tries"):
        hubproc.free_port()
