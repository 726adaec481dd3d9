# The hub of docker-compose.yml: JupyterHub with jh_otel under opentelemetry-instrument, configurable-http-proxy,
# and jupyter_server for the single-user servers SimpleLocalProcessSpawner starts in the same container.
FROM python:3.11-slim

# configurable-http-proxy from npm, on Debian's Node.js; the same version CI tests against.
RUN apt-get update \
    && apt-get install -y --no-install-recommends nodejs npm \
    && npm install -g --no-audit --no-fund configurable-http-proxy@5.3.0 \
    && npm cache clean --force \
    && rm -rf /var/lib/apt/lists/*

# jh_otel with the demo extra (JupyterHub and jupyter_server). Only what the build needs is copied.
WORKDIR /src/jh_otel
COPY pyproject.toml README.md ./
COPY src/ src/
# the image's own pip resolves it (every OpenTelemetry dependency is capped at one train: README, Supported versions)
RUN pip install --no-cache-dir --disable-pip-version-check ".[demo]"

WORKDIR /srv/jupyterhub
COPY collector-config/hub/jupyterhub_config.py /srv/jupyterhub/jupyterhub_config.py
COPY collector-config/hub/entrypoint.sh /usr/local/bin/jh-otel-hub-entrypoint
RUN chmod 755 /usr/local/bin/jh-otel-hub-entrypoint \
    && mkdir -p /srv/jupyterhub/data /srv/jupyterhub/secrets

# 8000: the proxy (users, and /hub/metrics with a token).
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/jh-otel-hub-entrypoint"]
