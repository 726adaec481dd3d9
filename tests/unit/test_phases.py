"""Spawn phases (jh_otel.hooks.phases): the phases a spawn's hooks and Kubernetes events mark, the bounded profile
label, and the one record a spawn ends with."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any

import pytest
from jupyterhub.spawner import LocalProcessSpawner

from jh_otel.catalogue import SPAWN_PHASES, build_catalogue
from jh_otel.hooks.phases import SpawnPhases, event_phases, event_time, profile_of
from jh_otel.instruments import OVERFLOW, Instruments
from jh_otel.settings import parse_settings
from jh_otel.snapshot import Snapshot

T0 = 1_780_000_000.0


class EventsSpawner(LocalProcessSpawner):
    """A spawner with progress events (as KubeSpawner): only its class matters here."""

    async def progress(self):
        for reason, when in getattr(self, "replay", ()):
            yield {"progress": 50, "message": reason, "raw_event": {"reason": reason, "eventTime": when}}


class User:
    def __init__(self, spawner: Any, name: str = "ada") -> None:
        self.name = name
        self.spawners = {"": spawner}
        spawner.user = self


def series(instruments: Instruments, family: str, suffix: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples ``<family><suffix>`` of a catalogue histogram, by their labels (``le`` left out)."""
    out = {}
    for metric in instruments[family].prometheus.collect():
        for sample in metric.samples:
            if sample.name.endswith(suffix):
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def phases_recorded(instruments: Instruments, profile: str = "") -> dict[str, float]:
    sums = series(instruments, "spawn_phase_duration_seconds", "_sum")
    counts = series(instruments, "spawn_phase_duration_seconds", "_count")
    out = {}
    for labels, value in sums.items():
        named = dict(labels)
        if named["profile"] == profile and counts[labels]:
            out[named["phase"]] = value
    return out


def instruments_for(**environ: str) -> tuple[Instruments, SpawnPhases]:
    settings = parse_settings(environ)
    instruments = Instruments(build_catalogue(settings), Snapshot)
    phases = SpawnPhases(instruments, settings.profile_option, settings.max_profile_labels, records=True)
    return instruments, phases


async def drive(phases: SpawnPhases, user: User, fail: str = "", options: Any = None, step: float = 0.01) -> None:
    """One spawn through the hooks as JupyterHub calls them: User.spawn (pre-spawn hook, start, readiness wait),
    then the route in the spawn future; ``fail`` names the step that raises; start() takes two ``step``s, the
    readiness wait and the route one each."""
    spawner = user.spawners[""]
    spawner.user_options = options or {}

    async def spawn(*args: Any, **kwargs: Any) -> str:
        phases.pre_spawn_hook(lambda: None, spawner, (), {})
        await asyncio.sleep(2 * step)  # start()
        if fail == "start":
            raise TimeoutError("Spawner failed to start within 60 seconds")
        await phases.wait_up(_sleeping(step), user, (spawner,), {})
        return "http://127.0.0.1:9999/user/ada/"

    async def finish() -> None:
        await pending
        proxy = _sleeping(step, RuntimeError("proxy refused") if fail == "proxy" else None)
        try:
            await phases.add_user(proxy, None, (user, ""), {})
        except RuntimeError:
            pass  # JupyterHub logs it, stops the server; the spawn future ends without an error

    pending = phases.user_spawn(spawn, user, ("",), {"options": options})
    spawner._spawn_future = asyncio.ensure_future(finish())
    try:
        await spawner._spawn_future
    except TimeoutError:
        pass
    await asyncio.sleep(0)


def _sleeping(seconds: float, error: BaseException | None = None):
    def call(*args: Any, **kwargs: Any) -> Any:
        async def run() -> None:
            await asyncio.sleep(seconds)
            if error is not None:
                raise error

        return run()

    return call


def test_a_plain_spawner_gets_the_four_generic_phases() -> None:
    """A spawner without progress events records prepare, start, wait_up and proxy once each, and the whole spawn."""
    instruments, phases = instruments_for()
    asyncio.run(drive(phases, User(LocalProcessSpawner())))
    recorded = phases_recorded(instruments)
    assert set(recorded) == {"prepare", "start", "wait_up", "proxy"}
    assert recorded["start"] == pytest.approx(0.02, abs=0.015)
    totals = series(instruments, "spawn_profile_duration_seconds", "_count")
    assert totals[(("profile", ""), ("status", "success"))] == 1


def test_kubernetes_events_mark_scheduling_image_pull_and_container_start() -> None:
    """Scheduled, Pulling/Pulled and Created/Started events give the three phases from their own timestamps."""
    events = [
        ("TriggeredScaleUp", T0 + 0.5),
        ("Scheduled", T0 + 40.0),
        ("Pulling", T0 + 41.0),
        ("Pulled", T0 + 71.0),
        ("Created", T0 + 72.0),
        ("Started", T0 + 73.5),
    ]
    assert event_phases(events, started=T0) == {"scheduling": 40.0, "image_pull": 30.0, "container_start": 1.5}
    # an image already present: no Pulling, no image_pull; a clock behind the API server's: never negative
    assert event_phases([("Scheduled", T0 - 1), ("Pulled", T0), ("Created", T0), ("Started", T0 + 2)], T0) == {
        "scheduling": 0.0,
        "container_start": 2.0,
    }
    assert event_phases([], T0) == {}


def test_event_times_are_read_as_the_api_writes_them() -> None:
    """eventTime (microseconds) is preferred to lastTimestamp (seconds); datetimes and bad strings are handled."""
    assert event_time({"eventTime": "2026-12-01T10:00:00.250000Z", "lastTimestamp": "2026-12-01T10:00:00Z"}) == (
        datetime(2026, 12, 1, 10, 0, 0, 250000, tzinfo=timezone.utc).timestamp()
    )
    assert event_time({"eventTime": None, "lastTimestamp": "2026-12-01T10:00:01Z"}) == (
        datetime(2026, 12, 1, 10, 0, 1, tzinfo=timezone.utc).timestamp()
    )
    moment = datetime(2026, 12, 1, tzinfo=timezone.utc)
    assert event_time({"last_timestamp": moment}) == moment.timestamp()
    assert event_time({"eventTime": "yesterday"}) is None


def test_a_spawner_with_events_gets_all_seven_phases_under_its_profile() -> None:
    """The events a spawner's progress() yields during the spawn become phases, under the user_options profile."""
    instruments, phases = instruments_for()
    spawner = EventsSpawner()
    now = datetime.now(timezone.utc).timestamp()
    spawner.replay = [
        ("Scheduled", _iso(now + 2)),
        ("Pulling", _iso(now + 2.5)),
        ("Pulled", _iso(now + 5.5)),
        ("Created", _iso(now + 6)),
        ("Started", _iso(now + 7)),
    ]
    asyncio.run(drive(phases, User(spawner), options={"profile": "gpu-large"}))
    recorded = phases_recorded(instruments, "gpu-large")
    assert set(recorded) == set(SPAWN_PHASES)
    assert recorded["scheduling"] == pytest.approx(2.0, abs=0.05)
    assert recorded["image_pull"] == pytest.approx(3.0, abs=1e-3)
    assert recorded["container_start"] == pytest.approx(1.0, abs=1e-3)


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_a_failed_spawn_records_its_completed_phases_and_one_failure() -> None:
    """A start() that raises: prepare is a phase, start is not (it did not complete), the spawn is a failure."""
    instruments, phases = instruments_for()
    asyncio.run(drive(phases, User(LocalProcessSpawner()), fail="start"))
    assert set(phases_recorded(instruments)) == {"prepare"}
    totals = series(instruments, "spawn_profile_duration_seconds", "_count")
    assert totals[(("profile", ""), ("status", "failure"))] == 1


def test_a_refused_route_makes_the_spawn_a_failure() -> None:
    """JupyterHub swallows a failed route addition; the spawn is still recorded as failed."""
    instruments, phases = instruments_for()
    asyncio.run(drive(phases, User(LocalProcessSpawner()), fail="proxy"))
    totals = series(instruments, "spawn_profile_duration_seconds", "_count")
    assert totals.get((("profile", ""), ("status", "failure"))) == 1
    assert "proxy" not in phases_recorded(instruments)


def test_the_profile_label_stays_within_its_cap_under_a_thousand_profiles(caplog: pytest.LogCaptureFixture) -> None:
    """1,000 distinct profiles: at most the cap of them are labels, the rest _other, with one warning."""
    instruments, phases = instruments_for(OTEL_PYTHON_JUPYTERHUB_MAX_PROFILE_LABELS="20")

    async def many() -> None:
        for i in range(1000):
            await drive(phases, User(LocalProcessSpawner(), name=f"u{i}"), options={"profile": f"profile-{i}"}, step=0)

    with caplog.at_level(logging.WARNING, logger="jh_otel.spawns"):
        asyncio.run(many())
    profiles = {dict(labels)["profile"] for labels in series(instruments, "spawn_profile_duration_seconds", "_count")}
    assert profiles == {OVERFLOW} | {f"profile-{i}" for i in range(20)}
    assert len([r for r in caplog.records if "distinct spawn profiles" in r.getMessage()]) == 1


def test_one_log_line_per_spawn_with_its_phases(caplog: pytest.LogCaptureFixture) -> None:
    """Each spawn ends with one key=value line: user, profile, outcome, duration and each phase."""
    _, phases = instruments_for()
    with caplog.at_level(logging.INFO, logger="jh_otel.spawns"):
        asyncio.run(drive(phases, User(LocalProcessSpawner(), name="grace hopper"), options={"profile": "small"}))
        asyncio.run(drive(phases, User(LocalProcessSpawner()), fail="start"))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("jh_otel: spawn ")]
    assert len(lines) == 2
    assert 'user="grace hopper" server="" spawner=LocalProcessSpawner profile=small outcome=success' in lines[0]
    for phase in ("prepare=", "start=", "wait_up=", "proxy=", "duration="):
        assert phase in lines[0]
    assert "outcome=failure" in lines[1] and "error_type=TimeoutError" in lines[1] and "failed_phase=start" in lines[1]
    assert 'reason="Spawner failed to start within 60 seconds"' in lines[1]


def test_a_reason_with_a_credential_is_scrubbed_in_the_record(caplog: pytest.LogCaptureFixture) -> None:
    """The error message of a failed spawn goes through the scrubber before it is logged."""
    _, phases = instruments_for()

    class Leaky(LocalProcessSpawner):
        pass

    async def leaky_spawn() -> None:
        spawner = Leaky()
        user = User(spawner)

        async def spawn(*args: Any, **kwargs: Any) -> str:
            raise RuntimeError("cannot pull https://robot:s3cr3t-pa55@registry.example.org/image?token=abcdef123456")

        with pytest.raises(RuntimeError):
            await phases.user_spawn(spawn, user, ("",), {})

    with caplog.at_level(logging.INFO, logger="jh_otel.spawns"):
        asyncio.run(leaky_spawn())
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("jh_otel: spawn ")]
    assert "s3cr3t-pa55" not in line and "abcdef123456" not in line
    assert "outcome=failure" in line


def test_profile_of_reads_the_option_and_nothing_else() -> None:
    """The profile is the option's value as text; no options, no value or a structure give ""."""
    assert profile_of({"profile": "gpu"}, "profile") == "gpu"
    assert profile_of({"image": "x"}, "profile") == ""
    assert profile_of(None, "profile") == ""
    assert profile_of({"profile": {"nested": 1}}, "profile") == ""
    assert profile_of({"size": 4}, "size") == "4"


def test_nothing_of_a_spawn_stays_on_its_spawner() -> None:
    """When the spawn ends, the spawner carries no jh_otel state and no progress reader runs."""
    _, phases = instruments_for()
    spawner = EventsSpawner()
    asyncio.run(drive(phases, User(spawner)))
    assert not [key for key in spawner.__dict__ if key.startswith("_jh_otel")]
