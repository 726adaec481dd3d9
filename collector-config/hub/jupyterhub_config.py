# jh_otel demo hub for docker-compose.yml (the `hub` service; the image copies this file to /srv/jupyterhub/).
# Any user name logs in with the shared password; 'admin' (an admin) with the admin password, which the hub makes
# on its first start (`docker-compose exec hub cat /srv/jupyterhub/data/admin-password`). Single-user servers run as
# root in the same container (SimpleLocalProcessSpawner), so only the proxy's public port and its metrics port listen
# beyond loopback.
import importlib.util
import os
import secrets

c = get_config()  # noqa: F821 (JupyterHub's config loader defines it)

DATA_DIR = os.environ.get("JUPYTERHUB_DATA_DIR", "/srv/jupyterhub/data")  # the hub-data volume
TOKEN_FILE = os.environ.get("JUPYTERHUB_METRICS_TOKEN_FILE", "/srv/jupyterhub/secrets/jupyterhub-metrics-token")

# The proxy's public port: users, and Prometheus (hub:8000/hub/metrics).
c.JupyterHub.ip = "0.0.0.0"
c.JupyterHub.port = 8000
# The hub API and the proxy API are only used from inside this container.
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = 8081
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:8001"
# The proxy's own metrics, for Prometheus (job configurable-http-proxy) and the collector: on the compose network,
# not published on the host. The hub appends its own flags (--ip, --port, --api-ip, ...) to this command.
c.ConfigurableHTTPProxy.command = ["configurable-http-proxy", "--metrics-ip=0.0.0.0", "--metrics-port=8002"]
# Outside the volume: a container never inherits a live proxy from a previous run (entrypoint.sh removes it).
c.ConfigurableHTTPProxy.pid_file = "/srv/jupyterhub/jupyterhub-proxy.pid"

# State that survives a container re-creation.
c.JupyterHub.db_url = f"sqlite:///{DATA_DIR}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = f"{DATA_DIR}/jupyterhub_cookie_secret"

PASSWORD = os.environ.get("JUPYTERHUB_DEMO_PASSWORD", "jh-otel-demo")
ADMIN_PASSWORD_FILE = f"{DATA_DIR}/admin-password"


def admin_password():
    """$JUPYTERHUB_DEMO_ADMIN_PASSWORD, or the one kept in the hub-data volume, made (owner-only) on first start."""
    if os.environ.get("JUPYTERHUB_DEMO_ADMIN_PASSWORD"):
        return os.environ["JUPYTERHUB_DEMO_ADMIN_PASSWORD"]
    try:
        with open(ADMIN_PASSWORD_FILE) as kept:
            if password := kept.read().strip():
                return password
    except FileNotFoundError:
        pass
    password = secrets.token_urlsafe(32)  # 43 characters: SharedPasswordAuthenticator wants 32 or more
    with os.fdopen(os.open(ADMIN_PASSWORD_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as kept:
        kept.write(password)
    print(f"jupyterhub_config.py: wrote a new admin password to {ADMIN_PASSWORD_FILE}", flush=True)
    return password


# DummyAuthenticator.password is deprecated since JupyterHub 5.3 (the image has JupyterHub 6); 5.0 to 5.2 have no
# SharedPasswordAuthenticator, where 'admin' logs in with the shared password too.
try:
    from jupyterhub.authenticators.shared import SharedPasswordAuthenticator as DemoAuthenticator

    c.SharedPasswordAuthenticator.user_password = PASSWORD
    c.SharedPasswordAuthenticator.admin_password = admin_password()
except ImportError:
    from jupyterhub.auth import DummyAuthenticator as DemoAuthenticator

    c.DummyAuthenticator.password = PASSWORD
c.JupyterHub.authenticator_class = DemoAuthenticator
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {"admin"}

c.JupyterHub.spawner_class = "simple"
c.Spawner.args = [
    "--allow-root",  # the demo container runs everything as root
    # kernels talk to their server over Unix sockets: over TCP ipykernel warns, for each kernel, of plain text
    "--KernelManager.transport=ipc",
]
# a notebook UI after login when JupyterLab is installed (the demo extra), not jupyter_server's bare status page
if importlib.util.find_spec("jupyterlab") is not None:
    c.Spawner.default_url = "/lab"

# Prometheus's scrape token: entrypoint.sh writes it to the hub-secrets volume, which Prometheus mounts read-only.
with open(TOKEN_FILE) as token_file:
    METRICS_TOKEN = token_file.read().strip()
c.JupyterHub.services = [{"name": "metrics", "api_token": METRICS_TOKEN}]
c.JupyterHub.load_roles = [{"name": "metrics", "services": ["metrics"], "scopes": ["read:metrics"]}]
