"""The ``outage`` kind: a collector that goes down, then flaps, under steady paced load.

Both hubs of the pair run jh_otel at full sampling and export to one receiver of their own (``OTLPReceiver`` on
fixed loopback ports, stopped and started again: a stopped receiver refuses connections, like a collector that is
gone). The baseline delivers spans the SDK's way (``OTEL_PYTHON_JUPYTERHUB_SPAN_BUFFER=0``), the candidate through
jh_otel's outbox. Timeline: up for ``warm_s`` (the RSS before the outage is read at its end), down for ``down_s``,
then ``flaps`` times up ``flap_s`` / down ``flap_s``, then up for ``settle_s`` (RSS after). Each hub gets the same
paced requests (``rate`` per second, one connection) all along.

A request made while the collector was up should have its ``SERVER`` span at the receiver in the end: each request
carries its number (``?n=...``, in the span's ``url.query``); per hub, the requests sent inside an up window (after
the warm-up; by the load generator's clock) whose span never arrived are ``lost_up``. Requests made while it was
down are counted too, with how many of their spans arrived anyway.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import hubs as hubmod
import requests
from hubs import AUTH, HUB_LABEL, log
from scenarios import Scenario, param

from otlp_receiver import OTLPReceiver


class PacedLoad:
    """``rate`` requests per second to one hub on one keep-alive session; each request's start time is kept."""

    def __init__(self, hub: Any, path: str, rate: float) -> None:
        self.url = hubmod.url(hub, path)
        self.interval = 1.0 / rate
        self.starts: list[int] = []
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> PacedLoad:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        session = requests.Session()
        next_at = time.monotonic()
        while not self._stop.is_set() and len(self.starts) < 1_000_000:
            started = time.time_ns()
            try:
                url = f"{self.url}?n={len(self.starts) + self.failed}"
                ok = session.get(url, headers=AUTH, timeout=10).status_code == 200
            except requests.RequestException:
                ok = False
            if ok:
                self.starts.append((started, int(url.rpartition("=")[2])))
            else:
                self.failed += 1
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))


def _inside(t: int, windows: list[tuple[int, int]]) -> bool:
    return any(a <= t < b for a, b in windows)


def run(scenario: Scenario, workdir: Path, options: Any, smoke: bool) -> dict[str, Any]:
    warm, down = param(scenario, "warm_s", smoke), param(scenario, "down_s", smoke)
    flaps, flap = param(scenario, "flaps", smoke), param(scenario, "flap_s", smoke)
    settle = param(scenario, "settle_s", smoke)
    labels = (scenario.baseline.label, scenario.candidate.label)
    receiver = OTLPReceiver().start()
    pair: dict[str, Any] = {}
    try:
        pair, envs = hubmod.start_pair(workdir, scenario, receiver.http_endpoint, options)
        users = param(scenario, "users", smoke)
        for hub in pair.values():
            hubmod.create_users(hub, 0, users)
        path = scenario.params["path"]
        loads = {label: PacedLoad(pair[label], path, float(scenario.params["rate"])).start() for label in labels}
        up_windows: list[tuple[int, int]] = []
        down_windows: list[tuple[int, int]] = []

        def phase(up: bool, seconds: float, record: bool = True) -> None:
            if up and not receiver.running:
                receiver.start()
            elif not up and receiver.running:
                receiver.stop(grace=0)
            begun = time.time_ns()
            time.sleep(seconds)
            if record:
                (up_windows if up else down_windows).append((begun, time.time_ns()))

        log(f"  up {warm}s, down {down}s, {flaps} x ({flap}s up, {flap}s down), up {settle}s")
        phase(True, warm, record=False)
        before = {label: hubmod.rss(pair[label]) for label in labels}
        phase(False, down)
        for _ in range(flaps):
            phase(True, flap)
            phase(False, flap)
        receiver.start()
        settle_start = time.time_ns()
        for load in loads.values():
            load.stop()
        load_end = time.time_ns()
        time.sleep(settle)
        up_windows.append((settle_start, load_end))
        after = {label: hubmod.rss(pair[label]) for label in labels}
        spans = [s for s in receiver.spans() if s.kind == "SERVER"]
        per_hub: dict[str, Any] = {}
        for label in labels:
            arrived = {
                s.attributes.get("url.query", "")
                for s in spans
                if s.resource.get(HUB_LABEL) == label and s.attributes.get("url.query", "").startswith("n=")
            }
            starts = loads[label].starts
            made_up = [n for t, n in starts if _inside(t, up_windows)]
            made_down = [n for t, n in starts if _inside(t, down_windows)]
            sent_up, got_up = len(made_up), sum(1 for n in made_up if f"n={n}" in arrived)
            sent_down, got_down = len(made_down), sum(1 for n in made_down if f"n={n}" in arrived)
            text = pair[label].log()
            counts = {
                **hubmod.log_counts(pair[label]),
                "outage_warnings": text.count("not accepting spans"),
                "recovery_lines": text.count("accepts spans again"),
            }
            per_hub[label] = {
                "requests": len(starts),
                "failed_requests": loads[label].failed,
                "sent_while_up": sent_up,
                "received_while_up": got_up,
                "lost_up": max(0, sent_up - got_up),
                "lost_up_share": round(max(0, sent_up - got_up) / sent_up, 4) if sent_up else None,
                "sent_while_down": sent_down,
                "received_while_down": got_down,
                "rss_before_mib": round(before[label]["rss_mib"], 1),
                "rss_after_mib": round(after[label]["rss_mib"], 1),
                "rss_growth_mib": round(after[label]["rss_mib"] - before[label]["rss_mib"], 1),
                "log": counts,
            }
            log(
                f"  {label}: {sent_up} requests while up, {got_up} of their spans arrived; "
                f"RSS {before[label]['rss_mib']:.1f} -> {after[label]['rss_mib']:.1f} MiB"
            )
        exits = hubmod.stop_all(pair)
    finally:
        hubmod.stop_all(pair)
        receiver.stop()
    cand = per_hub[labels[1]]
    return {
        "env": envs,
        "timeline": {"warm_s": warm, "down_s": down, "flaps": flaps, "flap_s": flap, "settle_s": settle},
        "hubs": per_hub,
        "exit_s_live_collector": exits,
        "summary": {
            "lost_up": cand["lost_up"],
            "rss_growth_mib": cand["rss_growth_mib"],
            "failed_requests": cand["failed_requests"],
        },
    }
