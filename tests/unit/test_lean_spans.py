"""Lean spans (``jh_otel.tracing.lean``): the same exported spans as the SDK's, and the SDK's span whenever lean
cannot be shown to be the same."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

from jh_otel.tracing import lean


@pytest.fixture
def installed() -> Iterator[None]:
    undo = lean.install()
    assert undo, "lean spans did not install against this SDK"
    try:
        yield
    finally:
        for step in undo:
            step()


def pipeline(**provider_kwargs: Any) -> tuple[TracerProvider, InMemorySpanExporter, Any]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(**provider_kwargs)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter, provider.get_tracer("jh_otel.test", "1.0")


def shape(span: Any) -> tuple[Any, ...]:
    """What an exporter sees of a finished span, but for its ids and times."""
    events = tuple(
        (e.name, tuple((k, v) for k, v in e.attributes.items() if k != "exception.stacktrace")) for e in span.events
    )
    return (
        span.name,
        span.kind,
        tuple(span.attributes.items()),
        span.parent is not None,
        span.status.status_code,
        span.status.description,
        events,
        tuple(span.links),
        span.dropped_attributes,
        span.resource.attributes,
        span.instrumentation_scope,
        span.start_time is not None and span.end_time is not None and span.start_time <= span.end_time,
    )


def story(tracer: Any) -> None:
    """A request span with a SQL child, one failing operation and one raising through ``with``."""
    request = tracer.start_span("GET /hub/api", kind=trace.SpanKind.SERVER, attributes={"url.path": "/hub/api"})
    with trace.use_span(request, end_on_exit=False):
        sql = tracer.start_span("SELECT users", kind=trace.SpanKind.CLIENT, attributes={"db.system": "sqlite"})
        sql.set_attribute("db.rows", 3)
        sql.end()
        failing = tracer.start_span("spawn")
        failing.record_exception(ValueError("no"))
        failing.set_status(trace.Status(trace.StatusCode.ERROR, "ValueError: no"))
        failing.end()
        with pytest.raises(KeyError):
            with tracer.start_as_current_span("poll"):
                raise KeyError("gone")
    request.set_attribute("http.response.status_code", 200)
    request.set_attribute("url.path", "/hub/api/")  # an update moves the key last, as in BoundedAttributes
    request.set_attributes({"jupyterhub.user.name": "alice", "ratio": 0.5, "ok": True})
    request.end()


def test_lean_spans_export_exactly_what_sdk_spans_export(installed: None) -> None:
    """The same operations give the same finished spans, attribute order included, as with the SDK's spans."""
    provider, exporter, tracer = pipeline()
    story(tracer)
    lean_spans = [shape(s) for s in exporter.get_finished_spans()]
    factory = sdk_trace._Span
    sdk_trace._Span = factory.original  # the SDK's own, for the reference run
    try:
        _, reference, sdk_tracer = pipeline()
        story(sdk_tracer)
    finally:
        sdk_trace._Span = factory
    assert lean_spans == [shape(s) for s in reference.get_finished_spans()]
    assert [s.name for s in exporter.get_finished_spans()] == ["SELECT users", "spawn", "poll", "GET /hub/api"]


def test_a_plain_sampled_span_is_lean_and_parents_its_children(installed: None) -> None:
    """A sampled span with plain attributes is a LeanSpan; its children carry its trace and span ids."""
    _, exporter, tracer = pipeline()
    with tracer.start_as_current_span("parent", attributes={"a": 1}) as parent:
        assert type(parent) is lean.LeanSpan
        tracer.start_span("child").end()
    child, finished = exporter.get_finished_spans()
    assert child.parent.span_id == finished.context.span_id == parent.get_span_context().span_id
    assert child.context.trace_id == finished.context.trace_id
    assert dict(finished.attributes) == {"a": 1}


def test_a_processor_that_sees_span_starts_gets_sdk_spans(installed: None) -> None:
    """A span processor with its own ``on_start`` sees the SDK's live span, at start, once."""
    seen: list[Any] = []

    class Enricher(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            seen.append(span)
            span.set_attribute("enriched", True)

    provider, exporter, tracer = pipeline()
    tracer.start_span("before").end()
    provider.add_span_processor(Enricher())  # added later: the change is noticed
    tracer.start_span("after").end()
    assert [type(s) for s in seen] == [sdk_trace._Span.original]
    before, after = exporter.get_finished_spans()
    assert "enriched" not in before.attributes and after.attributes["enriched"] is True


@pytest.mark.parametrize(
    ("case", "make"),
    [
        ("links", lambda t, link: t.start_span("s", links=[link])),
        ("a list value", lambda t, link: t.start_span("s", attributes={"tags": ["a", "b"]})),
        ("an empty key", lambda t, link: t.start_span("s", attributes={"": 1, "kept": 2})),
    ],
)
def test_links_or_a_value_the_sdk_cleans_at_start_give_the_sdk_span(installed: None, case: str, make: Any) -> None:
    """Links at start, a start attribute the SDK would clean (a list to a tuple) or drop (an empty key), make the
    SDK's span."""
    _, exporter, tracer = pipeline()
    other = tracer.start_span("other")
    other.end()
    span = make(tracer, trace.Link(other.get_span_context()))
    assert type(span) is sdk_trace._Span.original
    span.end()
    finished = exporter.get_finished_spans()[-1]
    if case == "links":
        assert len(finished.links) == 1
    elif case == "a list value":
        assert finished.attributes["tags"] == ("a", "b")
    else:
        assert dict(finished.attributes) == {"kept": 2}


def test_truncating_span_limits_give_the_sdk_span(installed: None) -> None:
    """With ``max_attribute_length`` set, spans are the SDK's (which truncates values)."""
    _, exporter, tracer = pipeline(span_limits=SpanLimits(max_attribute_length=4))
    span = tracer.start_span("s", attributes={"url.path": "/hub/api"})
    assert type(span) is sdk_trace._Span.original
    span.end()
    assert exporter.get_finished_spans()[0].attributes["url.path"] == "/hub"


def test_the_attribute_limit_counts_as_the_sdk_counts(installed: None) -> None:
    """Past ``max_span_attributes`` the span becomes the SDK's: the oldest is dropped and counted, as without lean."""
    _, exporter, tracer = pipeline(span_limits=SpanLimits(max_span_attributes=2))
    assert type(tracer.start_span("over", attributes={"a": 1, "b": 2, "c": 3})) is sdk_trace._Span.original
    span = tracer.start_span("s", attributes={"a": 1, "b": 2})
    assert type(span) is lean.LeanSpan
    span.set_attribute("c", 3)
    span.end()
    finished = exporter.get_finished_spans()[-1]
    assert dict(finished.attributes) == {"b": 2, "c": 3} and finished.dropped_attributes == 1


class RecordOnly(Sampler):
    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return SamplingResult(Decision.RECORD_ONLY, {"sampler": "record-only"})

    def get_description(self) -> str:
        return "RecordOnly"


def test_a_record_only_decision_gives_the_sdk_span_sampled_once(installed: None) -> None:
    """A sampler that records without sampling gets the SDK's recording span with its attributes; nothing exported."""
    _, exporter, tracer = pipeline(sampler=RecordOnly())
    span = tracer.start_span("s")
    assert type(span) is sdk_trace._Span.original and span.is_recording()
    assert dict(span.attributes) == {"sampler": "record-only"}
    span.end()
    assert exporter.get_finished_spans() == ()


def test_the_sdk_tracer_metrics_give_the_sdk_span(installed: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the SDK's own tracer metrics on (they are called at each span's end), spans are the SDK's."""
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    _, exporter, tracer = pipeline()
    span = tracer.start_span("s")
    assert type(span) is sdk_trace._Span.original
    span.end()
    assert len(exporter.get_finished_spans()) == 1


def test_a_batch_processor_gets_lean_spans(installed: None) -> None:
    """The SDK's batch processor (the hub's) only sees ends: spans are lean and reach its exporter once."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    span = provider.get_tracer("t").start_span("s", attributes={"a": "b"})
    assert type(span) is lean.LeanSpan
    span.end()
    provider.force_flush()
    assert [dict(s.attributes) for s in exporter.get_finished_spans()] == [{"a": "b"}]
    provider.shutdown()


def test_an_ended_lean_span_warns_as_the_sdk_and_is_exported_once(
    installed: None, caplog: pytest.LogCaptureFixture
) -> None:
    """After its end a lean span takes no attribute, no second end and no status, with the SDK's own warnings."""

    def after_end(span: Any) -> list[str]:
        span.end()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="opentelemetry.sdk.trace"):
            span.set_attribute("late", 1)
            span.end()
            span.set_status(trace.StatusCode.ERROR)
        assert not span.is_recording()
        return [r.getMessage() for r in caplog.records]

    _, exporter, tracer = pipeline()
    span = tracer.start_span("s")
    assert type(span) is lean.LeanSpan
    said = after_end(span)
    reference = sdk_trace._Span.original(
        name="s", context=span.get_span_context(), span_processor=SpanProcessor(), limits=SpanLimits()
    )
    reference.start()
    assert said == after_end(reference) and len(said) == 3
    (finished,) = exporter.get_finished_spans()
    assert dict(finished.attributes) == {} and finished.status.status_code is trace.StatusCode.UNSET


def test_a_promoted_span_keeps_its_ids_start_time_and_attributes(installed: None) -> None:
    """Asked for an event, a lean span becomes the SDK's with the same context, start time and attributes."""
    _, exporter, tracer = pipeline()
    span = tracer.start_span("s", attributes={"a": 1})
    context, started = span.get_span_context(), span.start_time
    span.add_event("checkpoint", {"n": 2})
    span.set_attribute("b", 2)
    span.end()
    (finished,) = exporter.get_finished_spans()
    assert finished.context == context and finished.start_time == started
    assert dict(finished.attributes) == {"a": 1, "b": 2}
    assert [(e.name, dict(e.attributes)) for e in finished.events] == [("checkpoint", {"n": 2})]


def test_install_is_undone_and_refuses_an_sdk_that_builds_spans_otherwise(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Undo puts the SDK's ``_Span`` back; an SDK whose ``start_span`` does not build ``_Span`` gets one warning and
    no lean spans."""
    original = sdk_trace._Span
    undo = lean.install()
    assert isinstance(sdk_trace._Span, lean.SpanFactory) and lean.install() == []
    for step in undo:
        step()
    assert sdk_trace._Span is original

    def start_span(self: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        return trace.INVALID_SPAN

    monkeypatch.setattr(sdk_trace.Tracer, "start_span", start_span)
    with caplog.at_level(logging.WARNING, logger="jh_otel"):
        assert lean.install() == []
    assert sdk_trace._Span is original
    assert [r.getMessage().split(":")[1].strip() for r in caplog.records] == ["leaving out lean spans"]
