"""Where a spawn's time goes, on a real hub, proxy and servers: a spawner whose progress() replays KubeSpawner's
Kubernetes events (tests/phasespawner.py) gives the scheduling, image-pull and container-start phases within 10 %
of the events' gaps under the profile chosen in user_options; the plain local spawner gets the generic phases;
each spawn, ready or failed, ends with exactly one ``jupyterhub.spawn`` log record at a real OTLP receiver and one
hub log line, in the trace of the spawn's span; 1,000 distinct profiles leave the profile label within its cap."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import fastspawner
import phasespawner
from hubproc import FAILING_USER, Hub, otel_env
from otlp_receiver import OTLPReceiver

pytestmark = pytest.mark.e2e

GENERIC = {"prepare", "start", "wait_up", "proxy"}
PHASE_FAMILY = "jupyterhub_spawn_phase_duration_seconds"


def phase_sums(text: str, profile: str) -> dict[str, tuple[float, float]]:
    """(sum, count) of each phase recorded under ``profile``."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("profile") != profile:
                continue
            if s.name == f"{PHASE_FAMILY}_sum":
                sums[s.labels["phase"]] = s.value
            elif s.name == f"{PHASE_FAMILY}_count":
                counts[s.labels["phase"]] = s.value
    return {phase: (sums[phase], counts[phase]) for phase in sums if counts.get(phase)}


def spawn_lines(hub: Hub, user: str) -> list[str]:
    return [line for line in hub.log().splitlines() if "jh_otel: spawn " in line and f"user={user} " in line]


def wait_until(condition, timeout: float = 30, hub: Hub | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout}s" + (f":\n{hub.log()[-3000:]}" if hub else ""))


@pytest.fixture(scope="module")
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as running:
        yield running


def _env(receiver: OTLPReceiver) -> dict[str, str]:
    return otel_env(
        receiver.http_endpoint,
        metrics="prometheus",
        traces="otlp",
        extra={"OTEL_LOGS_EXPORTER": "otlp", "OTEL_BLRP_SCHEDULE_DELAY": "200"},
    )


@pytest.fixture(scope="module")
def event_hub(receiver: OTLPReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with Hub(tmp_path_factory.mktemp("phases") / "hub", _env(receiver), extra_config=phasespawner.hub_config()) as hub:
        yield hub


def test_kubernetes_events_give_the_phases_under_the_chosen_profile(event_hub: Hub, receiver: OTLPReceiver) -> None:
    """Scheduling, image pull and container start come out within 10 % of the events' gaps, with the generic
    phases, under the user_options profile; one record and one log line, in the spawn's trace."""
    hub = event_hub
    assert hub.api("POST", "/users/kate").status_code == 201
    assert hub.api("POST", "/users/kate/server", json={"profile": "gpu-large"}).status_code in (201, 202)
    hub.wait_server("kate", ready=True)
    phases = wait_until(lambda: (p := phase_sums(hub.scrape(), "gpu-large")) and "proxy" in p and p, hub=hub)
    assert set(phases) == GENERIC | set(phasespawner.PHASES), phases
    assert {count for _, count in phases.values()} == {1}
    for phase, gap in phasespawner.PHASES.items():
        assert phases[phase][0] == pytest.approx(gap, rel=0.1), (phase, phases[phase])

    (record,) = wait_until(lambda: [r for r in receiver.logs("jupyterhub.spawn") if _user(r) == "kate"], hub=hub)
    (span,) = wait_until(lambda: [s for s in receiver.spans("jupyterhub.spawn") if _user(s) == "kate"], hub=hub)
    assert record.trace_id == span.trace_id and record.span_id == span.span_id
    assert span.attributes["jupyterhub.spawn.profile"] == "gpu-large"
    attributes = record.attributes
    assert attributes["jupyterhub.spawn.outcome"] == "success"
    assert attributes["jupyterhub.spawn.profile"] == "gpu-large"
    assert attributes["jupyterhub.spawner.class"] == "phasespawner.EventSpawner"
    for phase, gap in phasespawner.PHASES.items():
        assert attributes[f"jupyterhub.spawn.phase.{phase}.duration"] == pytest.approx(gap, rel=0.1)
    assert attributes["jupyterhub.spawn.duration"] >= attributes["jupyterhub.spawn.phase.wait_up.duration"]

    (line,) = spawn_lines(hub, "kate")
    assert "profile=gpu-large outcome=success" in line and f"trace_id={span.trace_id}" in line
    assert re.search(r" scheduling=2\.\d{3} ", line), line
    assert hub.api("DELETE", "/users/kate/server").status_code in (202, 204)
    hub.wait_server("kate", ready=False)


def test_a_failed_spawn_ends_with_one_record_and_one_line(event_hub: Hub, receiver: OTLPReceiver) -> None:
    """A server that exits at once: one failure record and one log line, the phase it died in named."""
    hub = event_hub
    assert hub.api("POST", f"/users/{FAILING_USER}").status_code == 201
    hub.api("POST", f"/users/{FAILING_USER}/server")  # 202, or 500 when the server dies before the reply
    hub.wait_server(FAILING_USER, ready=False)
    records = wait_until(lambda: [r for r in receiver.logs("jupyterhub.spawn") if _user(r) == FAILING_USER], hub=hub)
    time.sleep(1)  # a second record would have arrived by now
    (record,) = [r for r in receiver.logs("jupyterhub.spawn") if _user(r) == FAILING_USER]
    assert records[0] == record
    assert record.attributes["jupyterhub.spawn.outcome"] == "failure"
    assert record.attributes["error.type"]
    assert record.attributes["jupyterhub.spawn.failed_phase"] in ("start", "wait_up")
    assert record.severity_text == "WARN"
    (span,) = [s for s in receiver.spans("jupyterhub.spawn") if _user(s) == FAILING_USER]
    assert record.trace_id == span.trace_id
    (line,) = spawn_lines(hub, FAILING_USER)
    assert "outcome=failure" in line and f"trace_id={span.trace_id}" in line


def test_the_plain_local_spawner_gets_the_generic_phases(receiver: OTLPReceiver, tmp_path: Path) -> None:
    """SimpleLocalProcessSpawner reports no events: prepare, start, wait_up and proxy, under the empty profile."""
    with Hub(tmp_path / "hub", _env(receiver)) as hub:
        assert hub.api("POST", "/users/lin").status_code == 201
        assert hub.api("POST", "/users/lin/server").status_code in (201, 202)
        hub.wait_server("lin", ready=True)
        phases = wait_until(lambda: (p := phase_sums(hub.scrape(), "")) and "proxy" in p and p, hub=hub)
        assert set(phases) == GENERIC
        assert len(spawn_lines(hub, "lin")) == 1
        assert hub.api("DELETE", "/users/lin/server").status_code in (202, 204)
        hub.wait_server("lin", ready=False)


def test_a_thousand_profiles_stay_within_the_cap(receiver: OTLPReceiver, tmp_path: Path) -> None:
    """1,000 spawns, each with a profile of its own, on a real hub (the in-process FastSpawner): the per-profile
    families have at most the cap's profiles, then ``_other``."""
    env = otel_env(
        receiver.http_endpoint, metrics="prometheus", extra={"OTEL_PYTHON_JUPYTERHUB_MAX_PROFILE_LABELS": "20"}
    )
    with Hub(tmp_path / "hub", env, extra_config=fastspawner.hub_config()) as hub:
        assert hub.api("POST", "/users/many").status_code == 201
        api = f"http://127.0.0.1:{hub.hub_port}/hub/api/users/many/server"  # the hub's own port, as the churn
        deadline = time.monotonic() + 600
        for i in range(1000):
            spawned = hub.session.post(api, json={"profile": f"profile-{i:04d}"}, timeout=30)
            assert spawned.status_code in (201, 202), spawned.text[:300]
            if spawned.status_code == 202:
                wait_until(lambda: hub.api("GET", "/users/many").json()["servers"].get("", {}).get("ready"), hub=hub)
            stopped = hub.session.delete(api, timeout=30)
            assert stopped.status_code in (202, 204), stopped.text[:300]
            if stopped.status_code == 202:
                wait_until(lambda: not hub.api("GET", "/users/many").json()["servers"], hub=hub)
            assert time.monotonic() < deadline
        profiles: dict[str, float] = {}
        for family in text_string_to_metric_families(hub.scrape()):
            for s in family.samples:
                if s.name == "jupyterhub_spawn_profile_duration_seconds_count":
                    profiles[s.labels["profile"]] = profiles.get(s.labels["profile"], 0) + s.value
        assert set(profiles) == {"", "_other"} | {f"profile-{i:04d}" for i in range(20)}
        assert profiles[""] == 0 and profiles["_other"] == 980
        assert sum(profiles.values()) == 1000
        assert hub.log().count("distinct spawn profiles") == 1


def _user(item) -> str:
    return item.attributes.get("jupyterhub.user.name", "")
