"""A stand-in for a chat or paging receiver: Alertmanager's webhook notifications, one line per alert on stdout.

``python alert-webhook.py [PORT]`` (or ``ALERT_WEBHOOK_PORT``; default 5001) listens on ``ALERT_WEBHOOK_HOST``
(default ``0.0.0.0``, for the compose network) and accepts ``POST /alerts`` (collector-config/alertmanager.yml).
Each alert of a notification becomes one line::

    alert status=firing alertname=JupyterHubDown instance=hub:8000 severity=critical summary="JupyterHub is down"

Standard library only: docker-compose.yml runs it in a plain ``python:3.11-slim``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO

PATH = "/alerts"
MAX_BODY = 1 << 20  # Alertmanager's notifications are a few kB; anything bigger is not one


def _value(value: Any) -> str:
    """A ``key=value`` value: bare when it is a plain word, else JSON-quoted (so one alert stays one line)."""
    text = "" if value is None else str(value)
    if text and not any(ch.isspace() or ch in '"=\\' for ch in text) and text.isprintable():
        return text
    return json.dumps(text)


def format_alert(alert: dict[str, Any], fallback_status: str = "") -> str:
    labels = alert.get("labels") or {}
    annotations = alert.get("annotations") or {}
    fields = {
        "status": alert.get("status") or fallback_status,
        "alertname": labels.get("alertname", ""),
        "instance": labels.get("instance", ""),
        "severity": labels.get("severity", ""),
        "summary": annotations.get("summary", ""),
    }
    return "alert " + " ".join(f"{key}={_value(value)}" for key, value in fields.items())


def format_notification(notification: dict[str, Any]) -> list[str]:
    """One line per alert of an Alertmanager webhook payload (version 4)."""
    alerts = notification.get("alerts")
    if not isinstance(alerts, list):
        raise ValueError("no 'alerts' list")
    status = str(notification.get("status", ""))
    return [format_alert(alert, status) for alert in alerts if isinstance(alert, dict)]


class AlertHandler(BaseHTTPRequestHandler):
    server: AlertWebhookServer
    server_version = "jh-otel-alert-webhook"

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path.split("?", 1)[0] != PATH:
            self._reply(404, "not found")
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY:
            self._reply(400, "a JSON body of at most 1 MiB is expected")
            return
        try:
            notification = json.loads(self.rfile.read(length))
            if not isinstance(notification, dict):
                raise ValueError("not a JSON object")
            lines = format_notification(notification)
        except ValueError as error:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
            print(f"alert-webhook: rejected a notification: {error}", file=sys.stderr, flush=True)
            self._reply(400, "not an Alertmanager notification")
            return
        self.server.emit(lines)
        self._reply(200, "ok")

    def do_GET(self) -> None:  # noqa: N802
        # a liveness answer for humans and probes
        self._reply(200 if self.path == "/" else 404, "alert-webhook" if self.path == "/" else "not found")

    def _reply(self, code: int, text: str) -> None:
        body = (text + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # no access log: stdout carries the alerts only


class AlertWebhookServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], out: TextIO | None = None) -> None:
        super().__init__(address, AlertHandler)
        self.out = out
        self._lock = threading.Lock()

    def emit(self, lines: list[str]) -> None:
        out = self.out if self.out is not None else sys.stdout
        with self._lock:  # lines of concurrent notifications never interleave
            for line in lines:
                out.write(line + "\n")
            out.flush()


def make_server(host: str = "0.0.0.0", port: int = 5001, out: TextIO | None = None) -> AlertWebhookServer:
    """The server, bound (port 0 picks a free one: ``server.server_address[1]``), not yet serving."""
    return AlertWebhookServer((host, port), out)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    port = int(args[0]) if args else int(os.environ.get("ALERT_WEBHOOK_PORT", "5001"))
    host = os.environ.get("ALERT_WEBHOOK_HOST", "0.0.0.0")
    server = make_server(host, port)
    # As PID 1 in its container, Python would ignore `docker stop`'s SIGTERM: treat it as Ctrl-C.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(f"alert-webhook: listening on {host}:{server.server_address[1]}{PATH}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
