"""Scrubbing on the way out: known secrets per trace, attribute values by key kind, real SDK spans and exporters."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, Tracer

from jh_otel.scrub import MAX_SCANNED, MAX_SCANNED_STACKTRACE, REDACTED, TRUNCATED
from jh_otel.tracing import scrubbing
from jh_otel.tracing.scrubbing import (
    MAX_SECRET_LENGTH,
    MAX_SECRETS_PER_TRACE,
    KnownSecrets,
    ScrubbingSpanExporter,
    scrub_attributes,
    scrub_span,
    scrub_value,
    wrap_exporters,
)

R = REDACTED
SECRET = "hunter2secret"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """``time.monotonic`` as seen by the scrubbing module, set by the test."""
    now = SimpleNamespace(value=1000.0)
    monkeypatch.setattr(scrubbing, "time", SimpleNamespace(monotonic=lambda: now.value))
    return now


@pytest.fixture
def recorded() -> Iterator[tuple[Tracer, InMemorySpanExporter]]:
    """A tracer whose finished spans land, unscrubbed, in an in-memory exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test"), exporter
    provider.shutdown()


# --- KnownSecrets ---------------------------------------------------------------------------------------------------


def test_known_secrets_keep_strings_of_at_least_four_characters_longest_first() -> None:
    """Short strings, non-strings and duplicates are dropped; the rest come back longest first."""
    known = KnownSecrets()
    known.add(1, ["abc", "abcd", "abcdef", 5, None, "abcd", ""])
    assert known.get(1) == ("abcdef", "abcd")
    assert len(known) == 1


def test_known_secrets_merge_values_added_to_the_same_trace() -> None:
    """A second add for a trace keeps the first values; the order stays longest first."""
    known = KnownSecrets()
    known.add(7, ["abcd", "abcdef"])
    known.add(7, ["xyzxyzxyz", "abcd"])
    assert known.get(7) == ("xyzxyzxyz", "abcdef", "abcd")
    assert len(known) == 1


@pytest.mark.parametrize(
    ("trace_id", "values"),
    [(0, ["longenough"]), (1, ["abc", "xy", ""]), (1, []), (1, [1234, None, b"bytes-not-str"])],
)
def test_known_secrets_ignore_trace_zero_and_values_too_short(trace_id: int, values: list[Any]) -> None:
    """Nothing is stored for the invalid trace id, nor when no value is a string of four characters or more."""
    known = KnownSecrets()
    known.add(trace_id, values)
    assert len(known) == 0
    assert known.get(trace_id) == ()


def test_known_secrets_of_an_unknown_trace_are_empty() -> None:
    """A trace nothing was added for has no known secrets, whatever other traces hold."""
    known = KnownSecrets()
    known.add(1, ["abcdef"])
    assert known.get(2) == ()
    assert known.get(1) == ("abcdef",)


def test_known_secrets_keep_each_set_of_values_once_until_its_last_trace_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Traces that carry equal secrets (a user's cookies, each request with its own copies) share one kept tuple;
    it goes when the last trace holding it is evicted (capacity, TTL or a second add), and nothing else is kept."""
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    known = KnownSecrets(capacity=3, ttl=10.0)
    cookie = "cookie-" + "x" * 40
    known.add(1, [cookie[:7] + cookie[7:], "session-id"])
    known.add(2, ["".join(cookie), "session-id"])
    assert known.get(1) is known.get(2) == (cookie, "session-id")
    assert known.get(1)[0] is known.get(2)[0] and len(known._shared) == 1
    known.add(3, ["other-token"])
    known.add(4, ["other-token"])  # capacity 3: trace 1 goes, trace 2 still holds the cookies
    assert known.get(1) == () and known.get(2) == (cookie, "session-id") and len(known._shared) == 2
    known.add(2, ["more-secret"])  # a second add: trace 2 holds a new set, the old one has no holder left
    assert known.get(2) == (cookie, "more-secret", "session-id")
    assert sorted(known._shared) == sorted([("other-token",), (cookie, "more-secret", "session-id")])
    known.add(3, ["other-token"])  # re-adds of the set a trace holds already: still one set, held by the two
    known.add(4, ["other-token"])
    assert known._shared[("other-token",)][1] == 2 and len(known._shared) == 2
    clock[0] += 11  # every trace past its TTL: the next add drops them all, and their sets with them
    known.add(5, ["fresh-token"])
    assert len(known) == 1 and list(known._shared) == [("fresh-token",)]


def test_known_secrets_are_replaced_longest_first() -> None:
    """A secret that contains a shorter one is redacted whole, not left with a tail."""
    known = KnownSecrets()
    known.add(1, ["abcd", "abcdef"])
    assert scrub_value("exception.message", "saw abcdef and abcd!", known.get(1)) == f"saw {R} and {R}!"


def test_known_secrets_capacity_evicts_the_oldest_trace() -> None:
    """At most ``capacity`` traces; adding to a trace again makes it the newest."""
    known = KnownSecrets(capacity=2)
    known.add(1, ["one-secret"])
    known.add(2, ["two-secret"])
    known.add(1, ["one-more"])  # trace 1 is now the newest
    known.add(3, ["three-secret"])
    assert len(known) == 2
    assert known.get(2) == ()
    assert known.get(1) == ("one-secret", "one-more")
    assert known.get(3) == ("three-secret",)


def test_known_secrets_live_until_the_ttl(clock: SimpleNamespace) -> None:
    """An entry exactly ``ttl`` seconds old is still there."""
    known = KnownSecrets(ttl=10)
    known.add(1, ["aaaa"])
    clock.value += 10
    assert known.get(1) == ("aaaa",)
    assert len(known) == 1


def test_known_secrets_expiry_sweeps_the_oldest_entries(clock: SimpleNamespace) -> None:
    """Adding drops every entry older than the ttl, oldest first, and keeps the younger ones."""
    known = KnownSecrets(ttl=10)
    known.add(1, ["aaaa"])
    clock.value += 5
    known.add(2, ["bbbb"])
    clock.value += 7  # trace 1 is 12 s old, trace 2 7 s old
    known.add(3, ["cccc"])
    assert known.get(2) == ("bbbb",) and known.get(1) == ()
    assert len(known) == 2
    clock.value += 4  # trace 2 is 11 s old, trace 3 4 s old
    known.add(4, ["dddd"])
    assert len(known) == 2 and known.get(3) == ("cccc",)


def test_known_secrets_expired_entry_is_not_returned(clock: SimpleNamespace) -> None:
    """A lookup of an entry past its ttl returns nothing for it (the next add sweeps it out)."""
    known = KnownSecrets(ttl=10)
    known.add(1, ["aaaa"])
    clock.value += 11
    assert known.get(1) == ()
    known.add(2, ["bbbb"])
    assert len(known) == 1


# --- scrub_value ----------------------------------------------------------------------------------------------------

URL_VALUES = [
    (
        "url.full",
        "https://hub.example/hub/api/users?token=abc123&limit=10",
        f"https://hub.example/hub/api/users?token={R}&limit=10",
    ),
    ("url.full", "https://hub.example/hub/api/users?TOKEN=abc123", f"https://hub.example/hub/api/users?TOKEN={R}"),
    ("url.full", "https://hub.example/hub/api/users?%74oken=abc123", f"https://hub.example/hub/api/users?%74oken={R}"),
    ("url.full", "/hub/login?Password=hunter2&next=%2Fhub%2F", f"/hub/login?Password={R}&next=%2Fhub%2F"),
    ("url.full", "/hub/login?pass%77ord=hunter2", f"/hub/login?pass%77ord={R}"),
    ("url.query", "code=c0de&state=st4te&next=/hub/home", f"code={R}&state={R}&next=/hub/home"),
    ("url.query", "_XSRF=2|ab|cd&profile=gpu", f"_XSRF={R}&profile=gpu"),
    ("url.query", "_%78srf=2|ab|cd", f"_%78srf={R}"),
    ("url.query", "profile=gpu&next=/hub/home", "profile=gpu&next=/hub/home"),
    ("http.target", "/hub/oauth_callback?Code=c0de&STATE=st4te", f"/hub/oauth_callback?Code={R}&STATE={R}"),
    ("http.target", "/hub/api/authorizations/token/0123456789abcdef", f"/hub/api/authorizations/token/{R}"),
    ("url.path", "/hub/api/authorizations/token/0123456789abcdef", f"/hub/api/authorizations/token/{R}"),
    ("http.url", "http://alice:hunter2@hub.example/hub/", f"http://alice:{R}@hub.example/hub/"),
    ("url.full", "https://hub.example/hub/spawn/alice?profile=gpu", "https://hub.example/hub/spawn/alice?profile=gpu"),
    ("http.target", "/hub/home", "/hub/home"),
]

SQL_VALUES = [
    (
        "db.statement",
        "SELECT * FROM users WHERE name = 'alice' AND id = 42",
        "SELECT * FROM users WHERE name = ? AND id = ?",
    ),
    (
        "db.statement",
        "UPDATE api_tokens SET token='abc123' WHERE api_tokens.id = 7",
        "UPDATE api_tokens SET token=? WHERE api_tokens.id = ?",
    ),
    (
        "db.statement",
        "SELECT oauth_clients.id FROM oauth_clients WHERE oauth_clients.oauth_client_id = ?",
        "SELECT oauth_clients.id FROM oauth_clients WHERE oauth_clients.oauth_client_id = ?",
    ),
    (
        "db.statement",
        "DELETE FROM oauth_clients WHERE oauth_client_id=?",
        "DELETE FROM oauth_clients WHERE oauth_client_id=?",
    ),
    (
        "db.statement",
        "DELETE FROM oauth_clients WHERE oauth_client_id='jupyterhub-user-alice'",
        "DELETE FROM oauth_clients WHERE oauth_client_id=?",
    ),
    ("db.query.text", "SELECT * FROM users WHERE name = 'alice'", "SELECT * FROM users WHERE name = ?"),
]

HEADER_VALUES = [
    ("http.request.header.authorization", ["token abc123"], [f"token {R}"]),
    ("http.request.header.authorization", ("Bearer abcdef123456",), (f"Bearer {R}",)),
    ("http.request.header.authorization", ["abc123"], [R]),
    ("http.request.header.proxy_authorization", ["Basic YWxpY2U6aHVudGVyMg=="], [f"Basic {R}"]),
    (
        "http.request.header.cookie",
        ["jupyterhub-session-id=abc; _xsrf=2|x|y"],
        [f"jupyterhub-session-id={R};_xsrf={R}"],
    ),
    (
        "http.response.header.set_cookie",
        ["jupyterhub-hub-login=zzz; Path=/hub/; HttpOnly"],
        [f"jupyterhub-hub-login={R}; Path=/hub/; HttpOnly"],
    ),
    ("http.request.header.x_api_key", ["k"], [R]),
    ("http.request.header.user_agent", ["curl/8.5.0"], ["curl/8.5.0"]),
]

TEXT_VALUES = [
    ("exception.message", "401: Bearer xyz0123456789 rejected", f"401: Bearer {R} rejected"),
    (
        "exception.message",
        "HTTP 403: Forbidden (token abcdef1234 not valid)",
        f"HTTP 403: Forbidden (token {R} not valid)",
    ),
    ("exception.message", "login failed with password=hunter2 for alice", f"login failed with password={R} for alice"),
    (
        "exception.message",
        "fetching https://hub.example/hub/api/users?token=abc123 failed",
        f"fetching https://hub.example/hub/api/users?token={R} failed",
    ),
    (
        "exception.message",
        "see /hub/api/authorizations/token/abcdef0123 now",
        f"see /hub/api/authorizations/token/{R} now",
    ),
    ("exception.message", "user alice not found", "user alice not found"),
    ("http.route", "/hub/api/users/{name}", "/hub/api/users/{name}"),
    ("jupyterhub.user", "alice", "alice"),
]


@pytest.mark.parametrize(("key", "value", "expected"), URL_VALUES + SQL_VALUES + HEADER_VALUES + TEXT_VALUES)
def test_scrub_value(key: str, value: Any, expected: Any) -> None:
    """Each key kind gets its own scrubbing; sequences keep their type."""
    clean = scrub_value(key, value)
    assert clean == expected
    assert type(clean) is type(expected)


@pytest.mark.parametrize("value", [200, 0, True, False, 1.5, None, b"token=abc123"])
def test_scrub_value_leaves_non_strings_alone(value: Any) -> None:
    """Numbers, booleans, None and bytes pass through as the same object."""
    assert scrub_value("exception.message", value, (SECRET,)) is value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["a=1", "password=x"], ["a=1", f"password={R}"]),
        (("token=abc123", "plain"), (f"token={R}", "plain")),
        ((1, 2), (1, 2)),
        ([], []),
    ],
)
def test_scrub_value_sequences(value: Sequence[Any], expected: Sequence[Any]) -> None:
    """Each string of a list or tuple is scrubbed; the sequence keeps its type."""
    clean = scrub_value("messages", value)
    assert clean == expected
    assert type(clean) is type(expected)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("exception.message", f"my {SECRET} leaked", f"my {R} leaked"),
        ("db.statement", f"SELECT x FROM t WHERE c = ? -- {SECRET}", f"SELECT x FROM t WHERE c = ? -- {R}"),
        ("url.full", f"/user/alice/{SECRET}/lab", f"/user/alice/{R}/lab"),
        ("http.request.header.x_forwarded_user", [SECRET], [R]),
        ("exception.message", "nothing to see", "nothing to see"),
    ],
)
def test_scrub_value_known_secrets(key: str, value: Any, expected: Any) -> None:
    """Values known to be secret are redacted wherever they appear, whatever the key."""
    assert scrub_value(key, value, (SECRET,)) == expected


# --- scrub_attributes -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attributes",
    [
        None,
        {},
        {"http.route": "/hub/api/users/{name}", "http.status_code": 200, "ok": True},
        {"http.request.header.user_agent": ("curl/8.5.0",), "db.statement": "SELECT users.id FROM users"},
    ],
)
def test_scrub_attributes_returns_the_same_object_when_clean(attributes: dict[str, Any] | None) -> None:
    """Attributes with nothing to redact are returned as the same object, not copied."""
    assert scrub_attributes(attributes, (SECRET,)) is attributes


def test_scrub_attributes_copies_when_something_changed() -> None:
    """A new mapping with only the dirty values replaced; the original is untouched."""
    attributes = {
        "url.full": "/hub/api/users?token=abc123",
        "http.status_code": 403,
        "http.route": "/hub/api/users",
        "exception.message": f"bad {SECRET}",
    }
    original = dict(attributes)
    clean = scrub_attributes(attributes, (SECRET,))
    assert clean is not attributes
    assert clean == {
        "url.full": f"/hub/api/users?token={R}",
        "http.status_code": 403,
        "http.route": "/hub/api/users",
        "exception.message": f"bad {R}",
    }
    assert attributes == original


# --- scrub_span on real SDK spans -----------------------------------------------------------------------------------


def _dirty_span(tracer: Tracer, known: KnownSecrets | None) -> ReadableSpan:
    """A server span with a token in its name and URL, and an exception echoing a password and a token."""
    with pytest.raises(ValueError):
        with tracer.start_as_current_span(
            "GET /hub/login?token=abc123",
            kind=SpanKind.SERVER,
            attributes={
                "url.full": "https://hub.example/hub/login?token=abc123&next=/hub/",
                "http.request.header.authorization": ("token abc123",),
                "http.response.status_code": 500,
            },
        ) as span:
            if known is not None:
                known.add(span.get_span_context().trace_id, [SECRET])
            raise ValueError("bad password " + SECRET + " and token=abc123")
    return span  # type: ignore[return-value]


def test_scrub_span_redacts_name_attributes_events_and_status(recorded: tuple[Tracer, InMemorySpanExporter]) -> None:
    """A dirty span's copy is redacted everywhere and keeps everything else; the recorded span is untouched."""
    tracer, exporter = recorded
    known = KnownSecrets()
    _dirty_span(tracer, known)
    (span,) = exporter.get_finished_spans()

    clean = scrub_span(span, known)

    assert clean is not span
    assert clean.name == f"GET /hub/login?token={R}"
    assert dict(clean.attributes) == {
        "url.full": f"https://hub.example/hub/login?token={R}&next=/hub/",
        "http.request.header.authorization": (f"token {R}",),
        "http.response.status_code": 500,
    }
    (event,) = clean.events
    assert event.name == "exception"
    assert event.timestamp == span.events[0].timestamp
    assert event.attributes["exception.type"] == "ValueError"
    assert event.attributes["exception.message"] == f"bad password {R} and token={R}"
    assert SECRET not in event.attributes["exception.stacktrace"]
    assert "abc123" not in event.attributes["exception.stacktrace"]
    assert clean.status.status_code is StatusCode.ERROR
    assert clean.status.description == f"ValueError: bad password {R} and token={R}"
    # everything else is the span's own
    assert clean.context == span.context
    assert clean.parent == span.parent
    assert clean.kind is SpanKind.SERVER
    assert (clean.start_time, clean.end_time) == (span.start_time, span.end_time)
    assert clean.resource is span.resource
    assert clean.instrumentation_scope == span.instrumentation_scope
    # the recorded span itself is not modified
    assert span.name == "GET /hub/login?token=abc123"
    assert span.status.description == f"ValueError: bad password {SECRET} and token=abc123"


def test_scrub_span_uses_only_the_secrets_of_its_own_trace(recorded: tuple[Tracer, InMemorySpanExporter]) -> None:
    """Without the trace's known secrets only pattern-detectable credentials are redacted."""
    tracer, exporter = recorded
    other = KnownSecrets()
    other.add(12345, [SECRET])
    _dirty_span(tracer, None)
    (span,) = exporter.get_finished_spans()
    for known in (None, other):
        clean = scrub_span(span, known)
        assert clean.events[0].attributes["exception.message"] == f"bad password {SECRET} and token={R}"
        assert clean.status.description == f"ValueError: bad password {SECRET} and token={R}"


def test_scrub_span_redacts_a_status_description_and_an_event_name(
    recorded: tuple[Tracer, InMemorySpanExporter],
) -> None:
    """A credential in a status description or an event name is redacted."""
    tracer, exporter = recorded
    with tracer.start_as_current_span("upstream") as span:
        span.add_event("retrying /hub/api/users?token=abc123", {"attempt": 2})
        span.set_status(Status(StatusCode.ERROR, "proxy said password=hunter2"))
    (recorded_span,) = exporter.get_finished_spans()
    clean = scrub_span(recorded_span)
    assert clean.name == "upstream"
    assert [(e.name, dict(e.attributes)) for e in clean.events] == [
        (f"retrying /hub/api/users?token={R}", {"attempt": 2})
    ]
    assert (clean.status.status_code, clean.status.description) == (StatusCode.ERROR, f"proxy said password={R}")


def _clean_with_attributes(tracer: Tracer) -> None:
    with tracer.start_as_current_span("GET /hub/api/users", attributes={"http.route": "/hub/api/users"}) as span:
        span.add_event("cache miss", {"hit": False})
        span.set_status(Status(StatusCode.OK))


def _clean_bare(tracer: Tracer) -> None:
    with tracer.start_as_current_span("bare"):
        pass


@pytest.mark.parametrize("make", [_clean_with_attributes, _clean_bare])
def test_scrub_span_returns_a_clean_span_itself(recorded: tuple[Tracer, InMemorySpanExporter], make: Any) -> None:
    """A span with nothing to redact is not copied."""
    tracer, exporter = recorded
    known = KnownSecrets()
    make(tracer)
    (span,) = exporter.get_finished_spans()
    known.add(span.context.trace_id, [SECRET])
    assert scrub_span(span, known) is span


def test_scrub_span_redacts_link_attributes(recorded: tuple[Tracer, InMemorySpanExporter]) -> None:
    """The module says links are scrubbed too: a link attribute carrying a token is redacted."""
    tracer, exporter = recorded
    with tracer.start_as_current_span("origin") as origin:
        pass
    link = Link(origin.get_span_context(), {"url.full": "/hub/api/users?token=abc123"})
    with tracer.start_as_current_span("linked", links=[link]):
        pass
    span = exporter.get_finished_spans()[-1]
    clean = scrub_span(span)
    assert [dict(link.attributes) for link in clean.links] == [{"url.full": f"/hub/api/users?token={R}"}]


def test_scrub_span_keeps_the_dropped_counts() -> None:
    """A scrubbed copy still says how many attributes and events the SDK's limits dropped (OTLP exports the counts)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=SpanLimits(max_span_attributes=2, max_events=1))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        with provider.get_tracer("test").start_as_current_span("GET /hub/api/users?token=abc123") as span:
            span.set_attributes({"a": 1, "b": 2, "c": 3})
            span.add_event("first")
            span.add_event("second")
        (recorded_span,) = exporter.get_finished_spans()
        assert (recorded_span.dropped_attributes, recorded_span.dropped_events) == (1, 1)
        clean = scrub_span(recorded_span)
        assert clean.name == f"GET /hub/api/users?token={R}"
        assert (clean.dropped_attributes, clean.dropped_events) == (1, 1)
    finally:
        provider.shutdown()


# --- ScrubbingSpanExporter ------------------------------------------------------------------------------------------


class RecordingExporter(SpanExporter):
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls.append(("export", [span.name for span in spans]))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.calls.append(("shutdown", None))

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self.calls.append(("force_flush", timeout_millis))
        return False


def test_scrubbing_exporter_exports_scrubbed_spans(recorded: tuple[Tracer, InMemorySpanExporter]) -> None:
    """The wrapping exporter hands scrubbed copies and clean spans to the inner one, in order."""
    tracer, raw = recorded
    known = KnownSecrets()
    _dirty_span(tracer, known)
    _clean_bare(tracer)
    dirty, clean = raw.get_finished_spans()
    inner = InMemorySpanExporter()
    exporter = ScrubbingSpanExporter(inner, known)
    assert exporter.export([dirty, clean]) is SpanExportResult.SUCCESS
    exported = inner.get_finished_spans()
    assert [span.name for span in exported] == [f"GET /hub/login?token={R}", "bare"]
    assert exported[0].events[0].attributes["exception.message"] == f"bad password {R} and token={R}"


def test_scrubbing_exporter_drops_a_span_it_cannot_scrub() -> None:
    """A span whose scrubbing raises is not sent; the others still are."""
    inner = RecordingExporter()
    broken = ReadableSpan(name=None)  # type: ignore[arg-type]
    fine = ReadableSpan(name="GET /hub/home")
    assert ScrubbingSpanExporter(inner).export([broken, fine]) is SpanExportResult.SUCCESS
    assert inner.calls == [("export", ["GET /hub/home"])]


def test_scrubbing_exporter_delegates_shutdown_and_force_flush() -> None:
    """Shutdown and force_flush reach the inner exporter, with its timeout and result."""
    inner = RecordingExporter()
    exporter = ScrubbingSpanExporter(inner)
    assert exporter.force_flush(1234) is False
    assert exporter.force_flush() is False
    exporter.shutdown()
    assert inner.calls == [("force_flush", 1234), ("force_flush", 30000), ("shutdown", None)]


def test_scrubbing_exporter_shutdown_reaches_an_in_memory_exporter() -> None:
    """After shutdown the inner exporter refuses exports, as it would unwrapped."""
    inner = InMemorySpanExporter()
    exporter = ScrubbingSpanExporter(inner)
    exporter.shutdown()
    assert exporter.export([ReadableSpan(name="late")]) is SpanExportResult.FAILURE
    assert inner.get_finished_spans() == ()


# --- wrap_exporters -------------------------------------------------------------------------------------------------


class NoExporterProcessor(SpanProcessor):
    """A processor of a type jh_otel does not know: it has no exporter slot."""


def test_wrap_exporters_wraps_batch_and_simple_processors_and_undoes(caplog: pytest.LogCaptureFixture) -> None:
    """Batch and simple processors' exporters are wrapped once, scrub what they send, and the undo restores them."""
    batch_out, simple_out = InMemorySpanExporter(), InMemorySpanExporter()
    batch, simple, other = BatchSpanProcessor(batch_out), SimpleSpanProcessor(simple_out), NoExporterProcessor()
    provider = TracerProvider()
    for processor in (batch, simple, other):
        provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    known = KnownSecrets()
    try:
        with caplog.at_level(logging.WARNING, logger="jh_otel"):
            undo = wrap_exporters(provider, known)
        assert len(undo) == 2
        # the one it cannot reach would send credentials: it is named
        assert "cannot scrub the spans of NoExporterProcessor" in caplog.text
        for processor, inner in ((batch, batch_out), (simple, simple_out)):
            assert isinstance(processor.span_exporter, ScrubbingSpanExporter)
            assert processor.span_exporter.inner is inner
            assert processor.span_exporter.known is known

        assert wrap_exporters(provider, known) == []  # no double wrapping
        assert batch.span_exporter.inner is batch_out
        assert simple.span_exporter.inner is simple_out

        with tracer.start_as_current_span("GET /hub/api/users?token=abc123"):
            pass
        assert provider.force_flush()
        assert [s.name for s in batch_out.get_finished_spans()] == [f"GET /hub/api/users?token={R}"]
        assert [s.name for s in simple_out.get_finished_spans()] == [f"GET /hub/api/users?token={R}"]

        for restore in undo:
            restore()
        assert batch.span_exporter is batch_out
        assert simple.span_exporter is simple_out

        with tracer.start_as_current_span("GET /hub/api/users?token=def456"):
            pass
        assert provider.force_flush()
        assert simple_out.get_finished_spans()[-1].name == "GET /hub/api/users?token=def456"
        assert batch_out.get_finished_spans()[-1].name == "GET /hub/api/users?token=def456"
    finally:
        provider.shutdown()


@pytest.mark.parametrize("provider", [object(), None, SimpleNamespace(_active_span_processor=None)])
def test_wrap_exporters_without_span_processors_does_nothing(provider: Any) -> None:
    """A provider without span processors (or not an SDK provider) gets nothing wrapped."""
    assert wrap_exporters(provider, KnownSecrets()) == []


def test_wrap_exporters_on_an_empty_provider_does_nothing() -> None:
    """An SDK provider with no span processor gets nothing wrapped."""
    provider = TracerProvider()
    try:
        assert wrap_exporters(provider, KnownSecrets()) == []
    finally:
        provider.shutdown()


# --- bounds: hostile input -------------------------------------------------------------------------------------------

KB = 1024


def test_known_secrets_keep_at_most_the_bound_per_trace_first_added_first() -> None:
    """Thousands of values for one trace keep only the first MAX_SECRETS_PER_TRACE, across adds too."""
    known = KnownSecrets()
    known.add(1, (f"secret-{i:05d}" for i in range(10_000)))
    kept = known.get(1)
    assert len(kept) == MAX_SECRETS_PER_TRACE
    assert set(kept) == {f"secret-{i:05d}" for i in range(MAX_SECRETS_PER_TRACE)}
    known.add(1, ["one-more-secret"])
    assert len(known.get(1)) == MAX_SECRETS_PER_TRACE and "one-more-secret" not in known.get(1)


def test_known_secrets_drop_values_longer_than_the_bound() -> None:
    """A value longer than MAX_SECRET_LENGTH is not kept (nor does it take a place), one at the bound is."""
    known = KnownSecrets()
    known.add(1, ["x" * (MAX_SECRET_LENGTH + 1), "y" * MAX_SECRET_LENGTH, "abcd"])
    assert known.get(1) == ("y" * MAX_SECRET_LENGTH, "abcd")


def test_request_secrets_are_bounded_and_keep_the_most_telling() -> None:
    """Thousands of secret-named query parameters fill the bound last: the Authorization, form and cookie values stay."""
    from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

    from jh_otel.tracing.server import request_secrets

    headers = HTTPHeaders({"Host": "127.0.0.1", "Authorization": "token header-secret", "Cookie": "s=cookie-secret"})
    request = HTTPServerRequest(start_line=RequestStartLine("POST", "/hub/login", "HTTP/1.1"), headers=headers)
    request.query_arguments = {f"token{i}": [f"query-secret-{i}".encode()] for i in range(5000)}
    request.query_arguments["%2574oken"] = [b"nested-secret"]
    request.body_arguments = {"password": [b"form-secret"], "_xsrf": [b"x" * (4 * MAX_SECRET_LENGTH + 1)]}
    found = request_secrets(request)
    assert len(found) == MAX_SECRETS_PER_TRACE
    assert found[:3] == ["header-secret", "form-secret", "cookie-secret"]
    assert found[3:] == [f"query-secret-{i}" for i in range(MAX_SECRETS_PER_TRACE - 3)]


def test_request_secrets_count_a_nested_encoded_name() -> None:
    """A query parameter named ``%2574oken`` (``token`` encoded twice) is a credential's."""
    from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

    from jh_otel.tracing.server import request_secrets

    request = HTTPServerRequest(
        start_line=RequestStartLine("GET", "/hub/health", "HTTP/1.1"), headers=HTTPHeaders({"Host": "h"})
    )
    request.query_arguments = {"%2574oken": [b"nested-secret"], "%74oken": [b"encoded-secret"], "x": [b"plain-value"]}
    assert request_secrets(request) == ["nested-secret", "encoded-secret"]


def test_scrub_value_truncates_and_marks_a_long_value() -> None:
    """A value past the bound is cut to it, scrubbed and marked; the credentials in the part kept are redacted."""
    query = "token=abc123&x=" + "a" * (32 * KB)
    clean = scrub_value("url.query", query)
    assert clean == f"token={R}&x=" + "a" * (MAX_SCANNED - len("token=abc123&x=")) + TRUNCATED
    message = "password=hunter2 " + "b" * (32 * KB)
    assert scrub_value("exception.message", message) == f"password={R} " + "b" * (MAX_SCANNED - 17) + TRUNCATED
    statement = "SELECT * FROM t WHERE a = '" + "c" * (32 * KB) + "'"
    assert scrub_value("db.statement", statement) == "SELECT * FROM t WHERE a = ?" + TRUNCATED


def test_scrub_value_stack_traces_have_a_larger_bound() -> None:
    """``exception.stacktrace`` is kept whole up to MAX_SCANNED_STACKTRACE characters, then cut and marked."""
    trace = "Traceback (most recent call last):\n" + '  File "x.py", line 1, in f\n' * 600
    assert MAX_SCANNED < len(trace) <= MAX_SCANNED_STACKTRACE
    assert scrub_value("exception.stacktrace", trace) is trace
    assert scrub_value("exception.message", trace).endswith(TRUNCATED)
    longer = trace * 3
    clean = scrub_value("exception.stacktrace", longer)
    assert clean == longer[:MAX_SCANNED_STACKTRACE] + TRUNCATED


def test_scrub_value_never_cuts_a_known_secret_in_half() -> None:
    """A known secret straddling the bound is left out whole, not half exported."""
    value = "a" * (MAX_SCANNED - 5) + " " + SECRET + " tail"
    clean = scrub_value("exception.message", value, (SECRET,))
    assert clean == "a" * (MAX_SCANNED - 5) + " " + TRUNCATED
    assert SECRET[:5] not in clean


def test_scrub_span_truncates_long_names_events_links_and_status(recorded: tuple[Tracer, InMemorySpanExporter]) -> None:
    """Every text of a span past the bound is cut and marked: its name, event names and attributes, status."""
    tracer, exporter = recorded
    long = "token=abc123 " + "d" * (32 * KB)
    with tracer.start_as_current_span("origin") as origin:
        pass
    with tracer.start_as_current_span(long, links=[Link(origin.get_span_context(), {"note": long})]) as span:
        span.add_event(long, {"exception.message": long})
        span.set_status(Status(StatusCode.ERROR, long))
    clean = scrub_span(exporter.get_finished_spans()[-1])
    expected = f"token={R} " + "d" * (MAX_SCANNED - 13) + TRUNCATED
    assert clean.name == expected
    assert (clean.events[0].name, clean.events[0].attributes["exception.message"]) == (expected, expected)
    assert clean.links[0].attributes["note"] == expected
    assert clean.status.description == expected


def test_scrub_span_with_a_32_kib_query_string_is_quick(recorded: tuple[Tracer, InMemorySpanExporter]) -> None:
    """A request span whose url.query is 32 KiB (of each hostile shape) is scrubbed in under 1 ms per KiB."""
    tracer, exporter = recorded
    queries = {
        "word run": "x=" + "a" * (32 * KB),
        "many parameters": "token=abc123&" + "a=b&" * (8 * KB),
        "many =@:/": "token=abc123&x=" + "=@:/" * (8 * KB),
        "nested encoding": "%2574oken=abc123&" + "%25" * (11 * KB),
    }
    known = KnownSecrets()
    for query in queries.values():
        attributes = {"url.path": "/hub/health", "url.query": query, "user_agent.original": query}
        with tracer.start_as_current_span("GET /hub/health", kind=SpanKind.SERVER, attributes=attributes) as span:
            # the bound's worth of known secrets, each compared with every text
            known.add(span.get_span_context().trace_id, [f"known-secret-{i}" for i in range(100)])
    for span in exporter.get_finished_spans():
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            clean = scrub_span(span, known)
            best = min(best, time.perf_counter() - start)
        assert clean.attributes["url.query"].endswith(TRUNCATED)
        assert len(clean.attributes["url.query"]) <= MAX_SCANNED + len(R) + len(TRUNCATED)  # "abc123" -> R
        assert "abc123" not in clean.attributes["url.query"]
        assert best * 1000 / 32 < 1.0, f"{best * 1000:.1f} ms"


def test_a_long_clean_value_is_not_clean_at_a_glance(recorded: tuple[Tracer, InMemorySpanExporter]) -> None:
    """A span whose only fault is a value past the bound is copied with it cut; short clean values stay the same."""
    tracer, exporter = recorded
    with tracer.start_as_current_span("GET /hub/health", attributes={"url.path": "/hub/" + "h" * (32 * KB), "ok": 1}):
        pass
    with tracer.start_as_current_span("GET /hub/health", attributes={"a": "h" * (MAX_SCANNED // 2), "b": "h" * 4000}):
        pass
    long, many = exporter.get_finished_spans()
    clean = scrub_span(long)
    assert clean is not long and clean.attributes["url.path"].endswith(TRUNCATED)
    assert clean.attributes["ok"] == 1
    assert scrub_span(many) is many  # long together, none past the bound alone
