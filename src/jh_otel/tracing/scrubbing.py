"""Every span leaves the process through :class:`ScrubbingSpanExporter`: one place, whichever instrumentation made it.

The exporter wrapper runs on the span processor's worker thread, never on the hub's event loop. It redacts, in
span names, attributes, events (exception messages and stack traces included), links and status descriptions:

- URLs and paths (``url.full``, ``url.query``, ``http.target``...): credential-named parameters and token paths;
- SQL (``db.statement``, ``db.query.text``): every literal value;
- captured headers: ``Authorization``, ``Cookie``, ``Set-Cookie`` and credential-named headers;
- any other text: ``name=value`` credentials, ``Bearer``/``token`` credentials, URL user info, and the values
  :class:`KnownSecrets` recorded for the span's trace (a request's password, token and cookies, so an exception
  message that echoes them is caught even without a telltale name).

Every rule runs in time linear in its input (:mod:`jh_otel.scrub`), and no text is scanned past a bound: a string
longer than :data:`~jh_otel.scrub.MAX_SCANNED` characters (:data:`~jh_otel.scrub.MAX_SCANNED_STACKTRACE` for
``exception.stacktrace``), whether an attribute, an event's or a link's attribute, a span or event name or a status
description, is cut (:func:`~jh_otel.scrub.truncate`: never in the middle of a known secret), scrubbed, and marked
``[truncated]``. So one request with a 32 KiB query string costs the exporter thread a fraction of a millisecond,
not seconds of the GIL while the hub's event loop waits.
"""

from __future__ import annotations

import copy
import inspect
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link, Status

from .. import scrub

log = logging.getLogger("jh_otel")
_URL_KEYS = frozenset({"url.full", "url.path", "url.query", "http.url", "http.target", "url.original"})
_SQL_KEYS = frozenset({"db.statement", "db.query.text"})
_HEADER_PREFIXES = ("http.request.header.", "http.response.header.")
# with the characters = and @ (and ? # for URLs): what may hold a credential that a pattern finds
_GLANCE_WORDS = ("token", "bearer", "basic", "/api/authorizations")
MIN_SECRET_LENGTH = 4
MAX_SECRET_LENGTH = 4096  # a browser keeps no cookie longer than 4 KiB; JupyterHub's tokens are 32-64 characters
MAX_SECRETS_PER_TRACE = 32  # a hub request carries a handful (token, password, _xsrf, session and login cookies)


class KnownSecrets:
    """Secret values seen in a trace's requests, kept briefly (until the trace's spans have been exported).

    Bounded: at most ``capacity`` traces, each for at most ``ttl`` seconds; the oldest go first. Per trace at most
    :data:`MAX_SECRETS_PER_TRACE` distinct strings of :data:`MIN_SECRET_LENGTH` to :data:`MAX_SECRET_LENGTH`
    characters, the first ones added winning (:func:`~jh_otel.tracing.server.request_secrets` lists a request's
    credentials most telling first), so that each text is compared with a bounded number of bounded strings
    however many secret-named parameters a request sends: scrubbing stays linear, not secrets x text length. A
    value past these bounds is not looked for as such; in the URL attributes, headers and ``name=value`` text the
    name-based rules still remove it.

    A user's requests carry the same cookies (a server's, the same token) over and over, each request with its own
    copies of the strings: each distinct set of secrets is kept once, shared by the traces that carry it, and
    dropped with the last of them. At a busy hub's rates (100 requests a second, most with 3 cookies) that is about
    250 bytes a trace rather than 610, some 4 MiB less at the TTL's 11,000 traces; a trace whose secrets no other
    trace shares costs about 140 bytes more than before (``benchmarks/known_secrets.py`` measures both).
    """

    def __init__(self, capacity: int = 20_000, ttl: float = 120.0) -> None:
        self._capacity = capacity
        self._ttl = ttl
        self.refresh_after = ttl / 4
        """A request that lasted longer than this hands its secrets in again at its end (an event stream can outlast
        the TTL counted from its start): kept until ``ttl`` after its end."""
        self._lock = threading.Lock()
        self._by_trace: OrderedDict[int, tuple[float, tuple[str, ...]]] = OrderedDict()
        self._shared: dict[tuple[str, ...], list[Any]] = {}  # each set of secrets: [the one kept, traces holding it]

    def add(self, trace_id: int, values: Iterable[str]) -> None:
        if not trace_id:
            return
        fresh = _bounded_secrets(values, ())
        if not fresh:
            return
        with self._lock:
            previous = self._by_trace.get(trace_id)
            if previous is not None:
                fresh = _bounded_secrets(fresh, previous[1])
            now = time.monotonic()
            key = tuple(sorted(fresh, key=len, reverse=True))  # longest first
            held = self._shared.get(key)
            if held is None:
                held = self._shared[key] = [key, 0]
            held[1] += 1
            # replaced in place, never missing: the exporter thread's get() (no lock) finds the old or the new
            self._by_trace[trace_id] = (now, held[0])
            if previous is not None:
                self._by_trace.move_to_end(trace_id)
                self._release(previous[1])
            while len(self._by_trace) > self._capacity:
                self._release(self._by_trace.popitem(last=False)[1][1])
            while self._by_trace:  # the oldest first: stop at the first one still fresh
                oldest, (added, secrets) = next(iter(self._by_trace.items()))
                if now - added <= self._ttl:
                    break
                del self._by_trace[oldest]
                self._release(secrets)

    def _release(self, secrets: tuple[str, ...]) -> None:
        """One trace fewer holds ``secrets``; the last one drops them. Under the lock."""
        held = self._shared.get(secrets)
        if held is not None:
            held[1] -= 1
            if held[1] <= 0:
                del self._shared[secrets]

    def get(self, trace_id: int) -> tuple[str, ...]:
        entry = self._by_trace.get(trace_id)  # a dict read: atomic under the GIL
        if entry is None or time.monotonic() - entry[0] > self._ttl:
            return ()
        return entry[1]

    def __len__(self) -> int:
        return len(self._by_trace)


def _bounded_secrets(values: Iterable[Any], kept: Sequence[str]) -> list[str]:
    """``kept`` and then the first distinct strings of ``values`` of a length worth keeping, at most
    :data:`MAX_SECRETS_PER_TRACE` in all: stops reading ``values`` there."""
    out = dict.fromkeys(kept)
    for value in values:
        if len(out) >= MAX_SECRETS_PER_TRACE:
            break
        if isinstance(value, str) and MIN_SECRET_LENGTH <= len(value) <= MAX_SECRET_LENGTH:
            out[value] = None
    return list(out)


def _limit(key: str) -> int:
    return scrub.MAX_SCANNED_STACKTRACE if key == "exception.stacktrace" else scrub.MAX_SCANNED


def _bounded_text(value: str, secrets: Sequence[str]) -> str:
    """A name or a status description: :func:`_text`, of its first :data:`~jh_otel.scrub.MAX_SCANNED` characters."""
    if len(value) <= scrub.MAX_SCANNED:
        return _text(value, secrets)
    return _text(scrub.truncate(value, scrub.MAX_SCANNED, secrets), secrets) + scrub.TRUNCATED


def _text(value: str, secrets: Sequence[str], patterns: bool = True) -> str:
    for secret in secrets:
        if secret in value:
            value = value.replace(secret, scrub.REDACTED)
    if patterns and _suspect(value):
        value = scrub.scrub_text(value)
        if "/api/authorizations" in value or "?" in value:
            value = " ".join(_url_word(word) for word in value.split(" "))
    return value


@lru_cache(maxsize=1024)
def _scrub_sql(statement: str) -> str:
    """Statements repeat: each is scrubbed once (most are already literal-free: jh_otel's SQL spans scrub them)."""
    return scrub.scrub_sql(statement)


def _suspect(text: str) -> bool:
    """Whether ``text`` may hold a credential a pattern finds: str searches, far faster than one case-insensitive
    regular expression alternation."""
    if "=" in text or "@" in text:
        return True
    lowered = text.lower()
    return any(marker in lowered for marker in _GLANCE_WORDS)


def _url_word(word: str) -> str:
    return scrub.scrub_url(word) if "/" in word and ("?" in word or "/api/authorizations" in word) else word


def _maybe_secret(text: str) -> bool:
    """Whether any rule may change ``text``: what :func:`_suspect` looks for, and a URL's query or fragment."""
    return "?" in text or "#" in text or _suspect(text)


def scrub_value(key: str, value: Any, secrets: Sequence[str] = ()) -> Any:
    """One attribute value, scrubbed according to what its key says it is (the same object when clean).

    A string longer than the key's bound is cut (:func:`~jh_otel.scrub.truncate`), scrubbed, and marked
    ``[truncated]``.
    """
    if type(value) is not str:
        if isinstance(value, (tuple, list)):
            items = [scrub_value(key, item, secrets) for item in value]
            return value if all(a is b for a, b in zip(items, value)) else type(value)(items)
        return value
    limit = _limit(key)
    if len(value) > limit:
        return _scrub_string(key, scrub.truncate(value, limit, secrets), secrets) + scrub.TRUNCATED
    clean = _scrub_string(key, value, secrets)
    return value if clean == value else clean


def _scrub_string(key: str, value: str, secrets: Sequence[str]) -> str:
    clean = value
    if key.startswith(_HEADER_PREFIXES):
        header = key.split(".", 3)[-1]
        clean = scrub.scrub_headers({header.replace("_", "-"): value}).popitem()[1]
    elif key in _SQL_KEYS:  # no literal left to find: ``token=?`` is a placeholder
        return _text(_scrub_sql(value), secrets, patterns=False)
    elif key in _URL_KEYS and _maybe_secret(value):
        clean = scrub.scrub_url("?" + value)[1:] if key == "url.query" else scrub.scrub_url(value)
    return _text(clean, secrets)


def scrub_attributes(attributes: Mapping[str, Any] | None, secrets: Sequence[str] = ()) -> Mapping[str, Any] | None:
    """The same mapping when nothing needed redacting, else a scrubbed copy (keeping its dropped count)."""
    if not attributes:
        return attributes
    out: dict[str, Any] | None = None
    for key, value in attributes.items():
        clean = scrub_value(key, value, secrets)
        if clean is not value:
            if out is None:
                out = dict(attributes)
            out[key] = clean
    if out is None:
        return attributes
    if isinstance(attributes, BoundedAttributes):  # a copy with its limits and dropped count, not validated again
        bounded = copy.copy(attributes)
        bounded._dict = OrderedDict(out)
        return bounded
    return out


def _scrub_list(items: Any, clean: Callable[[Any], Any]) -> Any:
    """A span's events or links, the same object when none changed (a copy keeps the dropped count)."""
    if not items:
        return items
    new = [clean(item) for item in items]
    if all(a is b for a, b in zip(new, items)):
        return items
    out: BoundedList = BoundedList(None)
    out.extend(new)
    out.dropped = getattr(items, "dropped", 0)
    return out


def _clean_at_a_glance(span: ReadableSpan, attributes: Mapping[str, Any] | None, secrets: Sequence[str]) -> bool:
    """A few string searches over all of a plain span's text: nothing any rule below would change (the common
    case, request and SQL spans alike, so that the rules' per-attribute work is for the spans that need it), and
    no text past the bound (only when all of them together are that long does it look at each)."""
    if span._events or span._links or span.status.description:
        return False
    texts = [span.name]
    statements = []
    raw = getattr(attributes, "_dict", attributes) or {}  # BoundedAttributes' own dict: no lock per item
    for key, value in raw.items():
        if key.startswith(_HEADER_PREFIXES):
            return False
        if type(value) is str:
            if key in _SQL_KEYS:  # placeholders such as ``token=?`` are no credential: literals are
                if len(value) > scrub.MAX_SCANNED or _scrub_sql(value) != value:
                    return False
                statements.append(value)
            else:
                texts.append(value)
        elif isinstance(value, (tuple, list)):
            texts.extend(str(item) for item in value)
    text = "\n".join(texts)
    if len(text) > scrub.MAX_SCANNED and any(len(t) > scrub.MAX_SCANNED for t in texts):
        return False
    if secrets:
        everything = "\n".join((text, *statements))
        if any(secret in everything for secret in secrets):
            return False
    return not _maybe_secret(text)


def scrub_span(span: ReadableSpan, known: KnownSecrets | None = None) -> ReadableSpan:
    """``span`` itself when it carries no credential, else a scrubbed copy."""
    context = span.get_span_context()
    secrets = known.get(context.trace_id) if known is not None and context is not None else ()
    if _clean_at_a_glance(span, span._attributes, secrets):
        return span
    name = _bounded_text(span.name, secrets)
    attributes = scrub_attributes(span._attributes, secrets)

    def clean_event(event: Any) -> Any:
        event_name = _bounded_text(event.name, secrets)
        event_attributes = scrub_attributes(event.attributes, secrets)
        if event_name == event.name and event_attributes is event.attributes:
            return event
        return Event(event_name, event_attributes, event.timestamp)

    def clean_link(link: Any) -> Any:
        link_attributes = scrub_attributes(link.attributes, secrets)
        return link if link_attributes is link.attributes else Link(link.context, link_attributes)

    events = _scrub_list(span._events, clean_event)
    links = _scrub_list(span._links, clean_link)
    status = span.status
    if status.description:
        description = _bounded_text(status.description, secrets)
        if description != status.description:
            status = Status(status.status_code, description)
    if name == span.name and attributes is span._attributes and events is span._events and links is span._links:
        if status is span.status:
            return span
    clean = copy.copy(span)
    clean._name, clean._attributes, clean._events, clean._links, clean._status = name, attributes, events, links, status
    return clean


class ScrubbingSpanExporter(SpanExporter):
    """Wraps a span exporter; spans are scrubbed on the way out, on the exporting thread."""

    def __init__(self, inner: SpanExporter, known: KnownSecrets | None = None) -> None:
        self.inner = inner
        self.known = known

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        clean = []
        for span in spans:
            try:
                clean.append(scrub_span(span, self.known))
            except Exception:  # a span that cannot be scrubbed is not sent
                log.debug("jh_otel: dropped a span that could not be scrubbed", exc_info=True)
        return self.inner.export(clean)

    def shutdown(self, timeout_millis: int = 30000) -> None:
        # the batch processor passes what is left of its shutdown budget to an exporter that takes one
        if "timeout_millis" in inspect.signature(self.inner.shutdown).parameters:
            self.inner.shutdown(timeout_millis=timeout_millis)  # type: ignore[call-arg]
        else:
            self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def wrap_exporters(tracer_provider: Any, known: KnownSecrets) -> list[Any]:
    """Put :class:`ScrubbingSpanExporter` in front of every exporter of ``tracer_provider``'s span processors.

    Returns undo callables. A processor whose exporter jh_otel cannot reach is named in a warning: its spans leave
    unscrubbed.
    """
    undo: list[Any] = []
    for processor, holder, attribute in _exporter_slots(tracer_provider):
        if holder is None:
            log.warning(
                "jh_otel: cannot scrub the spans of %s (no exporter jh_otel can wrap): credentials may leave in them",
                type(processor).__qualname__,
            )
            continue
        inner = getattr(holder, attribute)
        if isinstance(inner, ScrubbingSpanExporter):
            continue
        setattr(holder, attribute, ScrubbingSpanExporter(inner, known))
        undo.append(lambda holder=holder, attribute=attribute, inner=inner: setattr(holder, attribute, inner))
    return undo


def scrubbers(tracer_provider: Any) -> list[ScrubbingSpanExporter]:
    """The :class:`ScrubbingSpanExporter` of each of ``tracer_provider``'s span processors."""
    exporters = (getattr(holder, attribute) for _, holder, attribute in _exporter_slots(tracer_provider) if holder)
    return [exporter for exporter in exporters if isinstance(exporter, ScrubbingSpanExporter)]


def _exporter_slots(tracer_provider: Any) -> Iterator[tuple[Any, Any, str]]:
    """(processor, the object holding its exporter, that attribute's name) for each of ``tracer_provider``'s span
    processors; (processor, None, "") where jh_otel cannot reach the exporter."""
    multi = getattr(tracer_provider, "_active_span_processor", None)
    for processor in getattr(multi, "_span_processors", ()):
        yield (processor, *_exporter_slot(processor))


def _exporter_slot(processor: Any) -> tuple[Any, str]:
    batch = getattr(processor, "_batch_processor", None)
    if batch is not None and hasattr(batch, "_exporter"):
        return batch, "_exporter"
    if hasattr(processor, "span_exporter") and not isinstance(type(processor).__dict__.get("span_exporter"), property):
        return processor, "span_exporter"
    return None, ""
