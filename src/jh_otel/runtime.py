"""Everything jh_otel runs for one JupyterHub application, as a declared list of reversible parts.

:class:`HubTelemetry` is created once per :meth:`JupyterHubInstrumentor.instrument`; :meth:`HubTelemetry.attach`
binds it to a hub once the hub has read its config and built its handlers (so the one-line setup in
``jupyterhub_config.py`` is in time too), :meth:`~HubTelemetry.start` starts the parts' periodic work on the hub's
IOLoop, :meth:`~HubTelemetry.detach` undoes everything.

:data:`PARTS` is the whole wiring, in install order, each part with ``install`` and ``uninstall``. Installing is all
or nothing: when a part fails, the parts already installed are uninstalled in reverse order, the hub serves
JupyterHub's own metrics exactly as without jh_otel (no catalogue family that could read 0 while it is not true),
and one error line says which part failed and why. A part whose JupyterHub functions are not the ones jh_otel was
tested with (:mod:`jh_otel.compat`) is left out with one warning instead: that is no failure, the rest installs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import wrapt
from opentelemetry.instrumentation.utils import unwrap
from prometheus_client import REGISTRY, CollectorRegistry

from . import custom, health, producer, resources
from ._guard import guarded
from .catalogue import Catalogue, build_catalogue
from .compat import Expect, unmet
from .exposition import Exposition
from .hooks.auth import LoginRecorder
from .hooks.exemplars import OpenMetricsNegotiation, current_exemplar
from .hooks.native import NativeMirror, follow
from .hooks.phases import SpawnPhases
from .hooks.requests import RequestRecorder
from .hooks.routes import Routes
from .hooks.singleuser import SingleUserEnvironment
from .hooks.spawn import SpawnRecorder
from .instruments import Instruments
from .producer import CatalogueProducer
from .settings import Settings
from .snapshot import Snapshot, SnapshotRefresher
from .tracing import HubTracing

log = logging.getLogger(__name__)


class Part:
    """One reversible piece of the wiring. ``install`` registers what ``uninstall`` undoes (in reverse), so a
    part that failed half way is undone too."""

    name = ""
    """What the part does, for log lines."""
    expects: tuple[Expect, ...] = ()
    """JupyterHub functions the part wraps, with the parameters it reads: unmet, the part is left out."""

    def __init__(self, telemetry: HubTelemetry, app: Any) -> None:
        self.telemetry = telemetry
        self.app = app
        self._undo: list[Callable[[], None]] = []

    def wanted(self) -> bool:
        """Whether the settings ask for this part."""
        return True

    def install(self) -> None:
        raise NotImplementedError

    def uninstall(self) -> None:
        while self._undo:
            with guarded(f"removing {self.name}"):
                self._undo.pop()()

    def start(self) -> None:
        """The hub is up: periodic work starts on its IOLoop."""

    def stop(self) -> None:
        """The hub is stopping."""

    def on_uninstall(self, undo: Callable[[], None]) -> None:
        self._undo.append(undo)

    def wrap(self, module: str, name: str, wrapper: Any) -> None:
        """``wrapt`` wrapper around ``module.name`` (``Class.method`` allowed), undone by :meth:`uninstall`."""
        wrapt.wrap_function_wrapper(module, name, wrapper)
        owner_path, _, attribute = name.rpartition(".")

        def undo() -> None:
            owner = __import__(module, fromlist=["_"])
            for part in filter(None, owner_path.split(".")):
                owner = getattr(owner, part)
            unwrap(owner, attribute)

        self.on_uninstall(undo)


class NativeMetrics(Part):
    name = "mirroring JupyterHub's own metrics"

    def install(self) -> None:
        from jupyterhub import metrics

        t = self.telemetry
        mirror = NativeMirror(metrics, t.catalogue, t.instruments)
        self.on_uninstall(mirror.uninstall)
        mirror.install()


class CatalogueExposition(Part):
    name = "serving the catalogue on /hub/metrics"

    def install(self) -> None:
        t = self.telemetry
        exposition = Exposition(t.instruments.collector(), t.catalogue.names(), t.registry)
        self.on_uninstall(exposition.uninstall)
        exposition.install()  # ValueError when another collector already serves a catalogue name
        t.exposition = exposition
        self.on_uninstall(lambda: setattr(t, "exposition", None))


class RequestMetrics(Part):
    """Every request recorded once, where JupyterHub records its own (:mod:`jh_otel.hooks.requests`)."""

    name = "request metrics"
    expects = (Expect("jupyterhub.log", "prometheus_log_method", ("handler",)),)

    def install(self) -> None:
        app, t = self.app, self.telemetry
        requests = RequestRecorder(t.instruments, Routes(app.handlers), app.hub_prefix + "api")
        replace = replaceable_log_method(t.exposition)
        self.wrap("jupyterhub.log", "prometheus_log_method", requests.replacement if replace else requests.wrapper)


def replaceable_log_method(exposition: Exposition | None) -> bool:
    """Whether jh_otel's request record can stand in for JupyterHub's ``prometheus_log_method`` rather than follow
    it: ``jupyterhub.log`` calls JupyterHub's own function (nobody else wrapped it), whose code names nothing but its
    observation into ``REQUEST_DURATION_SECONDS``, and that histogram is out of the registry, served by the catalogue
    as ``request_duration_seconds``. Anything else, and JupyterHub's function runs as it always does."""
    from jupyterhub import log, metrics

    function = getattr(metrics, "prometheus_log_method", None)
    native = getattr(metrics, "REQUEST_DURATION_SECONDS", None)
    return (
        exposition is not None
        and native is not None
        and getattr(log, "prometheus_log_method", None) is function
        and set(getattr(getattr(function, "__code__", None), "co_names", ("?",))) <= LOG_METHOD_NAMES
        and exposition.replaced(native)
    )


LOG_METHOD_NAMES = frozenset(
    {"REQUEST_DURATION_SECONDS", "labels", "request", "method", "__class__", "__module__", "type", "__name__"}
    | {"get_status", "observe", "request_time"}
)
"""The names JupyterHub's ``prometheus_log_method`` uses (5.0 to 6.x): one ``labels(...).observe(...)``."""


class LoginMetrics(Part):
    name = "login metrics"
    expects = (Expect("jupyterhub.handlers.base", "BaseHandler.login_user", ("self", "data")),)

    def install(self) -> None:
        self.wrap(
            "jupyterhub.handlers.base", "BaseHandler.login_user", LoginRecorder(self.telemetry.instruments).wrapper
        )


class SpawnMetrics(Part):
    name = "spawn metrics"
    expects = (Expect("jupyterhub.user", "User.spawn", ("self", "server_name")),)

    def install(self) -> None:
        instruments = self.telemetry.instruments
        self.wrap("jupyterhub.user", "User.spawn", SpawnRecorder(instruments).wrapper)
        spawner_class = getattr(self.app, "spawner_class", None)
        if isinstance(spawner_class, type):
            # attempts and successes of the hub's spawner exist at zero from the start, like JupyterHub's own series:
            # rate() then counts the first spawn, and failures are attempts minus successes (alerts.yml)
            for name in ("spawn_success", "spawn_duration_seconds"):
                instruments[name].declare((spawner_class.__name__,))


class SpawnPhaseMetrics(Part):
    name = "spawn phases"
    expects = (
        Expect("jupyterhub.user", "User.spawn", ("self", "server_name")),
        Expect("jupyterhub.spawner", "Spawner.run_pre_spawn_hook", ("self",)),
        Expect("jupyterhub.spawner", "Spawner.progress", ("self",)),
        Expect("jupyterhub.user", "User._wait_up", ("self", "spawner")),
        Expect("jupyterhub.proxy", "Proxy.add_user", ("self", "user", "server_name")),
    )

    def install(self) -> None:
        settings = self.telemetry.settings
        phases = SpawnPhases(
            self.telemetry.instruments,
            settings.profile_option,
            settings.max_profile_labels,
            settings.spawn_records == "on",
        )
        self.wrap("jupyterhub.user", "User.spawn", phases.user_spawn)
        self.wrap("jupyterhub.spawner", "Spawner.run_pre_spawn_hook", phases.pre_spawn_hook)
        self.wrap("jupyterhub.user", "User._wait_up", phases.wait_up)
        self.wrap("jupyterhub.proxy", "Proxy.add_user", phases.add_user)
        instruments = self.telemetry.instruments
        # the success series of spawns without a profile exist at zero, like the other spawn families
        instruments["spawn_profile_duration_seconds"].declare(("", "success"))


class SingleUserServers(Part):
    name = "the single-user servers' environment"
    expects = (Expect("jupyterhub.spawner", "Spawner.get_env", ("self",)),)

    def install(self) -> None:
        environment = SingleUserEnvironment(self.telemetry.settings.singleuser_instrumentation)
        self.wrap("jupyterhub.spawner", "Spawner.get_env", environment.wrapper)


class OpenMetrics(Part):
    name = "exemplars on /hub/metrics (OpenMetrics)"
    expects = (
        Expect("jupyterhub.handlers.metrics", "MetricsHandler.get", ("self",)),
        Expect("jupyterhub.handlers.metrics", "generate_latest"),
    )

    def wanted(self) -> bool:
        return self.telemetry.settings.exemplars == "on"

    def install(self) -> None:
        from jupyterhub.handlers import metrics as module

        negotiation = OpenMetricsNegotiation(module.generate_latest)
        module.generate_latest = negotiation.generate
        self.on_uninstall(lambda: setattr(module, "generate_latest", negotiation.original))
        self.wrap("jupyterhub.handlers.metrics", "MetricsHandler.get", negotiation.get)


class HubState(Part):
    name = "the hub-state snapshot"

    def install(self) -> None:
        t = self.telemetry
        t.refresher = SnapshotRefresher(self.app, t.settings.refresh_interval)
        self.on_uninstall(lambda: setattr(t, "refresher", None))

    def start(self) -> None:
        if self.telemetry.refresher is not None:
            self.telemetry.refresher.start()

    def stop(self) -> None:
        if self.telemetry.refresher is not None:
            self.telemetry.refresher.stop()


class Custom(Part):
    name = "custom metrics"

    def install(self) -> None:
        t = self.telemetry
        metrics = custom.CustomMetrics(t.instruments, t.users, t.registry, t.declarations)
        self.on_uninstall(metrics.uninstall)
        metrics.install()
        t.custom = metrics
        self.on_uninstall(lambda: setattr(t, "custom", None))


class OTLPExport(Part):
    name = "the catalogue's OTLP export"

    def wanted(self) -> bool:
        return self.telemetry.settings.pushes_metrics

    def install(self) -> None:
        t = self.telemetry
        source = CatalogueProducer(lambda: t.instruments.families() + (t.custom.families() if t.custom else []))
        for undo in producer.install(t.meter_provider, source):
            self.on_uninstall(undo)


class Health(Part):
    name = "health checks"

    def install(self) -> None:
        t = self.telemetry
        checks = health.HealthChecks(self._record)
        for check in health.builtin_checks(self.app, t.settings.health_interval, t.snapshot):
            checks.add(check)
        t.check_registry.follow(checks)
        self.on_uninstall(lambda: t.check_registry.unfollow(checks))
        self._serve_report(checks)
        t.health = checks
        self.on_uninstall(lambda: setattr(t, "health", None))

    def _serve_report(self, checks: health.HealthChecks) -> None:
        """``<hub>/api/jh-otel/health``, ahead of JupyterHub's catch-all routes."""
        from jupyterhub.utils import url_path_join
        from tornado.routing import PathMatches, Rule

        app = self.app
        spec = (url_path_join(app.hub_prefix, health.URL) + "$", health.handler_class(checks))
        router = app.tornado_application.wildcard_router
        rule = router.process_rule(Rule(PathMatches(spec[0]), spec[1]))
        router.rules.insert(0, rule)
        app.handlers.insert(0, spec)

        def undo() -> None:
            router.rules.remove(rule)
            app.handlers.remove(spec)

        self.on_uninstall(undo)

    def _record(self, check: str, result: health.Result) -> None:
        with guarded("recording a health check"):
            instruments = self.telemetry.instruments
            instruments.set_gauge("health_check_status", (check,), health.STATUS_VALUE.get(result.status, -1.0))
            instruments.set_gauge("health_check_duration_seconds", (check,), result.duration_seconds)
            instruments.set_gauge("health_check_timestamp_seconds", (check,), time.time())

    def start(self) -> None:
        if self.telemetry.health is not None:
            self.telemetry.health.start()

    def stop(self) -> None:
        if self.telemetry.health is not None:
            self.telemetry.health.stop()


class ResourceUsage(Part):
    name = "per-server resource usage"

    def wanted(self) -> bool:
        return self.telemetry.settings.resource_usage == "on"

    def install(self) -> None:
        t = self.telemetry
        self.sampler = resources.ResourceSampler(t.snapshot, t.instruments, t.users, t.settings.refresh_interval)

    def start(self) -> None:
        self.sampler.start()

    def stop(self) -> None:
        self.sampler.stop()


class StartupObjectsFrozen(Part):
    """The objects the hub made while starting (modules, classes, configuration, its users and spawners) are left
    out of the garbage collector's full collections once it has started.

    A full collection scans every tracked object: on a hub of 130 MB it holds the event loop for 150-200 ms, and it
    runs when the objects that outlived two younger collections have grown by a quarter. Spans wait in the batch
    processor for seconds, so tracing makes them outlive those collections, and full collections come about twice as
    often as on a plain hub. ``gc.freeze`` after one last collection at startup leaves the startup objects out of
    every later scan (refcounting still frees them; only cycles among them are never collected, and they are the
    hub's long-lived state): a full collection then takes milliseconds, on a plain hub too.
    """

    name = "freezing the startup objects out of full collections"

    def wanted(self) -> bool:
        return self.telemetry.settings.gc_freeze == "on"

    def install(self) -> None:
        pass

    def start(self) -> None:
        import gc

        gc.collect()  # once, at startup: garbage made while starting is not kept frozen
        gc.freeze()
        log.info("jh_otel: %d startup objects left out of full garbage collections", gc.get_freeze_count())
        self.on_uninstall(gc.unfreeze)


class Traces(Part):
    name = "traces"

    def wanted(self) -> bool:
        return self.telemetry.tracing is not None

    def install(self) -> None:
        tracing = self.telemetry.tracing
        assert tracing is not None
        self.on_uninstall(tracing.detach)
        tracing.attach(self.app, self.telemetry.initialize_started)


PARTS: tuple[type[Part], ...] = (
    NativeMetrics,
    CatalogueExposition,
    RequestMetrics,
    LoginMetrics,
    SpawnMetrics,
    SpawnPhaseMetrics,
    SingleUserServers,
    OpenMetrics,
    HubState,
    Custom,
    OTLPExport,
    Health,
    ResourceUsage,
    StartupObjectsFrozen,
    Traces,
)
"""The whole wiring of a hub, in install order."""


def _following_jupyterhub(catalogue: Catalogue) -> Catalogue:
    """The catalogue with JupyterHub's own labels and buckets for its native families (hooks.native.follow)."""
    try:
        from jupyterhub import metrics
    except ImportError:  # no hub here (unit tests of other parts)
        return catalogue
    return follow(catalogue, metrics)


class HubTelemetry:
    def __init__(
        self,
        settings: Settings,
        meter_provider: Any = None,
        registry: CollectorRegistry = REGISTRY,
        tracing: HubTracing | None = None,
        parts: Sequence[type[Part]] = PARTS,
        declarations: custom.Declarations = custom.DECLARED,
        check_registry: health.CheckRegistry = health.REGISTRY,
    ) -> None:
        self.settings = settings
        self.meter_provider = meter_provider
        """Whose push readers export the catalogue over OTLP (:mod:`jh_otel.producer`)."""
        self.tracing = tracing
        self.registry = registry
        self.parts = tuple(parts)
        self.declarations = declarations
        self.check_registry = check_registry
        self.catalogue = _following_jupyterhub(build_catalogue(settings))
        self.users = custom.UserLabels(settings.max_user_labels)
        # exemplars for /hub/metrics (OpenMetrics, when asked) and for the OTLP export, as the SDK's trace-based filter
        # gives its own histograms by default
        wants_exemplars = settings.exemplars == "on" or settings.pushes_metrics
        exemplar = current_exemplar if wants_exemplars else None
        self.instruments = Instruments(self.catalogue, self.snapshot, exemplar)
        self.instruments.serving = False  # until every part is installed
        self.app: Any = None
        self.initialize_started: float | None = None
        # set by the parts that make them, while installed
        self.exposition: Exposition | None = None
        self.refresher: SnapshotRefresher | None = None
        self.custom: custom.CustomMetrics | None = None
        self.health: health.HealthChecks | None = None
        self.installed: list[Part] = []
        self._unlog: list[Callable[[], None]] = []

    def snapshot(self) -> Snapshot | None:
        """The current hub-state snapshot, None before the first one."""
        return self.refresher.current if self.refresher is not None else None

    def attach(self, app: Any, initialize_started: float | None = None) -> bool:
        """Install every part for ``app`` (the previous app, if any, is detached first): all, or none and False."""
        self.detach()
        self.app, self.initialize_started = app, initialize_started
        self._log_through(app)
        for part_class in self.parts:
            part = part_class(self, app)
            if not part.wanted() or (part.expects and unmet(part.name, part.expects, ("jupyterhub",))):
                continue
            try:
                part.install()
            except Exception as error:
                log.error(
                    "jh_otel: could not install %s (%s: %s); jh_otel is off for this hub, which serves JupyterHub's "
                    "own metrics as without it",
                    part.name,
                    type(error).__name__,
                    error,
                )
                log.debug("jh_otel: the failure of %s", part.name, exc_info=True)
                part.uninstall()
                self._uninstall()
                return False
            self.installed.append(part)
        self.instruments.serving = True
        return True

    def start(self) -> None:
        for part in self.installed:
            with guarded(f"starting {part.name}"):
                part.start()

    def stop(self) -> None:
        for part in reversed(self.installed):
            with guarded(f"stopping {part.name}"):
                part.stop()

    def _uninstall(self) -> None:
        self.instruments.serving = False
        while self.installed:
            self.installed.pop().uninstall()
        self.app = None

    def detach(self) -> None:
        """Every part off, in reverse order, and the registry as it was; jh_otel keeps logging through the hub's
        handlers."""
        self.stop()
        self._uninstall()

    def close(self) -> None:
        self.detach()
        while self._unlog:
            self._unlog.pop()()

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
