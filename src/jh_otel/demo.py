"""A demo hub: JupyterHub on loopback under ``opentelemetry-instrument``, with jh_otel, nothing else needed.

``python -m jh_otel.demo [--dir DIR] [--port 8000]`` writes a ``jupyterhub_config.py`` (DummyAuthenticator,
SimpleLocalProcessSpawner, configurable-http-proxy) and a ``read:metrics`` token into DIR, prints where metrics go,
and runs the hub until Ctrl-C. Metrics: ``/hub/metrics`` with the token, and the exporter port. OTLP (metrics and
traces) is switched on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, for example to a local collector.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
from pathlib import Path

CONFIG = """\
# jh_otel demo hub: loopback only. Any user name logs in with the password below.
c = get_config()  # noqa
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.JupyterHub.db_url = "sqlite:///{dir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{dir}/jupyterhub_cookie_secret"
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = {password!r}
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {{"admin"}}
c.JupyterHub.spawner_class = "simple"
c.Spawner.args = {args!r}
c.JupyterHub.services = [{{"name": "metrics", "api_token": open({token_file!r}).read().strip()}}]
c.JupyterHub.load_roles = [{{"name": "metrics", "services": ["metrics"], "scopes": ["read:metrics"]}}]
"""


def render_config(workdir: Path, port: int, hub_port: int, proxy_api_port: int, password: str, token_file: Path) -> str:
    """The demo hub's ``jupyterhub_config.py`` (the end-to-end tests run the same, plus their own lines)."""
    return CONFIG.format(
        port=port,
        hub_port=hub_port,
        proxy_api_port=proxy_api_port,
        dir=workdir,
        password=password,
        args=["--allow-root"] if os.geteuid() == 0 else [],
        token_file=str(token_file),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jh_otel.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("jh-otel-demo"), help="working directory (created)")
    parser.add_argument("--port", type=int, default=8000, help="the hub's public port on 127.0.0.1")
    parser.add_argument("--exporter-port", type=int, default=9464, help="the Prometheus exporter port")
    parser.add_argument("--password", default="demo", help="the password every demo user logs in with")
    args = parser.parse_args(argv)

    proxy = shutil.which("configurable-http-proxy")
    if proxy is None:
        print("configurable-http-proxy is not on PATH: npm install -g configurable-http-proxy", file=sys.stderr)
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
    if not token_file.exists():
        token_file.write_text(secrets.token_hex(24))
        token_file.chmod(0o600)
    config = workdir / "jupyterhub_config.py"
    config.write_text(render_config(workdir, args.port, args.port + 81, args.port + 1, args.password, token_file))
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
        f"jh_otel demo hub at {url}/ (any user name, password {args.password!r}; 'admin' is an admin)\n"
        f'  metrics:  curl -H "Authorization: token $(cat {token_file})" {url}/hub/metrics\n'
        f"            curl http://{env['OTEL_EXPORTER_PROMETHEUS_HOST']}:{env['OTEL_EXPORTER_PROMETHEUS_PORT']}/metrics\n"
        + (
            f"  OTLP:     metrics and traces to {env['OTEL_EXPORTER_OTLP_ENDPOINT']}\n"
            if otlp
            else "  OTLP:     off (set OTEL_EXPORTER_OTLP_ENDPOINT to send metrics and traces to a collector)\n"
        )
        + f"  files:    {workdir}\n  Ctrl-C stops the hub.",
        flush=True,
    )
    command = [str(bin_dir / "opentelemetry-instrument"), str(bin_dir / "jupyterhub"), "-f", str(config)]
    os.chdir(workdir)
    os.execve(command[0], command, env)
    return 0  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
