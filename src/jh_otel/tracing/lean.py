"""Lean spans: the SDK's own span decisions, without its span object's bookkeeping, exactly when that is the same.

The SDK's ``Tracer.start_span`` makes every decision (enabled tracer, parent, trace id, sampler, trace flags and
state, span id, its own metrics) and then builds a ``_Span``: a ``BoundedAttributes`` (a lock, an ``OrderedDict``, a
cleaning pass over every value), two ``BoundedList`` (a lock each) for the events and links hub spans almost never
have, a lock of its own, and at its end a ``ReadableSpan`` copy for the processors: the part of a request span
jh_otel can leave out (micro costs ``stop-16-before`` and ``stop-16`` in ``benchmarks/README.md``: the anonymous
``GET /hub/api`` request span went from 39.86 to 27.96 us without it). While installed, jh_otel stands in for the SDK's
``_Span`` class (the name ``Tracer.start_span`` looks up when it builds a span; checked at install, and put back at
uninstall) with :class:`SpanFactory`: every decision stays the SDK's, in every SDK version jh_otel allows, and for a
span it can show to be equivalent the factory returns a :class:`LeanSpan` (a dict of attributes, a start time, at its
end one ``ReadableSpan`` handed to the processors, which is all they and the exporters see).

It builds the SDK's span (each case has a test in ``tests/unit/test_lean_spans.py``) when:

- a span processor is not one whose ``on_start`` and ``_on_ending`` do nothing (the SDK's ``BatchSpanProcessor``
  and ``SimpleSpanProcessor``): a processor that reads or enriches live spans gets the SDK's;
- the span has links or events at start, the SDK's tracer metrics are on, or span limits truncate values;
- a start attribute is not a plain ``str``, ``bool``, ``int`` or ``float`` (the SDK cleans those), its key is not
  a non-empty ``str`` (the SDK drops it), or there are more of them than the attribute limit;
- the sampler's decision records without sampling.

A live lean span becomes the SDK's span the moment anything beyond plain attributes and its end is asked of it
(``add_event``, ``record_exception``, ``set_status``, ``add_link``, ``update_name``, a value the SDK would clean, the
attribute limit, an exception through ``with span:``): the SDK span is built from the lean one's arguments,
attributes and start time and does everything from then on, so events, exceptions and status are the SDK's own by
construction, and so are the warnings about an ended span.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from time import time_ns
from types import MappingProxyType
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import _tracer_metrics
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.trace.status import Status, StatusCode

from ..compat import Expect, unmet, versions

log = logging.getLogger("jh_otel")

PLAIN = frozenset({str, bool, int, float})
QUIET_PROCESSORS = frozenset({BatchSpanProcessor, SimpleSpanProcessor})
"""Span processors whose ``on_start`` and ``_on_ending`` do nothing: what they see of a span is its end."""
UNSET = Status(StatusCode.UNSET)
EXPECTS = (
    Expect("opentelemetry.sdk.trace", "_Span"),
    Expect(
        "opentelemetry.sdk.trace",
        "Span.__init__",
        ("self", "name", "context", "parent", "sampler", "trace_config", "resource", "attributes", "events", "links"),
    ),
    Expect("opentelemetry.sdk.trace", "Span.start", ("self", "start_time", "parent_context")),
    Expect("opentelemetry.sdk.trace._tracer_metrics", "noop"),
)
DISTRIBUTIONS = ("opentelemetry-sdk",)


class QuietProcessors:
    """Whether every span processor behind an SDK multi-processor is quiet (only looks at a span's end); cached on
    its processors tuple, which the SDK replaces on each add. Without that tuple (another SDK), nothing is quiet."""

    def __init__(self) -> None:
        self._seen: tuple[Any, bool] = ((), False)  # the last processors tuple seen, and whether all are quiet

    def __call__(self, multi: Any) -> bool:
        processors = getattr(multi, "_span_processors", None)
        seen, quiet = self._seen
        if processors is not seen:
            quiet = (
                type(multi) is sdk_trace.SynchronousMultiSpanProcessor
                and isinstance(processors, tuple)
                and all(type(p) in QUIET_PROCESSORS for p in processors)
            )
            self._seen = (processors, quiet)
        return quiet


class SpanFactory:
    """Called where ``Tracer.start_span`` calls ``_Span(...)``: a :class:`LeanSpan` when equivalent, else the SDK's."""

    def __init__(self, original: type) -> None:
        self.original = original
        self.quiet = QuietProcessors()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        attributes = kwargs.get("attributes")
        limits = kwargs.get("limits")
        context = kwargs.get("context")
        if (
            args
            or kwargs.get("links")
            or kwargs.get("events")
            or kwargs.get("record_end_metrics", None) not in (None, _tracer_metrics.noop)
            or limits is None
            or getattr(limits, "max_attribute_length", 0) is not None
            or context is None
            or not context.trace_flags.sampled
            or not self.quiet(kwargs.get("span_processor"))
        ):
            return self.original(*args, **kwargs)
        values = dict(attributes) if attributes else {}
        maximum = limits.max_span_attributes
        if (
            (maximum is not None and len(values) > maximum)
            or not PLAIN.issuperset(map(type, values.values()))
            or not all(type(key) is str and key for key in values)  # the SDK drops such a key, with a warning
        ):
            return self.original(*args, **kwargs)
        return LeanSpan(self, kwargs, values)


_PROMOTING = threading.Lock()


class LeanSpan(trace_api.Span):
    """A sampled span that is its arguments, a dict of plain attributes and a start time until it ends (one
    ``ReadableSpan`` to the processors) or is asked for more (then it is the SDK's span: :meth:`full`)."""

    __slots__ = ("_factory", "_kwargs", "_attributes", "_start_time", "_end_time", "_parent_context", "_sdk")

    def __init__(self, factory: SpanFactory, kwargs: dict[str, Any], attributes: dict[str, Any]) -> None:
        self._factory = factory
        self._kwargs = kwargs
        self._attributes = attributes
        self._start_time: int | None = None
        self._end_time: int | None = None
        self._parent_context: Any = None
        self._sdk: Any = None

    def start(self, start_time: int | None = None, parent_context: Any = None) -> None:
        if self._sdk is not None or self._start_time is not None:
            self.full().start(start_time, parent_context)
            return
        self._start_time = start_time if start_time is not None else time_ns()
        self._parent_context = parent_context  # the quiet processors' on_start does nothing with it

    def full(self) -> Any:
        """The SDK span this span is from now on: same arguments, attributes and start time. Asked after the lean
        span ended, an ended SDK span that no processor sees (it was exported once, at its end)."""
        with _PROMOTING:
            if self._sdk is None:
                kwargs = dict(self._kwargs, attributes=self._attributes)
                if self._end_time is not None:
                    kwargs["span_processor"] = sdk_trace.SpanProcessor()
                span = self._factory.original(**kwargs)
                span.start(start_time=self._start_time, parent_context=self._parent_context)
                if self._end_time is not None:
                    span.end(end_time=self._end_time)
                self._sdk = span
                self._parent_context = None
        return self._sdk

    # -- what a request or SQL span is asked for, lean --
    def get_span_context(self) -> Any:
        return self._kwargs["context"]

    def is_recording(self) -> bool:
        if self._sdk is not None:
            return bool(self._sdk.is_recording())
        return self._end_time is None

    def set_attribute(self, key: str, value: Any) -> None:
        if self._sdk is None and self._end_time is None and type(value) in PLAIN and type(key) is str and key:
            attributes = self._attributes
            if key in attributes:
                del attributes[key]  # as BoundedAttributes: an updated key moves last
                attributes[key] = value
                return
            maximum = self._kwargs["limits"].max_span_attributes
            if maximum is None or len(attributes) < maximum:
                attributes[key] = value
                return
        self.full().set_attribute(key, value)

    def set_attributes(self, attributes: Any) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def end(self, end_time: int | None = None) -> None:
        with _PROMOTING:
            ended = self._sdk is not None or self._end_time is not None
            if not ended:
                self._end_time = end = end_time if end_time is not None else time_ns()
                self._parent_context = None
        if ended:
            self.full().end(end_time)
            return
        kwargs = self._kwargs
        kwargs["span_processor"].on_end(
            sdk_trace.ReadableSpan(
                name=kwargs["name"],
                context=kwargs["context"],
                parent=kwargs.get("parent"),
                resource=kwargs.get("resource"),
                attributes=self._attributes,
                kind=kwargs.get("kind", trace_api.SpanKind.INTERNAL),
                status=UNSET,
                start_time=self._start_time,
                end_time=end,
                instrumentation_info=kwargs.get("instrumentation_info"),
                instrumentation_scope=kwargs.get("instrumentation_scope"),
            )
        )

    # -- everything else: the SDK's span --
    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        self.full().add_event(name, attributes, timestamp)

    def add_link(self, context: Any, attributes: Any = None) -> None:
        self.full().add_link(context, attributes)

    def update_name(self, name: str) -> None:
        self.full().update_name(name)

    def set_status(self, status: Any, description: str | None = None) -> None:
        self.full().set_status(status, description)

    def record_exception(
        self, exception: BaseException, attributes: Any = None, timestamp: int | None = None, escaped: bool = False
    ) -> None:
        self.full().record_exception(exception, attributes, timestamp, escaped)

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        if self._sdk is not None or (exc_val is not None and self.is_recording()):
            self.full().__exit__(exc_type, exc_val, exc_tb)
        else:
            self.end()

    # -- what code holding a live SDK span may read --
    def __getattr__(self, name: str) -> Any:
        """Any other attribute of the SDK's span (``attributes``, ``events``, ``status``, ``resource``...), read from
        it (built on first use: rare)."""
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.full(), name)

    @property
    def name(self) -> str:
        return str(self._sdk.name if self._sdk is not None else self._kwargs["name"])

    @property
    def context(self) -> Any:
        return self._kwargs["context"]

    @property
    def kind(self) -> Any:
        return self._kwargs.get("kind", trace_api.SpanKind.INTERNAL)

    @property
    def parent(self) -> Any:
        return self._kwargs.get("parent")

    @property
    def start_time(self) -> int | None:
        return self._start_time

    @property
    def end_time(self) -> int | None:
        return self._sdk.end_time if self._sdk is not None else self._end_time

    @property
    def attributes(self) -> Any:
        return self._sdk.attributes if self._sdk is not None else MappingProxyType(self._attributes)

    def __repr__(self) -> str:
        return f'LeanSpan(name="{self._kwargs["name"]}", context={self._kwargs["context"]})'


def install() -> list[Callable[[], None]]:
    """Stand in for the SDK's ``_Span`` (undo: put it back, if it is still ours). Nothing, with one warning, when the
    SDK is not the one this was checked against (``Tracer.start_span`` must build its spans by that name)."""
    if unmet("lean spans", EXPECTS, DISTRIBUTIONS):
        return []
    original = sdk_trace._Span
    if isinstance(original, SpanFactory):
        return []
    if "_Span" not in sdk_trace.Tracer.start_span.__code__.co_names:
        log.warning(
            "jh_otel: leaving out lean spans: opentelemetry.sdk.trace.Tracer.start_span does not build its spans"
            " as _Span (installed: %s); the rest of the telemetry is unaffected",
            versions(DISTRIBUTIONS),
        )
        return []
    factory = SpanFactory(original)
    sdk_trace._Span = factory  # type: ignore[misc,assignment]

    def undo() -> None:
        if sdk_trace._Span is factory:
            sdk_trace._Span = original  # type: ignore[misc]

    return [undo]
