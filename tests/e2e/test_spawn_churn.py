"""End to end, spawn/stop churn: 1,000 spawn/stop cycles of one user on a real hub with an in-process spawner
(tests/fastspawner.py), on a plain hub and on a hub under ``opentelemetry-instrument`` with traces at full sampling
to a live OTLP receiver. JupyterHub drops a Spawner once its server has stopped; under jh_otel none of the cycles'
Spawners may stay alive either (counted inside the hub with ``gc``), nor may ``User`` objects pile up.

``JH_OTEL_CHURN_CYCLES`` sets the jh_otel hub's cycles (default 1,000, the issue's figure),
``JH_OTEL_CHURN_PLAIN_CYCLES`` the plain hub's (default 200: JupyterHub drops the Spawner at every stop, so its
baseline does not depend on the count). A cycle takes 50-90 ms on a quiet 2-core machine, so the module runs for
about two and a half minutes. ``JH_OTEL_CHURN_HUB_PYTHONPATH`` is put first on the hubs' path only (not the test
process's), to churn another jh_otel, e.g. an older commit's ``src``, with this checkout's tests.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import fastspawner
from hubproc import Hub, free_port, otel_env
from otlp_receiver import OTLPReceiver

pytestmark = pytest.mark.e2e

CYCLES = int(os.environ.get("JH_OTEL_CHURN_CYCLES", "1000"))
PLAIN_CYCLES = int(os.environ.get("JH_OTEL_CHURN_PLAIN_CYCLES", str(min(CYCLES, 200))))
BLOCK = 100  # cycles between two drains of the receiver (and progress lines in the log)
USER = "churn"
HUB_ENV = {"PYTHONPATH": path} if (path := os.environ.get("JH_OTEL_CHURN_HUB_PYTHONPATH")) else {}
SPAWN_SPANS = ("jupyterhub.spawn", "jupyterhub.stop", "jupyterhub.spawner.start", "jupyterhub.spawner.stop")


@dataclass
class Churn:
    cycles: int
    before: dict[str, Any]  # the hub's count report before the first cycle
    after: dict[str, Any]  # ... and after the last stop, with what refers to a surviving spawner
    seconds: float  # wall time of the cycles alone
    statuses: Counter[tuple[int, int]] = field(default_factory=Counter)  # (POST, DELETE) status codes
    spans: Counter[str] = field(default_factory=Counter)  # span names the receiver got during the cycles

    def summary(self) -> str:
        return (
            f"{self.cycles} cycles in {self.seconds:.1f}s ({1000 * self.seconds / self.cycles:.1f} ms/cycle), statuses "
            f"{dict(self.statuses)}; FastSpawners live {self.before['fastspawners']} -> {self.after['fastspawners']} "
            f"(created {self.after['fastspawners_created']}), Users {self.before['users']} -> {self.after['users']}, "
            f"RSS {self.before['rss_bytes'] / 2**20:.1f} -> {self.after['rss_bytes'] / 2**20:.1f} MiB, "
            f"jh_otel {self.after['jh_otel_file']}"
        )


def churn(hub: Hub, cycles: int, receiver: OTLPReceiver | None = None) -> Churn:
    assert hub.api("POST", f"/users/{USER}").status_code == 201
    if receiver is not None:
        fastspawner.drain_spans(receiver)  # startup's spans are not the cycles'
    result = Churn(cycles, before=fastspawner.live(hub), after={}, seconds=0.0)
    started = time.monotonic()
    for done in range(1, cycles + 1):
        result.statuses[fastspawner.cycle(hub, USER)] += 1
        if receiver is not None and (done % BLOCK == 0 or done == cycles):
            paused = time.monotonic()
            result.spans += fastspawner.drain_spans(receiver)
            started += time.monotonic() - paused  # the wait for the exports is not the cycles' time
    result.seconds = time.monotonic() - started
    result.after = fastspawner.live(hub, referrers=1, types=20)
    print(f"\n{'jh_otel' if receiver is not None else 'plain'} hub: {result.summary()}")
    return result


def churned(hub: Hub, cycles: int, receiver: OTLPReceiver | None = None) -> Churn:
    try:  # not ``with hub``: a hub whose start timed out is still running, and must be stopped too
        hub.start()
        return churn(hub, cycles, receiver)
    finally:
        hub.stop()


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Churn:
    hub = Hub(tmp_path_factory.mktemp("churn-plain"), HUB_ENV, wrapper=False, extra_config=fastspawner.hub_config())
    return churned(hub, PLAIN_CYCLES)


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Churn:
    with OTLPReceiver() as receiver:
        env = otel_env(
            receiver.http_endpoint,
            traces="otlp",
            metrics="prometheus,otlp",
            exporter_port=free_port(),
            extra={"OTEL_TRACES_SAMPLER": "always_on", **HUB_ENV},
        )
        workdir: Path = tmp_path_factory.mktemp("churn-jh-otel")
        return churned(Hub(workdir, env, wrapper=True, extra_config=fastspawner.hub_config()), CYCLES, receiver)


def test_every_cycle_makes_and_drops_a_spawner(plain: Churn, traced: Churn) -> None:
    """Each cycle spawns and stops a new Spawner on both hubs, so the counts in the other tests are about real
    churn."""
    for result in (plain, traced):
        assert sum(result.statuses.values()) == result.cycles
        assert result.after["fastspawners_created"] - result.before["fastspawners_created"] >= result.cycles
        assert result.after["user_spawners"] == {}  # JupyterHub's own dict no longer has the stopped spawner


def test_plain_hub_keeps_no_stopped_spawner(plain: Churn) -> None:
    """The baseline: after its churn a plain JupyterHub keeps at most one Spawner object of the stopped server."""
    assert plain.after["fastspawners"] <= 1, plain.after.get("referrers")


def test_no_spawner_outlives_its_stop_under_jh_otel(plain: Churn, traced: Churn) -> None:
    """Under jh_otel no Spawner made by the cycles stays alive beyond what the plain hub keeps (gc count in the
    hub, after a full collection)."""
    assert traced.after["fastspawners"] <= plain.after["fastspawners"], (
        f"{traced.after['fastspawners']} FastSpawners alive after {CYCLES} cycles (plain hub: "
        f"{plain.after['fastspawners']}); the oldest is referred to by {traced.after.get('referrers')}"
    )


def test_users_do_not_accumulate(plain: Churn, traced: Churn) -> None:
    """The churn leaves no more jupyterhub.user.User objects alive than there were before it, on either hub."""
    for result in (plain, traced):
        assert result.after["users"] <= result.before["users"]


def test_churn_is_traced(traced: Churn) -> None:
    """The jh_otel hub traced every cycle (one spawn, stop, spawner.start and spawner.stop span each), so a clean
    count above is not that of an uninstrumented hub."""
    assert traced.after["jh_otel_file"], "jh_otel was not loaded in the hub"
    assert {name: traced.spans[name] for name in SPAWN_SPANS} == dict.fromkeys(SPAWN_SPANS, CYCLES)
