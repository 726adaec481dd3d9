#!/bin/sh
# Entrypoint of the docker-compose hub image: make sure Prometheus's scrape token exists, then run JupyterHub under
# opentelemetry-instrument (jh_otel is picked up through its opentelemetry_instrumentor entry point).
set -eu

TOKEN_FILE="${JUPYTERHUB_METRICS_TOKEN_FILE:-/srv/jupyterhub/secrets/jupyterhub-metrics-token}"

if [ ! -s "$TOKEN_FILE" ]; then
    mkdir -p "$(dirname "$TOKEN_FILE")"
    # Written to a temporary file and renamed, so Prometheus never reads half a token.
    python -c 'import secrets; print(secrets.token_hex(32))' > "$TOKEN_FILE.tmp"
    # 644, not 600: Prometheus runs as `nobody` in prom/prometheus and must read it. Only the hub and Prometheus
    # mount the hub-secrets volume (Prometheus read-only), so world-readable here means readable by those two.
    chmod 644 "$TOKEN_FILE.tmp"
    mv "$TOKEN_FILE.tmp" "$TOKEN_FILE"
    echo "entrypoint: wrote a new metrics token to $TOKEN_FILE"
fi

# No proxy of a previous run of this container is alive in a fresh PID namespace: a stale pid file could only make
# JupyterHub signal an unrelated process that happens to reuse the pid.
rm -f /srv/jupyterhub/jupyterhub-proxy.pid

exec opentelemetry-instrument jupyterhub -f /srv/jupyterhub/jupyterhub_config.py "$@"
