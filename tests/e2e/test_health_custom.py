"""Health checks, custom metrics and per-server resource usage on a real hub: each built-in check healthy, then
unhealthy (proxy stopped, database file gone, a spawn stuck), then healthy again; the JSON report behind
authentication; a check registered in the config file; a custom authenticator and spawner using the helpers; a flood
of user names within the cap; a server's usage as psutil sees its process tree."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from hubproc import PASSWORD, SERVICE_TOKEN, Hub, free_port, otel_env

pytestmark = pytest.mark.e2e

CAP = 3

EXTRA_CONFIG = """
import asyncio, os
from jh_otel import custom, health
from jupyterhub.spawner import SimpleLocalProcessSpawner

RELEASE = {release!r}
SCRATCH = {scratch!r}
LOGINS = custom.counter("user_login", "Total user logins", ["username", "authenticator"])
LAUNCHES = custom.histogram(
    "notebook_launch_duration_seconds", "Time to launch notebook server", ["username", "spawner_type"]
)

# DemoAuthenticator: the demo config's password authenticator (it refuses wrong passwords on JupyterHub 5.0 to 6.x)
class MetricsAuthenticator(DemoAuthenticator):
    async def authenticate(self, handler, data):
        result = await super().authenticate(handler, data)
        if result:
            LOGINS.inc(username=data["username"], authenticator=type(self).__name__)
            custom.record_custom_event("user_login", data["username"])
        return result

class MetricsSpawner(SimpleLocalProcessSpawner):
    async def start(self):
        if self.user.name == "stuck":
            # a spawner that ignores cancellation: JupyterHub's start_timeout cannot end this spawn
            while not os.path.exists(RELEASE):
                try:
                    await asyncio.sleep(0.2)
                except asyncio.CancelledError:
                    pass
            raise RuntimeError("released")
        with LAUNCHES.time(username=self.user.name, spawner_type=type(self).__name__):
            return await super().start()

_hook = c.Spawner.pre_spawn_hook
def _short_timeouts(spawner):
    _hook(spawner)
    if spawner.user.name == "stuck":
        spawner.start_timeout = 2
        spawner.http_timeout = 1
c.Spawner.pre_spawn_hook = _short_timeouts
c.JupyterHub.authenticator_class = MetricsAuthenticator
c.JupyterHub.spawner_class = MetricsSpawner
c.ConfigurableHTTPProxy.pid_file = {pid_file!r}

health.register_check("scratch_space", lambda: os.path.exists(SCRATCH), interval=1, timeout=2)
"""


class Stack:
    def __init__(self, hub: Hub, release: Path, scratch: Path) -> None:
        self.hub, self.release, self.scratch = hub, release, scratch
        # straight to the hub, not through the proxy (which a test stops)
        self.direct = f"http://127.0.0.1:{hub.hub_port}"

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(f"{self.direct}/hub/{path}", timeout=30, **kwargs)

    def report(self) -> dict:
        response = self.get("api/jh-otel/health", headers={"Authorization": f"token {SERVICE_TOKEN}"})
        response.raise_for_status()
        return response.json()

    def metrics(self) -> dict[tuple[str, tuple], float]:
        text = self.get("metrics", headers={"Authorization": f"token {SERVICE_TOKEN}"}).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def wait_status(self, check: str, status: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        report: dict = {}
        while time.monotonic() < deadline:
            report = self.report()
            if report["checks"].get(check, {}).get("status") == status:
                return report
            time.sleep(0.3)
        raise AssertionError(f"{check} not {status} within {timeout}s: {report}\n{self.hub.log()[-3000:]}")

    def status_metric(self, check: str) -> float:
        return self.metrics()[("jupyterhub_health_check_status", (("check", check),))]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("health")
    release, scratch = tmp / "release", tmp / "scratch"
    scratch.mkdir()
    env = otel_env(
        "http://127.0.0.1:1",
        metrics="prometheus",
        exporter_port=free_port(),
        extra={
            "OTEL_PYTHON_JUPYTERHUB_HEALTH_INTERVAL": "1",
            "OTEL_PYTHON_JUPYTERHUB_MAX_USER_LABELS": str(CAP),
            "OTEL_PYTHON_JUPYTERHUB_RESOURCE_USAGE": "on",
            "OTEL_PYTHON_JUPYTERHUB_REFRESH_INTERVAL": "1",
        },
    )
    config = EXTRA_CONFIG.format(release=str(release), scratch=str(scratch), pid_file=str(tmp / "proxy.pid"))
    with Hub(tmp / "hub", env, extra_config=config) as hub:
        yield Stack(hub, release, scratch)


def test_every_check_is_healthy_and_the_report_needs_read_metrics(stack: Stack) -> None:
    """The database, proxy, spawners and ``scratch_space`` checks become healthy in the report (with their details) and
    in their status metric (1), and the JSON report answers 403 without a token or with a forged one."""
    for check in ("database", "proxy", "spawners", "scratch_space"):
        stack.wait_status(check, "healthy")
    report = stack.report()
    assert report["status"] == "healthy"
    assert report["checks"]["proxy"]["detail"].endswith("routes")
    assert {"duration_seconds", "time"} <= set(report["checks"]["database"])
    for check in ("database", "proxy", "spawners", "scratch_space"):
        assert stack.status_metric(check) == 1
    unauthenticated = stack.get("api/jh-otel/health")
    assert unauthenticated.status_code == 403 and "checks" not in unauthenticated.text
    forged = stack.get("api/jh-otel/health", headers={"Authorization": "token not-a-token"})
    assert forged.status_code == 403


def flip(stack: Stack, check: str, break_it: Callable[[], None], repair: Callable[[], None]) -> str:
    stack.wait_status(check, "healthy")
    break_it()
    try:
        report = stack.wait_status(check, "unhealthy")
        assert stack.status_metric(check) == 0
    finally:
        repair()
    stack.wait_status(check, "healthy")
    assert stack.status_metric(check) == 1
    return report["checks"][check]["detail"]


def test_the_proxy_check_follows_a_stopped_proxy(stack: Stack) -> None:
    """Stopping the proxy (SIGSTOP) makes the proxy check unhealthy (metric 0, detail "did not answer"), and resuming it
    makes the check healthy again (metric 1)."""
    pid = int((stack.hub.dir.parent / "proxy.pid").read_text())
    detail = flip(stack, "proxy", lambda: os.kill(pid, signal.SIGSTOP), lambda: os.kill(pid, signal.SIGCONT))
    assert "did not answer" in detail


def test_the_database_check_follows_the_database_file(stack: Stack) -> None:
    """Moving the database file away makes the database check unhealthy (metric 0, detail "unable to open database
    file"), and moving it back makes it healthy again (metric 1)."""
    database = stack.hub.dir / "jupyterhub.sqlite"
    moved = database.with_suffix(".moved")
    detail = flip(stack, "database", lambda: database.rename(moved), lambda: moved.rename(database))
    assert "unable to open database file" in detail


def test_the_spawners_check_finds_a_stuck_spawn(stack: Stack) -> None:
    """A spawn that stays pending past start_timeout + http_timeout (its spawner ignores cancellation) makes the
    spawners check unhealthy, naming the user, until the spawn ends."""

    def start_stuck_spawn() -> None:
        assert stack.hub.api("POST", "/users", json={"usernames": ["stuck"]}).status_code == 201
        status = stack.hub.api("POST", "/users/stuck/server").status_code
        if status == 500 and "failed to start in 2 seconds, giving up" in stack.hub.log():
            stack.release.touch()
            pytest.skip("this JupyterHub (5.0) ends a spawn at start_timeout even when its spawner ignores it")
        assert status in (201, 202)

    detail = flip(stack, "spawners", start_stuck_spawn, stack.release.touch)
    assert "stuck" in detail and "pending past start_timeout" in detail


def test_a_check_registered_in_the_config_file_runs(stack: Stack) -> None:
    """The ``scratch_space`` check registered in the hub's config file turns unhealthy (metric 0) when its directory is
    removed and healthy (metric 1) when it is back."""
    flip(stack, "scratch_space", stack.scratch.rmdir, stack.scratch.mkdir)


def test_the_custom_authenticator_and_spawner_record_the_spec_metrics(stack: Stack) -> None:
    """A good and a refused login and a spawn by ``dora`` give one login, one ``user_login`` custom event and one launch
    of between 0 and 60 s in ``/hub/metrics``, each of the three families with one ``# TYPE`` line."""
    hub = stack.hub
    assert hub.login("dora", PASSWORD).status_code == 302
    assert hub.refused(hub.login("dora", "wrong"))
    assert hub.api("POST", "/users/dora/server").status_code in (201, 202)
    hub.wait_server("dora", ready=True)
    metrics = stack.metrics()
    assert (
        metrics[("jupyterhub_user_login_total", (("authenticator", "MetricsAuthenticator"), ("username", "dora")))] == 1
    )
    assert metrics[("jupyterhub_custom_events_total", (("event_type", "user_login"), ("user", "dora")))] == 1
    launch = (("spawner_type", "MetricsSpawner"), ("username", "dora"))
    assert metrics[("jupyterhub_notebook_launch_duration_seconds_count", launch)] == 1
    assert 0 < metrics[("jupyterhub_notebook_launch_duration_seconds_sum", launch)] < 60
    # served once, though OpenTelemetry's Prometheus exporter in the hub renders the same meter
    text = stack.get("metrics", headers={"Authorization": f"token {SERVICE_TOKEN}"}).text
    for family in (
        "jupyterhub_user_login_total",
        "jupyterhub_notebook_launch_duration_seconds",
        "jupyterhub_custom_events_total",
    ):
        assert text.count(f"# TYPE {family} ") == 1, family


def server_tree_rss(hub: Hub, user: str) -> int:
    hub_process = psutil.Process(hub.proc.pid)
    for process in hub_process.children(recursive=True):
        try:
            if process.environ().get("JUPYTERHUB_USER") == user and "singleuser" in " ".join(process.cmdline()):
                tree = [process, *process.children(recursive=True)]
                return sum(p.memory_info().rss for p in tree)
        except psutil.Error:
            continue
    raise AssertionError(f"no server process for {user}")


def test_per_server_usage_is_what_psutil_sees(stack: Stack) -> None:
    """``dora``'s server memory in ``jupyterhub_resource_usage`` is within 10 % of the RSS psutil sums over its process
    tree, and its CPU is between 0 and 100 times the CPU count."""
    stack.hub.wait_server("dora", ready=True)
    key = ("jupyterhub_resource_usage", (("resource_type", "memory"), ("server_name", ""), ("username", "dora")))
    deadline = time.monotonic() + 30
    while key not in (metrics := stack.metrics()) and time.monotonic() < deadline:
        time.sleep(0.5)
    reported, actual = metrics[key], server_tree_rss(stack.hub, "dora")
    assert reported == pytest.approx(actual, rel=0.1)
    cpu = metrics[("jupyterhub_resource_usage", (("resource_type", "cpu"), ("server_name", ""), ("username", "dora")))]
    assert 0 <= cpu <= 100 * psutil.cpu_count()


def test_a_flood_of_user_names_stays_within_the_cap(stack: Stack) -> None:
    """Logins by twice the cap of distinct user names leave the cap plus one ``user`` values (``_other`` among them) on
    the custom events and the cap plus one label sets on the logins, and the hub logs that ``custom_events`` has 3
    distinct user names."""
    names = [f"flood{i}" for i in range(2 * CAP)]
    for name in names:
        assert stack.hub.login(name, PASSWORD).status_code == 302
    metrics = stack.metrics()
    users = {dict(labels).get("user") for (name, labels) in metrics if name == "jupyterhub_custom_events_total"}
    assert len(users) == CAP + 1 and "_other" in users
    logins = [labels for (name, labels) in metrics if name == "jupyterhub_user_login_total"]
    assert len(logins) == CAP + 1
    assert "jh_otel: custom_events has 3 distinct user names" in stack.hub.log()
