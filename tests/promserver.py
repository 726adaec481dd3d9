"""A real Prometheus server (Debian's ``prometheus``) on loopback, scraping what a test points it at."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import requests
import yaml

from hubproc import free_port, wait_http

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    """``promtool check metrics`` on an exposition (exit 0 and no output when clean)."""
    return subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)


class Prometheus:
    def __init__(self, workdir: Path, scrape_configs: list[dict[str, Any]]) -> None:
        import json

        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s"}, "scrape_configs": scrape_configs}
        # JSON is YAML
        (self.dir / "prometheus.yml").write_text(json.dumps(config))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Prometheus:
        log = open(self.dir / "prometheus.log", "ab")
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if not wait_http(f"{self.url}/-/ready", 30, self.proc):
            raise RuntimeError("prometheus did not become ready")
        return self

    def query(self, promql: str) -> list[dict[str, Any]]:
        body = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10).json()
        assert body["status"] == "success", body
        return body["data"]["result"]

    def targets(self) -> list[dict[str, Any]]:
        return requests.get(f"{self.url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


CONFIG_DIR = Path(__file__).resolve().parents[1] / "collector-config"


def copy_config(target: Path, token: str) -> Path:
    """The shipped directory copied to ``target``, with the metrics token where prometheus.yml reads it."""
    shutil.copytree(CONFIG_DIR, target)
    (target / "secrets").mkdir(exist_ok=True)
    (target / "secrets" / "jupyterhub-metrics-token").write_text(token)
    return target


def shipped_config(config_dir: Path, targets: dict[str, str], alertmanager: str | None = None) -> Path:
    """The shipped ``prometheus.yml`` in ``config_dir`` (a copy), rewritten for a test: 1 s intervals, only the jobs
    of ``targets`` (job name -> ``host:port``), pointed at those, and Alertmanager at ``alertmanager`` or none."""
    path = config_dir / "prometheus.yml"
    config = yaml.safe_load(path.read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["scrape_configs"] = [job for job in config["scrape_configs"] if job["job_name"] in targets]
    assert {job["job_name"] for job in config["scrape_configs"]} == set(targets), "a job the shipped config lacks"
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    if alertmanager is None:
        config.pop("alerting")
    else:
        config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [alertmanager]}]
    path.write_text(yaml.safe_dump(config))
    return path


def start(command: list[str], log: Path, ready: str) -> subprocess.Popen[bytes]:
    """Start a server and wait until ``ready`` answers 200."""
    proc = subprocess.Popen(command, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    assert wait_http(ready, 30, proc), log.read_text()[-2000:]
    return proc


def start_prometheus(config: Path, workdir: Path, *flags: str) -> tuple[subprocess.Popen[bytes], str]:
    """A real Prometheus on ``config``, on a free loopback port; returns the process and its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        *flags,
    ]
    return start(command, workdir / "prometheus.log", f"{url}/-/ready"), url


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
