"""Everything jh_otel runs for one JupyterHub application: instruments, snapshot, exposition and hooks.

Created once per :meth:`JupyterHubInstrumentor.instrument`; :meth:`HubTelemetry.attach` binds it to a hub once the
hub has read its config and built its handlers (so the one-line setup in ``jupyterhub_config.py`` is in time too),
:meth:`start` runs the snapshot refresher on the hub's IOLoop, :meth:`detach` undoes every hook.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import wrapt
from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.metrics import Meter
from prometheus_client import REGISTRY, CollectorRegistry

from . import custom, health, resources
from ._guard import guarded
from .catalogue import build_catalogue
from .exposition import Exposition
from .hooks.auth import LoginRecorder
from .hooks.exemplars import OpenMetricsNegotiation, current_exemplar
from .hooks.native import NativeMirror
from .hooks.requests import RequestRecorder
from .hooks.routes import Routes
from .hooks.singleuser import SingleUserEnvironment
from .hooks.spawn import SpawnRecorder
from .instruments import Instruments
from .settings import Settings
from .snapshot import Snapshot, SnapshotRefresher
from .tracing import HubTracing

log = logging.getLogger(__name__)


class HubTelemetry:
    def __init__(
        self,
        settings: Settings,
        meter: Meter,
        registry: CollectorRegistry = REGISTRY,
        tracing: HubTracing | None = None,
    ) -> None:
        self.settings = settings
        self.meter = meter
        self.tracing = tracing
        self.registry = registry
        self.catalogue = build_catalogue(settings)
        self.refresher: SnapshotRefresher | None = None
        self.health: health.HealthChecks | None = None
        self.resources: resources.ResourceSampler | None = None
        self.users = custom.UserLabels(settings.max_user_labels)
        exemplar = current_exemplar if settings.exemplars == "on" else None
        self.instruments = Instruments(self.catalogue, meter, self._snapshot, exemplar)
        self.app: Any = None
        self._undo: list[Any] = []
        self._unlog: list[Any] = []

    def _snapshot(self) -> Snapshot:
        return self.refresher.current if self.refresher is not None else Snapshot()

    def attach(self, app: Any, initialize_started: float | None = None) -> None:
        """Start serving and recording for ``app`` (the previous app, if any, is detached first)."""
        self.detach()
        self.app = app
        self._log_through(app)
        self._serve_health_report(app)
        from jupyterhub import metrics

        mirror = NativeMirror(metrics, self.catalogue, self.instruments)
        mirror.install()
        self._undo.append(mirror.uninstall)
        exposition = Exposition(self.instruments.collector(), self.catalogue.names(), self.registry)
        try:
            exposition.install()
        except ValueError:
            log.error("jh_otel: another collector already serves a catalogue name; not exposing the catalogue")
        self._undo.append(exposition.uninstall)

        requests = RequestRecorder(self.instruments, Routes(app.handlers), app.hub_prefix + "api")
        self._wrap("jupyterhub.log", "prometheus_log_method", requests.wrapper)
        self._wrap("jupyterhub.handlers.base", "BaseHandler.login_user", LoginRecorder(self.instruments).wrapper)
        self._wrap("jupyterhub.user", "User.spawn", SpawnRecorder(self.instruments).wrapper)
        singleuser = SingleUserEnvironment(self.settings.singleuser_instrumentation)
        self._wrap("jupyterhub.spawner", "Spawner.get_env", singleuser.wrapper)
        if self.settings.exemplars == "on":
            self._serve_openmetrics()

        spawner_class = getattr(app, "spawner_class", None)
        if isinstance(spawner_class, type):
            # attempts and successes of the hub's spawner exist at zero from the start, like JupyterHub's own series:
            # rate() then counts the first spawn, and failures are attempts minus successes (alerts.yml)
            for name in ("spawn_success", "spawn_duration_seconds"):
                self.instruments[name].declare((spawner_class.__name__,))
        self.refresher = SnapshotRefresher(app, self.settings.refresh_interval)
        self.refresher.refresh()
        custom.bind(self.instruments, self.meter, self.users, self.registry, exposition.withhold)
        self._undo.append(custom.unbind)
        self.health = health.install(app, self.settings.health_interval, self._record_health, self._snapshot)
        self._undo.append(health.uninstall)
        if self.settings.resource_usage == "on":
            interval = self.settings.refresh_interval
            self.resources = resources.ResourceSampler(self._snapshot, self.instruments, self.users, interval)
        if self.tracing is not None:
            self.tracing.attach(app, initialize_started)
            self._undo.append(self.tracing.detach)

    def _record_health(self, check: str, result: health.Result) -> None:
        with guarded("recording a health check"):
            status = health.STATUS_VALUE.get(result.status, -1.0)
            self.instruments.set_gauge("health_check_status", (check,), status)
            self.instruments.set_gauge("health_check_duration_seconds", (check,), result.duration_seconds)
            self.instruments.set_gauge("health_check_timestamp_seconds", (check,), time.time())

    def _serve_health_report(self, app: Any) -> None:
        """``<hub>/api/jh-otel/health``, ahead of JupyterHub's catch-all routes."""
        from jupyterhub.utils import url_path_join
        from tornado.routing import PathMatches, Rule

        spec = (url_path_join(app.hub_prefix, health.URL) + "$", health.handler_class())
        router = app.tornado_application.wildcard_router
        rule = router.process_rule(Rule(PathMatches(spec[0]), spec[1]))
        router.rules.insert(0, rule)
        app.handlers.insert(0, spec)

        def undo() -> None:
            router.rules.remove(rule)
            app.handlers.remove(spec)

        self._undo.append(undo)

    def _serve_openmetrics(self) -> None:
        from jupyterhub.handlers import metrics as module

        negotiation = OpenMetricsNegotiation(module.generate_latest)
        module.generate_latest = negotiation.generate
        self._undo.append(lambda: setattr(module, "generate_latest", negotiation.original))
        self._wrap("jupyterhub.handlers.metrics", "MetricsHandler.get", negotiation.get)

    def _log_through(self, app: Any) -> None:
        """jh_otel's records go to the hub's log handlers, formatted like the hub's own."""
        ours = logging.getLogger("jh_otel")
        hub_log = getattr(app, "log", None)
        if ours.handlers or not isinstance(hub_log, logging.Logger) or not hub_log.handlers:
            return
        handlers = list(hub_log.handlers)
        for handler in handlers:
            ours.addHandler(handler)
        ours.setLevel(hub_log.getEffectiveLevel())
        ours.propagate = False

        def undo() -> None:
            for handler in handlers:
                ours.removeHandler(handler)
            ours.propagate = True

        self._unlog.append(undo)

    def _wrap(self, module: str, name: str, wrapper: Any) -> None:
        wrapt.wrap_function_wrapper(module, name, wrapper)
        owner_path, _, attribute = name.rpartition(".")

        def undo() -> None:
            owner = __import__(module, fromlist=["_"])
            for part in filter(None, owner_path.split(".")):
                owner = getattr(owner, part)
            unwrap(owner, attribute)

        self._undo.append(undo)

    def start(self) -> None:
        if self.refresher is not None:
            self.refresher.start()
        if self.health is not None:
            self.health.start()
        if self.resources is not None:
            self.resources.start()

    def stop(self) -> None:
        if self.refresher is not None:
            self.refresher.stop()
        if self.health is not None:
            self.health.stop()
        if self.resources is not None:
            self.resources.stop()

    def detach(self) -> None:
        """Every hook off and the registry as it was; jh_otel keeps logging through the hub's handlers."""
        self.stop()
        while self._undo:
            with guarded("removing a hook"):
                self._undo.pop()()
        self.app = None

    def close(self) -> None:
        self.detach()
        while self._unlog:
            self._unlog.pop()()
