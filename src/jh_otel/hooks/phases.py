"""Where a spawn's time goes: its phases, by profile, and one record per spawn.

Phases (the closed set :data:`jh_otel.catalogue.SPAWN_PHASES`), each timed on the hub's clock where the hub does
the work:

- ``prepare``: ``User.spawn`` begins, until the spawner's ``start()`` is called (auth state, user options, the
  pre-spawn hooks: the end of ``Spawner.run_pre_spawn_hook``, after which ``User.spawn`` calls ``start()``);
- ``start``: until ``start()`` returned (the hub then waits for the server: ``User._wait_up`` begins);
- ``wait_up``: ``User._wait_up``, until the server answers;
- ``proxy``: ``Proxy.add_user``, the route added.

and, for spawners that report Kubernetes events in ``progress()`` (KubeSpawner's ``raw_event``), from the events'
own timestamps: ``scheduling`` (``start()`` called until ``Scheduled``, a ``TriggeredScaleUp`` wait included),
``image_pull`` (the first ``Pulling`` to the last ``Pulled``), ``container_start`` (the first ``Created`` to the
last ``Started``). jh_otel reads ``progress()`` itself during the spawn (a spawner class that defines its own
``progress()``; it must be readable twice, as KubeSpawner's is: it reads its event reflector), whether or not a
browser watches the progress page.

A spawn ends when the spawner's ``_spawn_future`` does (route added, or the spawn failed or was cancelled), or
with ``User.spawn`` when no handler started it. Then the completed phases and the whole spawn are recorded under
the spawn's profile, and (``OTEL_PYTHON_JUPYTERHUB_SPAWN_RECORDS=on``) one ``jupyterhub.spawn`` log record goes
to the OpenTelemetry logger provider in the spawn's trace, and one key=value line to the hub's log.

Every hook is a function-level wrapper (none per instance); a spawn's state lives on its spawner and goes when the
spawn ends, so nothing here outlives a spawner.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from .._guard import guarded
from ..instruments import OVERFLOW, Instruments
from ..scrub import scrub_text, truncate

log = logging.getLogger("jh_otel.spawns")

_STATE = "_jh_otel_spawn"
"""The spawner's ``__dict__`` key of the spawn in progress."""
MAX_EVENTS = 200
"""Progress events kept per spawn (the first ones: the phases are in them)."""
MAX_TEXT = 512
"""Longest reason or name in a record."""
SCHEDULING_WAITS = ("FailedScheduling", "TriggeredScaleUp", "NotTriggerScaleUp")


def profile_of(options: Any, key: str) -> str:
    """The profile a spawn's ``user_options`` name under ``key``; ``""`` without one."""
    if not isinstance(options, dict):
        return ""
    value = options.get(key)
    if value is None or isinstance(value, (dict, list)):
        return ""
    return truncate(str(value), 128)


def event_time(raw: dict[str, Any]) -> float | None:
    """Unix time of a Kubernetes event (``eventTime``, the finer one, else ``lastTimestamp``/``firstTimestamp``):
    RFC 3339 strings as the API sends them, or ``datetime`` objects."""
    for key in ("eventTime", "lastTimestamp", "firstTimestamp", "event_time", "last_timestamp", "first_timestamp"):
        value = raw.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, str) and value:
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


def event_phases(events: list[tuple[str, float]], started: float | None) -> dict[str, float]:
    """The phases that progress events (``(reason, unix time)``, in arrival order) mark; ``started`` is the Unix
    time ``start()`` was called. A phase whose events are missing is absent; none is negative."""
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for reason, when in events:
        first.setdefault(reason, when)
        last[reason] = when
    phases: dict[str, float] = {}
    if "Scheduled" in first:
        origins = [first[r] for r in SCHEDULING_WAITS if r in first]
        if started is not None:
            origins.append(started)
        if origins:
            phases["scheduling"] = max(0.0, first["Scheduled"] - min(origins))
    if "Pulling" in first and "Pulled" in last:
        phases["image_pull"] = max(0.0, last["Pulled"] - first["Pulling"])
    if "Created" in first and "Started" in last:
        phases["container_start"] = max(0.0, last["Started"] - first["Created"])
    return phases


class Profiles:
    """Bounds the distinct profile label values: past ``cap``, new ones are ``_other`` (one warning)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._seen: set[str] = {""}
        self._warned = False

    def label(self, profile: str) -> str:
        if profile in self._seen:
            return profile
        if len(self._seen) <= self.cap:  # "" (no profile) does not count against the cap
            self._seen.add(profile)
            return profile
        if not self._warned:
            self._warned = True
            log.warning(
                "jh_otel: %d distinct spawn profiles; recording new ones as %s "
                "(OTEL_PYTHON_JUPYTERHUB_MAX_PROFILE_LABELS)",
                self.cap,
                OVERFLOW,
            )
        return OVERFLOW


@dataclass(eq=False)
class Spawn:
    """One spawn in progress."""

    began: float
    profile: str
    context: trace.SpanContext
    phase: str = "prepare"
    phase_began: float = 0.0
    durations: dict[str, float] = field(default_factory=dict)
    start_called: float | None = None
    """Unix time ``start()`` was called."""
    events: list[tuple[str, float]] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None
    error: BaseException | None = None
    """An error the spawn future does not raise (a failed route addition)."""
    done: bool = False

    def enter(self, phase: str, now: float) -> None:
        """End the phase in progress (recorded as completed) and begin ``phase`` (``""``: none)."""
        if self.phase:
            self.durations[self.phase] = now - self.phase_began
        self.phase, self.phase_began = phase, now


class SpawnPhases:
    """The hooks of :mod:`jh_otel.hooks.phases` and what they record."""

    def __init__(self, instruments: Instruments, profile_option: str, max_profiles: int, records: bool) -> None:
        self._phase = instruments["spawn_phase_duration_seconds"].record
        self._total = instruments["spawn_profile_duration_seconds"].record
        self._option = profile_option
        self._profiles = Profiles(max_profiles)
        self._records = records
        self._logger: Any = None
        if records:
            from opentelemetry import _logs

            self._logger = _logs.get_logger("jh_otel.spawns")

    # -- hooks --
    def user_spawn(self, wrapped: Any, user: Any, args: Any, kwargs: Any) -> Any:
        server_name = args[0] if args else kwargs.get("server_name", "")
        pending = wrapped(*args, **kwargs)
        if not inspect.isawaitable(pending):
            return pending
        # options' position differs (JupyterHub 6 added display_name before it): the spawner's user_options, which
        # User.spawn sets from them, are read when the spawn ends
        return self._spawn(pending, user, server_name or "", kwargs.get("options"))

    async def _spawn(self, pending: Any, user: Any, server_name: str, options: Any) -> Any:
        spawner, spawn = None, None
        with guarded("timing a spawn"):
            spawner = user.spawners.get(server_name)
            if spawner is not None:
                now = time.perf_counter()
                spawn = Spawn(now, profile_of(options, self._option), trace.get_current_span().get_span_context())
                spawn.phase_began = now
                spawner.__dict__[_STATE] = spawn
        try:
            result = await pending
        except BaseException as error:
            if spawn is not None:
                self._finish(spawner, spawn, error)
            raise
        if spawn is not None:
            with guarded("timing a spawn"):
                future = getattr(spawner, "_spawn_future", None)
                if future is not None and not future.done():
                    future.add_done_callback(lambda f: self._finish(spawner, spawn, _error_of(f)))
                else:
                    self._finish(spawner, spawn, None)
        return result

    def pre_spawn_hook(self, wrapped: Any, spawner: Any, args: Any, kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        if inspect.isawaitable(result):
            return self._then_start(result, spawner)
        self._start(spawner)
        return result

    async def _then_start(self, pending: Any, spawner: Any) -> Any:
        result = await pending
        self._start(spawner)
        return result

    def wait_up(self, wrapped: Any, user: Any, args: Any, kwargs: Any) -> Any:
        spawner = args[0] if args else kwargs.get("spawner")
        return self._around(wrapped(*args, **kwargs), spawner, "wait_up")

    def add_user(self, wrapped: Any, proxy: Any, args: Any, kwargs: Any) -> Any:
        user = args[0] if args else kwargs.get("user")
        server_name = args[1] if len(args) > 1 else kwargs.get("server_name", "")
        spawner = None
        with guarded("timing a spawn"):
            spawner = getattr(user, "spawners", {}).get(server_name or "")
        return self._around(wrapped(*args, **kwargs), spawner, "proxy")

    def _around(self, pending: Any, spawner: Any, phase: str) -> Any:
        """``pending`` (the wrapped call's coroutine) timed as ``phase`` of the spawn in progress, if any."""
        spawn = _current(spawner)
        if spawn is None or not inspect.isawaitable(pending):
            return pending
        return self._timed(pending, spawn, phase)

    async def _timed(self, pending: Any, spawn: Spawn, phase: str) -> Any:
        with guarded("timing a spawn"):
            spawn.enter(phase, time.perf_counter())
        try:
            result = await pending
        except BaseException as error:
            if phase == "proxy":
                spawn.error = error  # JupyterHub stops the server and the spawn future ends without an error
            raise
        with guarded("timing a spawn"):
            spawn.enter("", time.perf_counter())
        return result

    # -- the spawn's life --
    def _start(self, spawner: Any) -> None:
        spawn = _current(spawner)
        if spawn is None:
            return
        with guarded("timing a spawn"):
            spawn.enter("start", time.perf_counter())
            spawn.start_called = time.time()
            if _reports_progress(spawner):
                spawn.reader = asyncio.ensure_future(_read_progress(spawner, spawn))

    def _finish(self, spawner: Any, spawn: Spawn, error: BaseException | None) -> None:
        with guarded("recording a spawn's phases"):
            if spawn.done:
                return
            spawn.done = True
            now = time.perf_counter()
            if spawner.__dict__.get(_STATE) is spawn:
                del spawner.__dict__[_STATE]
            if spawn.reader is not None:
                spawn.reader.cancel()
                spawn.reader = None
            failed_phase = spawn.phase
            if spawn.phase:
                spawn.phase = ""  # the phase in progress did not complete: not a phase duration
            error = error or spawn.error
            outcome = "success" if error is None else "cancelled" if _cancelled(error) else "failure"
            profile = profile_of(getattr(spawner, "user_options", None), self._option) or spawn.profile
            label = self._profiles.label(profile)
            phases = dict(spawn.durations)
            phases.update(event_phases(spawn.events, spawn.start_called))
            total = now - spawn.began
            # recorded in the spawn's trace (the future's callback runs outside it): exemplars open that trace
            token = otel_context.attach(trace.set_span_in_context(trace.NonRecordingSpan(spawn.context)))
            try:
                for phase, seconds in phases.items():
                    self._phase(seconds, (phase, label))
                self._total(total, (label, outcome))
            finally:
                otel_context.detach(token)
            if self._records:
                self._record(spawner, spawn, profile, outcome, error, total, phases, failed_phase)

    def _record(
        self,
        spawner: Any,
        spawn: Spawn,
        profile: str,
        outcome: str,
        error: BaseException | None,
        total: float,
        phases: dict[str, float],
        failed_phase: str,
    ) -> None:
        user = getattr(getattr(spawner, "user", None), "name", "")
        reason = getattr(error, "reason", None) if error is not None else None
        message = str(error) if error is not None and not _cancelled(error) else ""
        fields: dict[str, Any] = {
            "user": truncate(str(user), MAX_TEXT),
            "server": truncate(str(getattr(spawner, "name", "") or ""), MAX_TEXT),
            "spawner": type(spawner).__name__,
            "profile": profile,
            "outcome": outcome,
            "reason": scrub_text(truncate(reason if isinstance(reason, str) else message, MAX_TEXT)),
            "error_type": type(error).__qualname__ if error is not None else "",
            "failed_phase": failed_phase if outcome != "success" else "",
            "duration": round(total, 6),
            **{phase: round(seconds, 6) for phase, seconds in phases.items()},
        }
        context = spawn.context
        trace_id = f"{context.trace_id:032x}" if context.is_valid else ""
        log.info("jh_otel: spawn %s%s", _key_values(fields), f" trace_id={trace_id}" if trace_id else "")
        attributes = {
            "jupyterhub.user.name": fields["user"],
            "jupyterhub.server.name": fields["server"],
            "jupyterhub.spawner.class": f"{type(spawner).__module__}.{type(spawner).__qualname__}",
            "jupyterhub.spawn.profile": profile,
            "jupyterhub.spawn.outcome": outcome,
            "jupyterhub.spawn.duration": total,
            **{f"jupyterhub.spawn.phase.{phase}.duration": seconds for phase, seconds in phases.items()},
        }
        for key, name in (("reason", "jupyterhub.reason"), ("error_type", "error.type")):
            if fields[key]:
                attributes[name] = fields[key]
        if fields["failed_phase"]:
            attributes["jupyterhub.spawn.failed_phase"] = fields["failed_phase"]
        from opentelemetry._logs import SeverityNumber

        self._logger.emit(
            event_name="jupyterhub.spawn",
            context=trace.set_span_in_context(trace.NonRecordingSpan(context)) if context.is_valid else None,
            severity_number=SeverityNumber.INFO if outcome == "success" else SeverityNumber.WARN,
            severity_text="INFO" if outcome == "success" else "WARN",
            body=f"spawn {outcome}",
            attributes=attributes,
        )


def _current(spawner: Any) -> Spawn | None:
    state = getattr(spawner, "__dict__", {}).get(_STATE) if spawner is not None else None
    return state if isinstance(state, Spawn) and not state.done else None


def _reports_progress(spawner: Any) -> bool:
    from jupyterhub.spawner import Spawner

    return getattr(type(spawner), "progress", None) is not Spawner.progress


async def _read_progress(spawner: Any, spawn: Spawn) -> None:
    """Keep the Kubernetes events of the spawner's progress (reason, time) until the spawn ends."""
    try:
        async for event in spawner.progress():
            raw = event.get("raw_event") if isinstance(event, dict) else None
            if isinstance(raw, dict) and isinstance(raw.get("reason"), str) and len(spawn.events) < MAX_EVENTS:
                when = event_time(raw)
                if when is not None:
                    spawn.events.append((raw["reason"], when))
    except asyncio.CancelledError:
        raise
    except Exception:
        log.debug("jh_otel: reading the progress of %s failed", type(spawner).__name__, exc_info=True)


def _error_of(future: Any) -> BaseException | None:
    if future.cancelled():
        return asyncio.CancelledError()
    return future.exception()


def _cancelled(error: BaseException) -> bool:
    return isinstance(error, asyncio.CancelledError)


def _key_values(fields: dict[str, Any]) -> str:
    """``key=value`` pairs; strings with spaces, quotes, ``=`` or nothing at all are JSON-quoted."""
    parts = []
    for key, value in fields.items():
        if isinstance(value, float):
            text = f"{value:.3f}"
        else:
            text = str(value)
            if not text or any(c in text for c in ' "=\\\n\t'):
                text = json.dumps(text)
        parts.append(f"{key}={text}")
    return " ".join(parts)
