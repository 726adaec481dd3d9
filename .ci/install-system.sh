#!/usr/bin/env bash
# System-level test dependencies for jh_otel on a Debian (bookworm) machine:
#   - Debian's `prometheus` package  -> /usr/bin/prometheus, /usr/bin/promtool
#   - Debian's `prometheus-alertmanager` -> /usr/bin/prometheus-alertmanager, /usr/bin/amtool
#   - npm's `configurable-http-proxy` -> configurable-http-proxy on PATH
#   - Debian's `docker-compose` (1.29) -> /usr/bin/docker-compose, for `docker-compose config` on
#     docker-compose.yml (no Docker engine is needed or started)
# Idempotent: each step is skipped when its binaries are already present.
# Must run as root (CI does). No Prometheus daemon is left running: the tests
# start their own prometheus on a random loopback port.
set -euo pipefail

CHP_SPEC="${CHP_SPEC:-configurable-http-proxy@5.3.0}"

log() { printf '[install-system] %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

POLICY_RC_D=/usr/sbin/policy-rc.d
ADDED_POLICY=0
remove_policy() {
    if [ "$ADDED_POLICY" = 1 ]; then
        $SUDO rm -f "$POLICY_RC_D"
        ADDED_POLICY=0
    fi
}
trap remove_policy EXIT

# install_debian PACKAGE SERVICE BINARY... : the Debian package, unless its binaries are there already; its
# service ("" for a package without one) never left running.
install_debian() {
    local package=$1 service=$2
    shift 2
    local present=1 binary
    for binary in "$@"; do
        [ -x "$binary" ] || present=0
    done
    if [ "$present" = 1 ]; then
        log "$package already installed: $("$1" --version 2>&1 | head -n1)"
        return 0
    fi
    log "installing Debian package $package (no recommends)"
    local start=$SECONDS
    # Forbid maintainer scripts from starting the service (invoke-rc.d and
    # deb-systemd-invoke both honour policy-rc.d exit code 101). Only add a
    # temporary policy file when the machine has none of its own.
    if [ ! -e "$POLICY_RC_D" ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY_RC_D" >/dev/null
        $SUDO chmod 755 "$POLICY_RC_D"
        ADDED_POLICY=1
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends -o Dpkg::Options::=--force-confdef \
        -o Dpkg::Options::=--force-confold "$package" >/dev/null
    remove_policy
    log "$package installed in $((SECONDS - start))s"
    # Belt and braces: if a service manager still started it, stop it.
    if [ -z "$service" ]; then
        :
    elif [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        $SUDO systemctl disable --now "$service.service" >/dev/null 2>&1 || true
    elif pgrep -f "/usr/bin/$service" >/dev/null 2>&1; then
        $SUDO service "$service" stop >/dev/null 2>&1 || true
    fi
    for binary in "$@"; do
        test -x "$binary"
    done
}

install_chp() {
    if command -v configurable-http-proxy >/dev/null 2>&1; then
        log "configurable-http-proxy already installed: $(configurable-http-proxy --version)"
        return 0
    fi
    if ! command -v npm >/dev/null 2>&1; then
        log "npm not found: installing Debian nodejs + npm"
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends nodejs npm >/dev/null
    fi
    log "installing $CHP_SPEC from npm"
    local start=$SECONDS
    $SUDO npm install -g --no-audit --no-fund --loglevel=error "$CHP_SPEC" >/dev/null
    log "configurable-http-proxy installed in $((SECONDS - start))s"
    configurable-http-proxy --version >/dev/null
}

install_debian prometheus prometheus /usr/bin/prometheus /usr/bin/promtool
install_debian prometheus-alertmanager prometheus-alertmanager /usr/bin/prometheus-alertmanager /usr/bin/amtool
install_debian docker-compose "" /usr/bin/docker-compose
install_chp

log "prometheus: $(/usr/bin/prometheus --version 2>&1 | head -n1)"
log "promtool:   $(/usr/bin/promtool --version 2>&1 | head -n1)"
log "alertmanager: $(/usr/bin/prometheus-alertmanager --version 2>&1 | head -n1)"
log "docker-compose: $(/usr/bin/docker-compose --version 2>&1 | head -n1)"
log "configurable-http-proxy: $(command -v configurable-http-proxy) $(configurable-http-proxy --version)"
