"""A real single-user server whose ``progress()`` replays KubeSpawner's shapes: Kubernetes events (``raw_event``)
with reasons and timestamps spaced by known gaps, so that the spawn phases jh_otel derives can be checked.

Inside the hub (``hub_config()``), ``EventSpawner`` is ``SimpleLocalProcessSpawner`` (a real
``jupyterhub-singleuser``) whose ``start()`` writes the events of a pod that waited for a node, was scheduled,
pulled its image and started its container, timestamped from the moment ``start()`` was called; ``progress()``
yields them as KubeSpawner does (``{"progress", "message", "raw_event"}``), and can be read any number of times
(KubeSpawner's reads its event reflector).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jupyterhub.spawner import SimpleLocalProcessSpawner

# (reason, seconds after start() was called): the gaps the phases must come out as
EVENTS = (
    ("TriggeredScaleUp", 0.2, "pod triggered scale-up"),
    ("Scheduled", 2.0, "Successfully assigned jupyter-user to node-1"),
    ("Pulling", 2.5, 'Pulling image "quay.io/jupyter/base-notebook"'),
    ("Pulled", 5.5, 'Successfully pulled image "quay.io/jupyter/base-notebook" in 3s'),
    ("Created", 6.0, "Created container notebook"),
    ("Started", 7.0, "Started container notebook"),
)
PHASES = {"scheduling": 2.0, "image_pull": 3.0, "container_start": 1.0}
"""What the events above mark: start() called to Scheduled, Pulling to Pulled, Created to Started."""


def _rfc3339(when: float, micro: bool) -> str:
    moment = datetime.fromtimestamp(when, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def kubernetes_event(reason: str, when: float, message: str, pod: str) -> dict[str, Any]:
    """A core/v1 Event as KubeSpawner's reflector keeps it (JSON from the API): ``lastTimestamp`` in seconds,
    ``eventTime`` (the finer one) in microseconds."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "type": "Normal",
        "reason": reason,
        "message": message,
        "involvedObject": {"kind": "Pod", "name": pod, "namespace": "jhub"},
        "firstTimestamp": _rfc3339(when, micro=False),
        "lastTimestamp": _rfc3339(when, micro=False),
        "eventTime": _rfc3339(when, micro=True),
        "count": 1,
    }


class EventSpawner(SimpleLocalProcessSpawner):
    """A local server whose progress events are a Kubernetes pod's."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pod_events: list[dict[str, Any]] = []

    async def start(self) -> Any:
        called = time.time()
        pod = f"jupyter-{self.user.name}"
        self.pod_events = [kubernetes_event(reason, called + gap, message, pod) for reason, gap, message in EVENTS]
        return await super().start()

    async def progress(self) -> Any:
        deadline = time.monotonic() + 30
        while not self.pod_events and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for i, event in enumerate(list(self.pod_events)):
            yield {
                "progress": 10 + 10 * i,
                "message": f"{event['lastTimestamp']} [Normal] {event['message']}",
                "raw_event": event,
            }


def hub_config() -> str:
    """Lines for a hub's ``jupyterhub_config.py`` (``Hub(extra_config=...)``): ``EventSpawner``, imported from this
    directory."""
    return f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from phasespawner import EventSpawner
c.JupyterHub.spawner_class = EventSpawner
"""
