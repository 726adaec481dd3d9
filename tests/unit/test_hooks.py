"""Request, login and spawn hooks: what they record, and that they never change what JupyterHub gets."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest

from jh_otel.hooks.auth import LoginRecorder
from jh_otel.hooks.requests import RequestRecorder
from jh_otel.hooks.routes import Routes
from jh_otel.hooks.spawn import SpawnRecorder


class Recorded:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, float, tuple[str, ...]]] = []
        self.fail = fail

    def __getitem__(self, name: str) -> SimpleNamespace:
        def record(value: float, labels: tuple[str, ...] = ()) -> None:
            if self.fail:
                raise RuntimeError("broken telemetry")
            self.calls.append((name, value, labels))

        return SimpleNamespace(record=record)


class UserAPIHandler:
    def __init__(self, path: str, method: str = "GET", status: int = 200) -> None:
        self.request = SimpleNamespace(path=path, method=method, request_time=lambda: 0.125)
        self._status = status

    def get_status(self) -> int:
        return self._status

    def get(self, user_name):
        pass


ROUTES = Routes([("/hub/api/users/([^/]+)", UserAPIHandler)])
HANDLER = f"{__name__}.UserAPIHandler"


def test_an_api_request_is_counted_once_with_its_route_template() -> None:
    """An API request records duration, count and the API histogram by route template, not the raw path."""
    recorded = Recorded()
    recorder = RequestRecorder(recorded, ROUTES, "/hub/api")
    assert (
        recorder.wrapper(lambda handler: "native", None, (UserAPIHandler("/hub/api/users/alice", status=404),), {})
        == "native"
    )
    assert recorded.calls == [
        ("request_duration_seconds", 0.125, ("GET", HANDLER, "404")),
        ("request_count", 1, ("GET", HANDLER, "404")),
        ("api_request_duration_seconds", 0.125, ("GET", "/hub/api/users/{user_name}", "404")),
    ]


def test_the_replacement_records_the_same_and_skips_jupyterhubs_function() -> None:
    """Standing in for JupyterHub's function, the recorder records exactly what the wrapper records and never calls
    the function it replaces."""
    wrapped, replaced = Recorded(), Recorded()
    handler = UserAPIHandler("/hub/api/users/alice", status=404)
    RequestRecorder(wrapped, ROUTES, "/hub/api").wrapper(lambda handler: None, None, (handler,), {})

    def jupyterhubs(handler):
        raise AssertionError("JupyterHub's function ran")

    assert (
        RequestRecorder(replaced, ROUTES, "/hub/api").replacement(jupyterhubs, None, (), {"handler": handler}) is None
    )
    assert replaced.calls == wrapped.calls and len(replaced.calls) == 3


def test_a_broken_replacement_does_not_reach_the_hub() -> None:
    """If recording raises in the replacement, the hub's log function still returns normally."""
    recorder = RequestRecorder(Recorded(fail=True), ROUTES, "/hub/api")
    assert recorder.replacement(lambda handler: "native", None, (UserAPIHandler("/hub/api/users/a"),), {}) is None


def test_a_page_request_goes_to_the_hub_response_histogram_and_odd_methods_are_bounded() -> None:
    """Requests outside the API are hub responses; a method tornado does not know is recorded as _OTHER."""
    recorded = Recorded()
    RequestRecorder(recorded, ROUTES, "/hub/api").record(UserAPIHandler("/hub/home", method="BREW"))
    assert recorded.calls[-1] == ("hub_response_duration_seconds", 0.125, ())
    assert recorded.calls[0][2][0] == "_OTHER"


def test_a_broken_request_recorder_does_not_reach_the_hub() -> None:
    """If recording raises, the hub's log function still returns normally."""
    recorder = RequestRecorder(Recorded(fail=True), ROUTES, "/hub/api")
    assert recorder.wrapper(lambda handler: "native", None, (UserAPIHandler("/hub/api/users/a"),), {}) == "native"


@pytest.mark.parametrize(("outcome", "expected"), [("user", "login_success"), (None, "login_failure")])
def test_login_outcomes(outcome, expected) -> None:
    """login_user returning a user is a success, returning None a failure; the result is passed through."""
    recorded = Recorded()

    async def login_user(data=None):
        return outcome

    result = asyncio.run(LoginRecorder(recorded).wrapper(login_user, None, (), {}))
    assert result == outcome
    assert recorded.calls == [(expected, 1, ())]


def test_a_login_that_raises_is_a_failure_and_still_raises() -> None:
    """An authenticator exception counts as a failed login and reaches the hub unchanged."""
    recorded = Recorded()

    async def login_user(data=None):
        raise PermissionError("no")

    with pytest.raises(PermissionError):
        asyncio.run(LoginRecorder(recorded).wrapper(login_user, None, (), {}))
    assert recorded.calls == [("login_failure", 1, ())]


class LocalProcessSpawner:
    pass


def test_spawn_success_and_failure_by_spawner_class_and_error_type() -> None:
    """A spawn that returns is a success, one that raises a failure with the exception's class name."""
    recorded = Recorded()
    user = SimpleNamespace(spawners={"": LocalProcessSpawner()})

    async def ok(server_name=""):
        return "url"

    async def fails(server_name=""):
        raise TimeoutError("too slow")

    recorder = SpawnRecorder(recorded)
    assert asyncio.run(recorder.wrapper(ok, user, (), {})) == "url"
    with pytest.raises(TimeoutError):
        asyncio.run(recorder.wrapper(fails, user, ("",), {}))
    names = [(name, labels) for name, _, labels in recorded.calls]
    assert names == [
        ("spawn_duration_seconds", ("LocalProcessSpawner",)),
        ("spawn_success", ("LocalProcessSpawner",)),
        ("spawn_duration_seconds", ("LocalProcessSpawner",)),
        ("spawn_failure", ("LocalProcessSpawner", "TimeoutError")),
    ]


def test_a_broken_spawn_recorder_does_not_change_the_spawn() -> None:
    """With telemetry failing, the spawn's result and exception are JupyterHub's own."""
    recorder = SpawnRecorder(Recorded(fail=True))

    async def ok(server_name=""):
        return "url"

    assert asyncio.run(recorder.wrapper(ok, SimpleNamespace(spawners={}), (), {})) == "url"


def test_a_request_that_cannot_be_recorded_still_returns_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A request record that raises (here: a handler without a request) returns the wrapped result, logs one
    warning naming what failed, and repeats only at debug level."""
    from jh_otel._guard import _reported

    recorder = object.__new__(RequestRecorder)
    _reported.discard("recording a request")
    with caplog.at_level(logging.DEBUG, logger="jh_otel"):
        results = [recorder.wrapper(lambda handler: "logged", None, (object(),), {}) for _ in range(2)]
    assert results == ["logged", "logged"]
    levels = [(r.levelname, r.getMessage()) for r in caplog.records if "recording a request" in r.getMessage()]
    assert levels == [
        ("WARNING", "jh_otel: recording a request failed; the hub is unaffected"),
        ("DEBUG", "jh_otel: recording a request failed; the hub is unaffected"),
    ]
