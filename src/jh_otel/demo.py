"""A demo hub: JupyterHub on loopback under ``opentelemetry-instrument``, with jh_otel, nothing else needed.

``python -m jh_otel.demo [--dir DIR] [--port 8000]`` writes a ``jupyterhub_config.py`` (a shared-password
authenticator, SimpleLocalProcessSpawner, configurable-http-proxy), a ``read:metrics`` token and the admin's password
into DIR, prints where metrics go, and runs the hub until Ctrl-C. Metrics: ``/hub/metrics`` with the token, and the
exporter port. OTLP (metrics and traces) is switched on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, for example to a
local collector. With JupyterLab installed (the ``demo`` extra), a user's server opens it after login.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import secrets
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

CONFIG = """\
# jh_otel demo hub: loopback only. Any user name logs in with the user password below; 'admin' (an admin) with the
# admin password on JupyterHub 5.3+ (the user password before 5.3).
import importlib.util

c = get_config()  # noqa
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.JupyterHub.db_url = "sqlite:///{dir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{dir}/jupyterhub_cookie_secret"
# DemoAuthenticator (a config that extends this one may subclass it): JupyterHub 5.3 deprecated
# DummyAuthenticator.password for SharedPasswordAuthenticator, which 5.0 to 5.2 do not have.
try:
    from jupyterhub.authenticators.shared import SharedPasswordAuthenticator as DemoAuthenticator

    c.SharedPasswordAuthenticator.user_password = {password!r}
    c.SharedPasswordAuthenticator.admin_password = {admin_password!r}
except ImportError:
    from jupyterhub.auth import DummyAuthenticator as DemoAuthenticator

    c.DummyAuthenticator.password = {password!r}
c.JupyterHub.authenticator_class = DemoAuthenticator
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {{"admin"}}
c.JupyterHub.spawner_class = "simple"
# kernels talk to their server over Unix sockets: over TCP (even loopback) ipykernel warns, for each kernel, that
# code and outputs travel unencrypted
c.Spawner.args = {args!r} + ["--KernelManager.transport=ipc"]
# a notebook UI after login when JupyterLab is installed (the demo extra), not jupyter_server's bare status page
if importlib.util.find_spec("jupyterlab") is not None:
    c.Spawner.default_url = "/lab"
c.JupyterHub.services = [{{"name": "metrics", "api_token": open({token_file!r}).read().strip()}}]
c.JupyterHub.load_roles = [{{"name": "metrics", "services": ["metrics"], "scopes": ["read:metrics"]}}]
"""


DEFAULT_PASSWORD = "jh-otel-demo"
MIN_PASSWORD_LENGTH = 8  # SharedPasswordAuthenticator's minimum for the user password
MIN_ADMIN_PASSWORD_LENGTH = 32  # and for the admin password
CHP_SPEC = "configurable-http-proxy@5.3.0"  # the version CI tests (.ci/install-system.sh) and the Dockerfile installs


def render_config(
    workdir: Path,
    port: int,
    hub_port: int,
    proxy_api_port: int,
    password: str,
    token_file: Path,
    admin_password: str,
) -> str:
    """The demo hub's ``jupyterhub_config.py`` (the end-to-end tests run the same, plus their own lines)."""
    return CONFIG.format(
        port=port,
        hub_port=hub_port,
        proxy_api_port=proxy_api_port,
        dir=workdir,
        password=password,
        admin_password=admin_password,
        args=["--allow-root"] if os.geteuid() == 0 else [],
        token_file=str(token_file),
    )


def read_or_create_secret(path: Path, make: Callable[[], str]) -> str:
    """The secret kept in ``path``, or a new one from ``make`` written there, readable by its owner only."""
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        value = ""
    if not value:
        value = make()
        write_private(path, value)
    return value


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner only, from the file's creation on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    path.chmod(0o600)  # a file that was already there keeps its mode through os.open


def importable(name: str) -> bool:
    """Whether ``name`` (a module, possibly dotted) can be imported in this environment, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # a dotted name whose parent package is missing
        return False


def expected_warnings(shared_password: bool, lab: bool) -> str:
    """The demo's lines naming the warnings JupyterHub and the servers log on the way, each harmless here, which a
    newcomer would otherwise read as a failure."""
    warnings = ["JupyterHub's 'Running JupyterHub without SSL' (none is needed on loopback)"]
    if not shared_password:
        warnings.append("'Using testing authenticator DummyAuthenticator!' (JupyterHub 5.0 to 5.2)")
    if lab:
        warnings.append("from your server, \"'extra_template_paths' was found in both NotebookApp and ServerApp\"")
        warnings.append("'Skipping XSRF check for insecure request' (the browser's websockets over plain http)")
        warnings.append("'The websocket_ping_timeout (90000) cannot be longer than ...' (jupyter_server, tornado 6.5)")
    return "  expected: these warnings, none of them a failure:\n" + "".join(f"            {w}\n" for w in warnings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jh_otel.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("jh-otel-demo"), help="working directory (created)")
    parser.add_argument("--port", type=int, default=8000, help="the hub's public port on 127.0.0.1")
    parser.add_argument("--exporter-port", type=int, default=9464, help="the Prometheus exporter port")
    parser.add_argument(
        "--password",
        default=DEFAULT_PASSWORD,
        help=f"the password every demo user but 'admin' logs in with ({MIN_PASSWORD_LENGTH} characters or more)",
    )
    args = parser.parse_args(argv)
    if len(args.password) < MIN_PASSWORD_LENGTH:
        # SharedPasswordAuthenticator would refuse it with a traceback at the hub's start
        parser.error(f"--password must be at least {MIN_PASSWORD_LENGTH} characters, not {len(args.password)}")

    proxy = shutil.which("configurable-http-proxy")
    if proxy is None:
        print(f"configurable-http-proxy is not on PATH: npm install -g {CHP_SPEC}", file=sys.stderr)
        return 2
    bin_dir = Path(sys.executable).parent
    missing = [name for name in ("jupyterhub", "jupyterhub-singleuser") if not (bin_dir / name).exists()]
    if missing:
        found = " and ".join(missing)
        print(f"{found} not found next to {sys.executable}: pip install 'jh-otel[demo]'", file=sys.stderr)
        return 2
    workdir = args.dir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    token_file = workdir / "metrics-token"
    read_or_create_secret(token_file, lambda: secrets.token_hex(24))
    admin_file = workdir / "admin-password"
    admin_password = read_or_create_secret(admin_file, lambda: secrets.token_urlsafe(32))
    if len(admin_password) < MIN_ADMIN_PASSWORD_LENGTH or admin_password == args.password:
        print(
            f"{admin_file} holds no usable admin password ({MIN_ADMIN_PASSWORD_LENGTH} characters or more, not the"
            " user password): remove it and a new one is made",
            file=sys.stderr,
        )
        return 2
    # the same tests as the rendered config's, so what this prints is what the hub does
    shared_password = importable("jupyterhub.authenticators.shared")  # JupyterHub 5.3+
    lab = importable("jupyterlab")
    config = workdir / "jupyterhub_config.py"
    # private: it holds the admin password
    write_private(
        config,
        render_config(workdir, args.port, args.port + 81, args.port + 1, args.password, token_file, admin_password),
    )
    otlp = bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    defaults = {
        "OTEL_SERVICE_NAME": "jupyterhub",
        "OTEL_METRICS_EXPORTER": "prometheus,otlp" if otlp else "prometheus",
        "OTEL_TRACES_EXPORTER": "otlp" if otlp else "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",  # grpcio costs the hub ~9 MiB more (benchmarks/)
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(args.exporter_port),
        "OTEL_PYTHON_JUPYTERHUB_REFRESH_INTERVAL": "5",
    }
    for key, value in defaults.items():
        env.setdefault(key, value)
    url = f"http://127.0.0.1:{args.port}"
    print(
        f"jh_otel demo hub at {url}/\n"
        f"  log in:   any user name, password {args.password!r}\n"
        + (
            f"            'admin' (an admin): password {admin_password!r} (kept in {admin_file})\n"
            if shared_password
            else "            'admin' (an admin) too, with that password (JupyterHub 5.0 to 5.2)\n"
        )
        + (
            "  then:     your server starts (a few seconds) and opens JupyterLab\n"
            if lab
            else "  then:     your server starts and shows jupyter_server's page 'A Jupyter Server is running.'"
            " (pip install jupyterlab for a notebook UI)\n"
        )
        + f'  metrics:  curl -H "Authorization: token $(cat {token_file})" {url}/hub/metrics\n'
        f"            curl http://{env['OTEL_EXPORTER_PROMETHEUS_HOST']}:{env['OTEL_EXPORTER_PROMETHEUS_PORT']}/metrics\n"
        + (
            f"  OTLP:     metrics and traces to {env['OTEL_EXPORTER_OTLP_ENDPOINT']}\n"
            if otlp
            else "  OTLP:     off (set OTEL_EXPORTER_OTLP_ENDPOINT to send metrics and traces to a collector)\n"
        )
        + f"  files:    {workdir}\n"
        + expected_warnings(shared_password, lab)
        + "  Ctrl-C stops the hub.",
        flush=True,
    )
    command = [str(bin_dir / "opentelemetry-instrument"), str(bin_dir / "jupyterhub"), "-f", str(config)]
    os.chdir(workdir)
    os.execve(command[0], command, env)
    return 0  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
