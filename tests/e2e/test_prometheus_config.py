"""The shipped Prometheus configuration and alert rules (``collector-config/``), each proven by the real tool:
``promtool check config``, ``promtool check rules``, ``promtool test rules`` (every alert firing and not firing),
and a real Prometheus that loads the shipped config, with its targets pointed at a test hub on loopback, scrapes
the hub with a ``read:metrics`` token from a file and evaluates every shipped rule without error."""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml

from hubproc import SERVICE_TOKEN, Hub, free_port, otel_env
from promserver import CONFIG_DIR, PROMTOOL, copy_config, shipped_config, start, start_prometheus, stop

ALERTS = [
    rule["alert"]
    for group in yaml.safe_load((CONFIG_DIR / "alerts.yml").read_text())["groups"]
    for rule in group["rules"]
]


def promtool(*args: str, cwd: Path = CONFIG_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def config_copy(tmp_path: Path) -> Path:
    """The shipped directory with a token file next to the config, as an operator deploys it."""
    return copy_config(tmp_path / "prometheus", SERVICE_TOKEN)


def test_promtool_checks_the_config_and_the_rules(config_copy: Path) -> None:
    """``promtool check config`` accepts the deployed config and finds as many rules as ``alerts.yml`` has alerts."""
    checked = promtool("check", "config", "prometheus.yml", cwd=config_copy)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout


def test_every_alert_has_unit_tests_firing_and_not_firing() -> None:
    """Every alert of ``alerts.yml`` has a unit test case expecting it to fire and one expecting it not to, and
    ``promtool test rules`` passes them all."""
    tests = yaml.safe_load((CONFIG_DIR / "alerts.test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    for alert in ALERTS:
        expectations = [bool(case["exp_alerts"]) for case in cases if case["alertname"] == alert]
        assert True in expectations and False in expectations, alert
    result = promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.e2e
def test_a_real_prometheus_runs_the_shipped_config_against_a_hub(config_copy: Path, tmp_path: Path) -> None:
    """A real Prometheus on the shipped config sees the hub target up, evaluates every alert rule with health ``ok``,
    has ``jupyterhub_total_users`` for job ``jupyterhub`` and fires no alert."""
    exporter_port = free_port()
    with Hub(
        tmp_path / "hub", otel_env("http://127.0.0.1:1", metrics="prometheus", exporter_port=exporter_port)
    ) as hub:
        targets = {"jupyterhub": hub.url.removeprefix("http://")}
        proc, url = start_prometheus(shipped_config(config_copy, targets), tmp_path)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                targets_up = requests.get(f"{url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
                rules = requests.get(f"{url}/api/v1/rules", timeout=10).json()["data"]["groups"]
                evaluated = [r for g in rules for r in g["rules"] if r.get("lastEvaluation", "").startswith("20")]
                up = [t for t in targets_up if t["health"] == "up"]
                if len(evaluated) == len(ALERTS) and len(up) == len(targets):
                    break
                time.sleep(0.5)
            assert {t["labels"]["job"]: t["health"] for t in targets_up} == dict.fromkeys(targets, "up"), targets_up
            assert {r["name"]: r["health"] for g in rules for r in g["rules"]} == dict.fromkeys(ALERTS, "ok"), rules
            query = requests.get(f"{url}/api/v1/query", params={"query": "jupyterhub_total_users"}, timeout=10).json()
            assert [r["metric"]["job"] for r in query["data"]["result"]] == ["jupyterhub"]
            # a hub that answers is not down, and nothing fires on a quiet hub (before the first scrape the
            # missing-target alert may be pending: its 10 minutes make that harmless)
            alerts = requests.get(f"{url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
            assert [a for a in alerts if a["state"] == "firing"] == []
        finally:
            stop(proc)


ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"


def test_amtool_checks_the_alertmanager_config() -> None:
    """``amtool check-config`` accepts the shipped ``alertmanager.yml``."""
    checked = subprocess.run(
        [AMTOOL, "check-config", "alertmanager.yml"], cwd=CONFIG_DIR, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


class Webhook(http.server.ThreadingHTTPServer):
    """A local webhook receiver that keeps every JSON body posted to it."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        webhook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                webhook.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.mark.e2e
def test_a_real_alertmanager_delivers_an_alert_fired_by_the_shipped_rules(config_copy: Path, tmp_path: Path) -> None:
    """Prometheus fires JupyterHubDown (its `for` shortened to 0s here) for a hub that does not answer, the shipped
    Alertmanager config routes it, and the webhook receives it."""
    webhook = Webhook()
    am_port = free_port()
    am_config = yaml.safe_load((config_copy / "alertmanager.yml").read_text())
    am_config["route"]["group_wait"] = "1s"
    am_config["receivers"][0]["webhook_configs"][0]["url"] = f"http://127.0.0.1:{webhook.server_port}/alerts"
    (config_copy / "alertmanager.yml").write_text(yaml.safe_dump(am_config))
    rules = yaml.safe_load((config_copy / "alerts.yml").read_text())
    for rule in rules["groups"][0]["rules"]:
        if rule["alert"] == "JupyterHubDown":
            rule["for"] = "0s"
    (config_copy / "alerts.yml").write_text(yaml.safe_dump(rules))
    nobody = f"127.0.0.1:{free_port()}"  # the hub's target: nobody answers there
    config = shipped_config(config_copy, {"jupyterhub": nobody}, alertmanager=f"127.0.0.1:{am_port}")
    alertmanager = start(
        [
            ALERTMANAGER,
            f"--config.file={config_copy / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / 'am'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
        ],
        tmp_path / "alertmanager.log",
        f"http://127.0.0.1:{am_port}/-/ready",
    )
    try:
        prometheus, _ = start_prometheus(config, tmp_path)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not webhook.bodies:
                time.sleep(0.5)
        finally:
            stop(prometheus)
    finally:
        stop(alertmanager)
        webhook.shutdown()
    assert webhook.bodies, (tmp_path / "alertmanager.log").read_text()[-2000:]
    (alert,) = webhook.bodies[0]["alerts"]
    assert alert["status"] == "firing"
    assert alert["labels"]["alertname"] == "JupyterHubDown" and alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["summary"].startswith("JupyterHub 127.0.0.1:")
