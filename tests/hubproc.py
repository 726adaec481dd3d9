"""A real JupyterHub in a subprocess, on loopback, for end-to-end tests and benchmarks.

The hub runs ``jupyterhub`` (optionally under ``opentelemetry-instrument``) from the same environment as the
tests, with the real configurable-http-proxy, the demo's ``DemoAuthenticator`` (SharedPasswordAuthenticator, or
DummyAuthenticator before JupyterHub 5.3) and ``SimpleLocalProcessSpawner`` (real ``jupyterhub-singleuser``
servers). A service token with ``read:metrics`` and admin scopes drives the REST API.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import requests

from jh_otel.demo import render_config

BIN = Path(sys.executable).parent
SERVICE_TOKEN = "e2e-service-token-0123456789abcdef"
PASSWORD = "correct-horse"
ADMIN_PASSWORD = "e2e-admin-password-0123456789abcdef"  # SharedPasswordAuthenticator: 32+ characters
FAILING_USER = "broken"


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port nobody listens on now and that this process has not handed out before: the kernel can give
    two ``bind(0)`` calls in a row the same port, and a hub whose proxy got one port for both its public and its API
    side did not start (configurable-http-proxy: EADDRINUSE)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no loopback port not handed out before, after 100 tries")


# the demo hub's config (jh_otel.demo), plus a service to drive the REST API and a user whose spawn fails
TEST_CONFIG = """
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60
c.Spawner.default_url = "/api/status"
c.JupyterHub.pid_file = "{dir}/hub.pid"
c.JupyterHub.services.append({{"name": "e2e", "api_token": "{token}"}})
c.JupyterHub.load_roles.append({{
    "name": "e2e", "services": ["e2e"],
    "scopes": ["read:metrics", "admin:users", "admin:servers", "tokens", "read:hub"],
}})

def _pre_spawn(spawner):
    # a spawn that fails for real: the server process exits at once
    if spawner.user.name == "{failing}":
        spawner.cmd = ["{python}", "-c", "raise SystemExit(3)"]

c.Spawner.pre_spawn_hook = _pre_spawn
{extra}
"""


def otel_env(
    endpoint: str,
    *,
    protocol: str = "http/protobuf",
    metrics: str = "prometheus,otlp",
    traces: str = "none",
    exporter_port: int | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The OpenTelemetry environment of a test hub: OTLP to ``endpoint``, quick exports, no logs exporter; the
    Prometheus exporter on loopback at ``exporter_port`` when given."""
    env = {
        "OTEL_SERVICE_NAME": "jupyterhub",
        "OTEL_METRICS_EXPORTER": metrics,
        "OTEL_TRACES_EXPORTER": traces,
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    if exporter_port is not None:
        env["OTEL_EXPORTER_PROMETHEUS_HOST"] = "127.0.0.1"
        env["OTEL_EXPORTER_PROMETHEUS_PORT"] = str(exporter_port)
    return env | (extra or {})


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """Poll ``url`` until it answers 200 (True), ``timeout`` passes or ``proc`` exits (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.2)
    return False


class Hub:
    def __init__(
        self,
        workdir: Path,
        env: dict[str, str] | None = None,
        wrapper: bool = True,
        extra_config: str = "",
    ) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port, self.hub_port, self.proxy_api_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = self.dir / "jupyterhub_config.py"
        token_file = self.dir / "metrics-token"
        token_file.write_text("demo-metrics-token-0123456789")
        self.config.write_text(
            render_config(self.dir, self.port, self.hub_port, self.proxy_api_port, PASSWORD, token_file, ADMIN_PASSWORD)
            + TEST_CONFIG.format(
                dir=self.dir,
                token=SERVICE_TOKEN,
                failing=FAILING_USER,
                python=sys.executable,
                extra=textwrap.dedent(extra_config),
            )
        )
        self.env = dict(os.environ)
        self.env["PATH"] = f"{BIN}{os.pathsep}{self.env.get('PATH', '')}"
        self.env.update(env or {})
        self.wrapper = wrapper
        self.log_path = self.dir / "hub.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {SERVICE_TOKEN}"

    @property
    def command(self) -> list[str]:
        hub = [str(BIN / "jupyterhub"), "-f", str(self.config)]
        return ([str(BIN / "opentelemetry-instrument")] if self.wrapper else []) + hub

    def start(self, timeout: float = 60) -> Hub:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command, cwd=self.dir, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        if not wait_http(f"{self.url}/hub/health", timeout, self.proc):
            self.stop()  # a hub that did not answer in time is still running: ``with Hub(...)`` never exits it
            raise RuntimeError(f"hub did not answer within {timeout}s:\n{self.log()[-4000:]}")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, f"{self.url}/hub/api{path}", **kwargs)

    def scrape(self, authenticated: bool = True) -> str:
        headers = None if authenticated else {"Authorization": ""}
        response = self.session.get(f"{self.url}/hub/metrics", headers=headers, timeout=30)
        response.raise_for_status()
        return response.text

    def login(self, name: str, password: str) -> requests.Response:
        """A browser login through the form: GET for the xsrf cookie, then POST."""
        browser = requests.Session()
        page = browser.get(f"{self.url}/hub/login", timeout=30)
        page.raise_for_status()
        xsrf = browser.cookies.get("_xsrf", "")
        return browser.post(
            f"{self.url}/hub/login",
            data={"username": name, "password": password, "_xsrf": xsrf},
            allow_redirects=False,
            timeout=30,
        )

    @staticmethod
    def refused(response: requests.Response) -> bool:
        """Whether a login was refused: 403 (JupyterHub 5.1 and later), or the login form again (5.0 answers 200)."""
        if response.status_code == 403:
            return True
        return response.status_code == 200 and "Invalid username or password" in response.text

    def wait_server(self, name: str, ready: bool, timeout: float = 60, pending: bool = False) -> dict[str, Any]:
        """Wait until the user's default server is ready (``ready``), gone (not ``ready``), or being spawned
        (``pending``)."""
        deadline = time.monotonic() + timeout
        model: dict[str, Any] = {}
        while time.monotonic() < deadline:
            model = self.api("GET", f"/users/{name}").json()
            server = model.get("servers", {}).get("")
            if pending and server and server.get("pending") == "spawn":
                return model
            if not pending and ready and server and server.get("ready"):
                return model
            if not pending and not ready and not server:
                return model
            time.sleep(0.1 if pending else 0.2)
        state = "pending" if pending else f"ready={ready}"
        raise AssertionError(f"server of {name} not {state} within {timeout}s: {model}")

    def stop(self, timeout: float = 30) -> float:
        """SIGTERM the hub; returns the seconds it took to exit."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        took = time.monotonic() - start
        self._reap_children()
        return took

    def _reap_children(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
        except ProcessLookupError:
            pass

    def __enter__(self) -> Hub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
