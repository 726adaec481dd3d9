# jh_otel demo hub for docker-compose.yml (the `hub` service; the image copies this file to /srv/jupyterhub/).
# Any user name logs in with the shared password; 'admin' is an admin. Single-user servers run as root in the
# same container (SimpleLocalProcessSpawner), so only the proxy's public port listens beyond loopback.
import os

c = get_config()  # noqa: F821 (JupyterHub's config loader defines it)

DATA_DIR = os.environ.get("JUPYTERHUB_DATA_DIR", "/srv/jupyterhub/data")  # the hub-data volume
TOKEN_FILE = os.environ.get("JUPYTERHUB_METRICS_TOKEN_FILE", "/srv/jupyterhub/secrets/jupyterhub-metrics-token")

# The proxy's public port is the only one other containers reach (Prometheus scrapes hub:8000/hub/metrics).
c.JupyterHub.ip = "0.0.0.0"
c.JupyterHub.port = 8000
# The hub API and the proxy API are only used from inside this container.
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = 8081
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:8001"
# Outside the volume: a container never inherits a live proxy from a previous run (entrypoint.sh removes it).
c.ConfigurableHTTPProxy.pid_file = "/srv/jupyterhub/jupyterhub-proxy.pid"

# State that survives a container re-creation.
c.JupyterHub.db_url = f"sqlite:///{DATA_DIR}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = f"{DATA_DIR}/jupyterhub_cookie_secret"

c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = os.environ.get("JUPYTERHUB_DEMO_PASSWORD", "demo")
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {"admin"}

c.JupyterHub.spawner_class = "simple"
c.Spawner.args = ["--allow-root"]  # the demo container runs everything as root

# Prometheus's scrape token: entrypoint.sh writes it to the hub-secrets volume, which Prometheus mounts read-only.
with open(TOKEN_FILE) as token_file:
    METRICS_TOKEN = token_file.read().strip()
c.JupyterHub.services = [{"name": "metrics", "api_token": METRICS_TOKEN}]
c.JupyterHub.load_roles = [{"name": "metrics", "services": ["metrics"], "scopes": ["read:metrics"]}]
