"""Per-request metrics, recorded where JupyterHub records its own: ``jupyterhub.log.prometheus_log_method``.

JupyterHub's ``log_request`` (tornado's ``log_function``) runs once at the end of every request, errors included,
and looks ``prometheus_log_method`` up in ``jupyterhub.log`` at call time; wrapping it there counts each request
exactly once (the contrib tornado instrumentation counts an error response twice).

JupyterHub's own function does one thing: it observes the request in its ``REQUEST_DURATION_SECONDS``, the histogram
jh_otel serves as ``request_duration_seconds`` in its place (:mod:`jh_otel.exposition` unregisters it). While that
native histogram is not served, :meth:`RequestRecorder.replacement` stands in for JupyterHub's function instead of
wrapping it: the same observation recorded once, not a second time into a histogram nothing reads (about 7 us a
request in a hub).
"""

from __future__ import annotations

from typing import Any

from .._guard import guarded
from ..instruments import Instruments
from .routes import Routes

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "_OTHER"


class RequestRecorder:
    def __init__(self, instruments: Instruments, routes: Routes, api_prefix: str) -> None:
        self._duration = instruments["request_duration_seconds"].record
        self._count = instruments["request_count"].record
        self._api = instruments["api_request_duration_seconds"].record
        self._page = instruments["hub_response_duration_seconds"].record
        self._routes = routes
        self._api_prefix = api_prefix.rstrip("/")
        self._handler_names: dict[type, str] = {}

    def _handler_name(self, cls: type) -> str:
        name = self._handler_names.get(cls)
        if name is None:
            name = self._handler_names[cls] = f"{cls.__module__}.{cls.__name__}"
        return name

    def record(self, handler: Any) -> None:
        request = handler.request
        duration = request.request_time()
        method = request.method if request.method in METHODS else OTHER_METHOD
        code = str(handler.get_status())
        cls = type(handler)
        labels = (method, self._handler_name(cls), code)
        self._duration(duration, labels)
        self._count(1, labels)
        path = request.path
        if path == self._api_prefix or path.startswith(self._api_prefix + "/"):
            self._api(duration, (method, self._routes.endpoint(cls, path), code))
        else:
            self._page(duration)

    def wrapper(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        """JupyterHub's function, then the catalogue's records."""
        result = wrapped(*args, **kwargs)
        self._record(args, kwargs)
        return result

    def replacement(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> None:
        """The catalogue's records in place of JupyterHub's function, whose histogram is not served."""
        self._record(args, kwargs)

    def _record(self, args: Any, kwargs: Any) -> None:
        try:  # inline rather than a guarded() block (a generator context manager): this runs for every request
            self.record(args[0] if args else kwargs["handler"])
        except Exception:
            with guarded("recording a request"):
                raise
