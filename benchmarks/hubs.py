"""Hub pairs for the harness: settings filled in, started side by side, set up (users, servers, logins), measured.

Every hub is a ``tests/hubproc.py`` ``Hub`` on loopback with the real configurable-http-proxy; the harness talks to
the hub's own port (``hub_port``), so the proxy is never the bottleneck.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
import requests

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests"))

import costprobe  # noqa: E402
import hubside  # noqa: E402
from scenarios import Scenario, Variant  # noqa: E402

from hubproc import ADMIN_PASSWORD, PASSWORD, SERVICE_TOKEN, Hub, free_port  # noqa: E402

HOST = "127.0.0.1"
AUTH = {"Authorization": f"token {SERVICE_TOKEN}"}
MIB = 2**20
HUB_LABEL = "benchmark.hub"  # resource attribute telling the hubs' telemetry apart at the receiver
BATCH = 1000  # users per creation request


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Options:
    """What the command line adds to every scenario's hubs."""

    hub_pythonpath: str = ""  # first on both hubs' path: another jh_otel (e.g. an older commit's src)
    candidate_set: dict[str, str] = field(default_factory=dict)  # --set: extra settings of the candidate hub
    keep: bool = False


def fill(settings: dict[str, str], endpoint: str, closed: str, label: str) -> dict[str, str]:
    """A variant's settings with the placeholders filled in (a free port per ``{free_port}``)."""
    env = {}
    for key, value in settings.items():
        value = value.replace("{otlp_endpoint}", endpoint).replace("{closed_endpoint}", closed)
        if "{free_port}" in value:
            value = value.replace("{free_port}", str(free_port()))
        env[key] = value
    if env:
        extra = env.get("OTEL_RESOURCE_ATTRIBUTES", "")
        env["OTEL_RESOURCE_ATTRIBUTES"] = ",".join(filter(None, (extra, f"{HUB_LABEL}={label}")))
    return env


def probe_dir(workdir: Path, label: str) -> Path:
    """Where the cost probe (``benchmarks/costprobe.py``) of a breakdown scenario's hub writes its readings."""
    return workdir / label / "costprobe"


def start_pair(
    workdir: Path, scenario: Scenario, endpoint: str, options: Options, closed: str = ""
) -> tuple[dict[str, Hub], dict[str, dict[str, str]]]:
    """The scenario's baseline and candidate hubs, started one after the other (both kept in the returned dict
    before they start, so the caller stops whatever did start). Returns the hubs by label and their settings."""
    closed = closed or f"http://{HOST}:{free_port()}"  # nobody listens there
    hubs: dict[str, Hub] = {}
    envs: dict[str, dict[str, str]] = {}
    variants: tuple[Variant, Variant] = (scenario.baseline, scenario.candidate)
    if variants[0].label == variants[1].label:
        raise ValueError(f"{scenario.name}: baseline and candidate need different labels")
    try:
        for role, variant in zip(("baseline", "candidate"), variants):
            env = fill(dict(variant.settings), endpoint, closed, variant.label)
            if role == "candidate":
                env.update(options.candidate_set)
            if options.hub_pythonpath:
                env["PYTHONPATH"] = options.hub_pythonpath
            config = variant.extra_config
            if scenario.setup.spawner == "fast":
                config = hubside.hub_config(workdir / variant.label / "server-tokens") + config
            if scenario.kind == "breakdown":  # timers only where jh_otel runs
                config += costprobe.hub_config(probe_dir(workdir, variant.label), timers=variant.wrapper)
            hub = hubs[variant.label] = Hub(workdir / variant.label, env, wrapper=variant.wrapper, extra_config=config)
            envs[variant.label] = {k: v for k, v in env.items() if not k.endswith("_PORT")}
            t0 = time.monotonic()
            hub.start(timeout=120)
            log(f"  {variant.label} hub up in {time.monotonic() - t0:.1f}s (pid {hub.proc.pid}, port {hub.hub_port})")
    except BaseException:
        stop_all(hubs)
        raise
    return hubs, envs


def stop_all(hubs: dict[str, Hub]) -> dict[str, float]:
    """SIGTERM each hub; seconds each took to exit. A hub that exited by itself has its process group reaped."""
    took = {}
    for label, hub in hubs.items():
        exited = hub.proc is not None and hub.proc.poll() is not None
        took[label] = round(hub.stop(), 3)
        if exited:
            hub._reap_children()
    return took


def url(hub: Hub, path: str) -> str:
    return f"http://{HOST}:{hub.hub_port}{path}"


# --------------------------------------------------------------------------
# Setup
# --------------------------------------------------------------------------


def user_names(start: int, stop: int) -> list[str]:
    return [f"user{i:05d}" for i in range(start, stop)]


def in_parallel(hubs: dict[str, Hub], work: Any, timeout: float = 1800) -> dict[str, Any]:
    """``work(label, hub)`` on every hub at once, one thread each (each hub is one single-threaded process);
    returns the results by label, raises the first failure."""
    results: dict[str, Any] = {}
    failures: list[str] = []

    def run(label: str, hub: Hub) -> None:
        try:
            results[label] = work(label, hub)
        except Exception as error:  # noqa: BLE001 - reported below
            failures.append(f"{label}: {type(error).__name__}: {error}")

    threads = [threading.Thread(target=run, args=item, daemon=True) for item in hubs.items()]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.1, deadline - time.monotonic()))
    if failures or any(thread.is_alive() for thread in threads):
        raise RuntimeError(f"setup failed: {failures or 'timed out'}")
    return results


def create_users(hub: Hub, start: int, stop: int) -> float:
    """user{start}..user{stop-1}, in batches of BATCH; the seconds it took."""
    t0 = time.monotonic()
    session = requests.Session()
    for first in range(start, stop, BATCH):
        names = user_names(first, min(stop, first + BATCH))
        response = session.post(url(hub, "/hub/api/users"), headers=AUTH, json={"usernames": names}, timeout=600)
        if response.status_code != 201:
            raise RuntimeError(f"creating {len(names)} users -> {response.status_code}: {response.text[:300]}")
    return round(time.monotonic() - t0, 2)


def start_servers(hub: Hub, names: list[str], timeout: float = 180) -> float:
    t0 = time.monotonic()
    session = requests.Session()
    for name in names:
        response = session.post(url(hub, f"/hub/api/users/{name}/server"), headers=AUTH, timeout=120)
        if response.status_code not in (201, 202):
            raise RuntimeError(f"spawning {name}: {response.status_code} {response.text[:200]}")
    for name in names:
        hub.wait_server(name, ready=True, timeout=max(5, timeout - (time.monotonic() - t0)))
    return round(time.monotonic() - t0, 2)


def login(hub: Hub, name: str) -> dict[str, str]:
    """A browser login through the form on the hub's port: the cookies (as a header) and the _xsrf value."""
    for password in (PASSWORD, ADMIN_PASSWORD) if name != "admin" else (ADMIN_PASSWORD, PASSWORD):
        browser = requests.Session()
        page = browser.get(url(hub, "/hub/login"), timeout=30)
        page.raise_for_status()
        response = browser.post(
            url(hub, "/hub/login"),
            data={"username": name, "password": password, "_xsrf": browser.cookies.get("_xsrf", "")},
            allow_redirects=False,
            timeout=30,
        )
        if response.status_code == 302:
            cookies = {cookie.name: cookie.value for cookie in browser.cookies}
            return {"cookie": "; ".join(f"{k}={v}" for k, v in cookies.items()), "xsrf": cookies.get("_xsrf", "")}
    raise RuntimeError(f"login of {name} failed: {response.status_code} {response.text[:200]}")


def prepare(scenario: Scenario, hubs: dict[str, Hub], connections: int, users: int | None = None) -> dict[str, Any]:
    """The scenario's setup on both hubs at once; per hub the load generator's context (its tokens and cookies)
    and how long each part took."""
    setup = scenario.setup
    users = setup.users if users is None else users
    running = user_names(0, setup.running_servers)
    pool_size = setup.spawn_pool_per_connection
    spawn_pools = [
        user_names(setup.running_servers + i * pool_size, setup.running_servers + (i + 1) * pool_size)
        for i in range(connections if pool_size else 0)
    ]
    if setup.running_servers + sum(map(len, spawn_pools)) > users:
        raise ValueError(f"{scenario.name}: not enough users for the running servers and spawn pools")
    pools = {op.pool for op in scenario.mix if op.auth == "cookie"}
    logins = sorted(
        set(running if "running" in pools else [])
        | {u for pool in spawn_pools for u in pool if "spawn" in pools}
        | ({"admin"} if "admin" in pools else set())
    )

    def work(label: str, hub: Hub) -> dict[str, Any]:
        took: dict[str, float] = {}
        if users:
            took["create_users_s"] = create_users(hub, 0, users)
        if running:
            took["start_servers_s"] = start_servers(hub, running)
        t0 = time.monotonic()
        cookies = {name: login(hub, name) for name in logins}
        took["logins_s"] = round(time.monotonic() - t0, 2)
        tokens = {}
        if running and setup.spawner == "fast":
            token_dir = hub.dir / "server-tokens"
            tokens = {name: (token_dir / name).read_text() for name in running}
        return {
            "context": {
                "service_token": SERVICE_TOKEN,
                "running": running,
                "server_tokens": tokens,
                "cookies": cookies,
                "spawn_pools": spawn_pools,
                "users_count": users,
            },
            "took": took,
        }

    return in_parallel(hubs, work)


# --------------------------------------------------------------------------
# Measurements of a hub process
# --------------------------------------------------------------------------


def rss(hub: Hub) -> dict[str, float]:
    info = psutil.Process(hub.proc.pid).memory_full_info()
    return {
        "rss_mib": round(info.rss / MIB, 1),
        "pss_mib": round(info.pss / MIB, 1),
        "uss_mib": round(info.uss / MIB, 1),
    }


def machine_times() -> Any:
    return psutil.cpu_times()


def machine_share(before: Any, after: Any) -> dict[str, float]:
    """Busy and steal shares of all cores between two ``psutil.cpu_times()``: other work on the machine shows."""
    fields = ("user", "system", "nice", "irq", "softirq")
    busy = sum(getattr(after, f, 0) - getattr(before, f, 0) for f in fields)
    idle = sum(getattr(after, f, 0) - getattr(before, f, 0) for f in ("idle", "iowait"))
    steal = getattr(after, "steal", 0) - getattr(before, "steal", 0)
    total = max(1e-9, busy + idle + steal)
    return {"machine_busy": round(busy / total, 3), "machine_steal": round(steal / total, 3)}


def log_counts(hub: Hub) -> dict[str, int]:
    text = hub.log()
    return {
        "queue_full_warnings": text.count("Queue full, dropping"),
        "export_failures": sum(text.count(s) for s in ("Failed to export", "Exception while exporting")),
        "tracebacks": text.count("Traceback (most recent call last)"),
    }


# --------------------------------------------------------------------------
# What ran: machine, versions, code
# --------------------------------------------------------------------------


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def code_state() -> dict[str, Any]:
    """The commit and any uncommitted change under src/, tests/ and benchmarks/ (its code, not its results)."""
    paths = ("src", "tests", "benchmarks/*.py", "pyproject.toml")
    diff = git("diff", "HEAD", "--", *paths)
    return {
        "head": git("rev-parse", "--short", "HEAD"),
        "uncommitted": git("status", "--porcelain", "--", *paths).splitlines(),
        "diff_sha1": hashlib.sha1(diff.encode()).hexdigest()[:12] if diff else "",
    }


def source_digest(package: Path) -> str:
    """A digest of a jh_otel package directory's sources, to tell one copy from another in the results."""
    digest = hashlib.sha1()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def hub_jh_otel(options: Options) -> dict[str, str]:
    """Which jh_otel the jh_otel hubs import: the checkout's src, or --hub-pythonpath's."""
    for entry in [*filter(None, options.hub_pythonpath.split(os.pathsep)), str(ROOT / "src")]:
        package = Path(entry) / "jh_otel"
        if (package / "__init__.py").exists():
            return {"path": str(package), "digest": source_digest(package)}
    return {"path": "", "digest": ""}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for package in (
        "jupyterhub",
        "jh-otel",
        "tornado",
        "sqlalchemy",
        "opentelemetry-sdk",
        "opentelemetry-exporter-otlp-proto-http",
        "opentelemetry-instrumentation-tornado",
        "prometheus_client",
        "pytest-benchmark",
    ):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "missing"
    return out


def machine() -> dict[str, Any]:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "hostname": platform.node(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
