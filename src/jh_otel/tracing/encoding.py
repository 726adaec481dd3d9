"""OTLP span encoding, written straight to protobuf bytes: the OTLP exporters' ``encode_spans``, about 6x faster.

The exporters build one protobuf object per span, attribute and value (about 95 us per hub request span on a
2-core VM), on the span processor's thread, holding the GIL the hub's event loop needs: at full sampling that is the
largest single cost tracing adds to a cheap request. This encoder writes the same ``ExportTraceServiceRequest``
(``opentelemetry/proto/trace/v1/trace.proto``, field for field what ``encode_spans`` sets; a test compares the two
message by message) and caches the encoded bytes of repeated attributes (``http.request.method=GET``...), of
resources and of scopes.

:func:`install` puts it in place of ``encode_spans`` in the OTLP/HTTP and OTLP/gRPC trace exporter modules
(reversibly); a batch it cannot encode falls back to the original, so nothing is lost.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from ..compat import Expect, unmet

log = logging.getLogger("jh_otel")
_DISTRIBUTIONS = ("opentelemetry-exporter-otlp-proto-common", "opentelemetry-exporter-otlp-proto-http")

_CACHE_BYTES = 1 << 20
"""About how much memory the attribute cache may hold (each entry's encoded bytes and the value they came from)
before it starts over: bounded whatever the values' sizes (a URL can be 64 KiB long), and so in count too (at most
about 6,000 entries of at least 166 bytes)."""
_ENTRY_OVERHEAD = 160  # the key tuple, the dict slot and two object headers, about
_ENTRY_BYTES = 8192
"""The largest entry cached (a value of about 4 KB: a SQL statement fits): a long URL is encoded each time, and never
pushes the hub's repeated short values out."""
_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack
_pack_fixed32 = struct.Struct("<I").pack
HAS_IS_REMOTE, IS_REMOTE = 0x100, 0x200


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field; ``tag`` is the field's key byte (field number << 3 | 2)."""
    return bytes((tag,)) + _varint(len(payload)) + payload


def _value(value: Any) -> bytes:
    """An ``AnyValue`` message body."""
    if value is None:
        return b""
    kind = type(value)
    if kind is str:
        return _field(0x0A, value.encode("utf-8"))
    if kind is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if kind is int:
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
    if kind is float:
        return b"\x21" + _pack_double(value)
    if kind is bytes:
        return _field(0x3A, value)
    if isinstance(value, str):  # subclasses (enums): their text, as the exporter's isinstance checks give it
        return _value(str.__str__(value))
    for base in (bool, int, float):
        if isinstance(value, base):
            return _value(base(value))
    if isinstance(value, Mapping):
        return _field(0x32, b"".join(_field(0x0A, _key_value(str(k), v)) for k, v in value.items()))
    if isinstance(value, Sequence):
        return _field(0x2A, b"".join(_field(0x0A, _value(item)) for item in value))
    raise TypeError(f"cannot encode {kind.__name__}")


def _key_value(key: str, value: Any) -> bytes:
    return _field(0x0A, key.encode("utf-8")) + _field(0x12, _value(value))


class SpanEncoder:
    """Encodes batches of SDK ``ReadableSpan`` into ``ExportTraceServiceRequest`` bytes."""

    def __init__(self) -> None:
        self._attributes: dict[tuple[int, str, Any], bytes] = {}
        self._cached_bytes = 0
        # by identity (a provider has one resource, a tracer one scope): Resource.__hash__ serializes its attributes
        # to JSON on every call, which cost more than encoding the span; each entry keeps its key object alive, so
        # an id is never reused while cached
        self._resources: dict[int, tuple[Any, bytes]] = {}
        self._scopes: dict[int, tuple[Any, bytes]] = {}

    def attributes(self, tag: int, attributes: Mapping[str, Any] | None) -> list[bytes]:
        """Each attribute as a ``KeyValue`` field with key byte ``tag``."""
        if not attributes:
            return []
        cache = self._attributes
        raw = getattr(attributes, "_dict", attributes)
        out = []
        for key, value in raw.items():
            kind = type(value)
            if kind is str or kind is int:  # not bools: True == 1 would share an entry with 1
                cached = cache.get((tag, key, value))
                if cached is None:
                    cached = _field(tag, _key_value(key, value))
                    size = 2 * len(cached) + _ENTRY_OVERHEAD  # the bytes, and about as much for the value
                    if size <= _ENTRY_BYTES:
                        if self._cached_bytes + size > _CACHE_BYTES:
                            cache.clear()
                            self._cached_bytes = 0
                        cache[(tag, key, value)] = cached
                        self._cached_bytes += size
                out.append(cached)
            else:
                out.append(_field(tag, _key_value(key, value)))
        return out

    def _resource(self, resource: Any) -> bytes:
        entry = self._resources.get(id(resource))
        if entry is not None and entry[0] is resource:
            return entry[1]
        cached = b"".join(self.attributes(0x0A, resource.attributes))
        if len(self._resources) < 64:
            self._resources[id(resource)] = (resource, cached)
        return cached

    def _scope(self, scope: Any) -> bytes:
        entry = self._scopes.get(id(scope))
        if entry is not None and entry[0] is scope:
            return entry[1]
        if scope is None:
            cached = b""
        else:
            parts = [_field(0x0A, scope.name.encode()) if scope.name else b""]
            if scope.version:
                parts.append(_field(0x12, scope.version.encode()))
            parts.extend(self.attributes(0x1A, scope.attributes))
            cached = b"".join(parts)
        if len(self._scopes) < 256:
            self._scopes[id(scope)] = (scope, cached)
        return cached

    def span(self, span: Any) -> bytes:
        context = span.context
        parts = [
            b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
            b"\x12\x08" + context.span_id.to_bytes(8, "big"),
        ]
        state = context.trace_state
        if state:
            parts.append(_field(0x1A, ",".join(f"{k}={v}" for k, v in state.items()).encode()))
        parent = span.parent
        if parent is not None:
            parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
        parts.append(_field(0x2A, span.name.encode("utf-8")))
        parts.append(b"\x30" + bytes((span.kind.value + 1,)))
        parts.append(b"\x39" + _pack_fixed64(span.start_time or 0))
        parts.append(b"\x41" + _pack_fixed64(span.end_time or 0))
        parts.extend(self.attributes(0x4A, span._attributes))
        if span.dropped_attributes:
            parts.append(b"\x50" + _varint(span.dropped_attributes))
        for event in span._events or ():
            body = [b"\x09" + _pack_fixed64(event.timestamp), _field(0x12, event.name.encode("utf-8"))]
            body.extend(self.attributes(0x1A, event.attributes))
            if event.dropped_attributes:
                body.append(b"\x20" + _varint(event.dropped_attributes))
            parts.append(_field(0x5A, b"".join(body)))
        if span.dropped_events:
            parts.append(b"\x60" + _varint(span.dropped_events))
        for link in span._links or ():
            linked = link.context
            body = [b"\x0a\x10" + linked.trace_id.to_bytes(16, "big"), b"\x12\x08" + linked.span_id.to_bytes(8, "big")]
            body.extend(self.attributes(0x22, link.attributes))
            if link.dropped_attributes:
                body.append(b"\x28" + _varint(link.dropped_attributes))
            body.append(b"\x35" + _pack_fixed32(HAS_IS_REMOTE | (IS_REMOTE if linked.is_remote else 0)))
            parts.append(_field(0x6A, b"".join(body)))
        if span.dropped_links:
            parts.append(b"\x70" + _varint(span.dropped_links))
        status = span.status
        body_parts = []
        if status.description:
            body_parts.append(_field(0x12, status.description.encode("utf-8")))
        if status.status_code.value:
            body_parts.append(b"\x18" + _varint(status.status_code.value))
        parts.append(_field(0x7A, b"".join(body_parts)))
        flags = HAS_IS_REMOTE | (IS_REMOTE if parent is not None and parent.is_remote else 0)
        parts.append(b"\x85\x01" + _pack_fixed32(flags))
        return b"".join(parts)

    def encode(self, spans: Sequence[Any]) -> bytes:
        # grouped by identity: see __init__ (equal resources that are distinct objects make two groups, as valid)
        groups: dict[int, tuple[Any, dict[int, tuple[Any, list[bytes]]]]] = {}
        for span in spans:
            resource = span.resource
            group = groups.get(id(resource))
            if group is None:
                group = groups[id(resource)] = (resource, {})
            scope = span.instrumentation_scope or None
            scoped = group[1].get(id(scope))
            if scoped is None:
                scoped = group[1][id(scope)] = (scope, [])
            scoped[1].append(_field(0x12, self.span(span)))
        out = []
        for resource, by_scope in groups.values():
            body = [_field(0x0A, self._resource(resource))]
            for scope, encoded in by_scope.values():
                scope_body = [_field(0x0A, self._scope(scope)), *encoded]
                if scope is not None and scope.schema_url:
                    scope_body.append(_field(0x1A, scope.schema_url.encode()))
                body.append(_field(0x12, b"".join(scope_body)))
            if resource.schema_url:
                body.append(_field(0x1A, resource.schema_url.encode()))
            out.append(_field(0x0A, b"".join(body)))
        return b"".join(out)


class PreEncoded:
    """A span batch already encoded (the ``resource_spans`` of an ``ExportTraceServiceRequest``), handed to an OTLP
    trace exporter in place of its spans: the exporter counts it with ``len()`` and its ``encode_spans`` (jh_otel's,
    see :func:`install`) takes the bytes as they are (:mod:`jh_otel.tracing.outbox`)."""

    __slots__ = ("body", "count")

    def __init__(self, body: bytes, count: int) -> None:
        self.body = body
        self.count = count

    def __len__(self) -> int:
        return self.count


class _Serialized:
    """Stands in for the request message where the HTTP exporter only asks for its bytes."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializePartialToString(self) -> bytes:  # noqa: N802 - the protobuf method name
        return self.data

    SerializeToString = SerializePartialToString


def install() -> list[Callable[[], None]]:
    """``encode_spans`` of the OTLP trace exporter modules in use, replaced; returns the undo.

    Only modules already imported (the SDK's configurator imports the exporter it configures) are replaced: importing
    the gRPC exporter here would load ``grpcio`` (about 9 MiB) into a hub whose exporters all speak HTTP."""
    import sys

    encoder = SpanEncoder()
    undo: list[Callable[[], None]] = []
    targets = (
        ("opentelemetry.exporter.otlp.proto.http.trace_exporter", lambda: _Serialized),
        ("opentelemetry.exporter.otlp.proto.grpc.trace_exporter", _grpc_request),
    )
    for name, wrapper in targets:
        module = sys.modules.get(name)
        if module is None:
            continue
        original = getattr(module, "encode_spans", None)
        if getattr(original, "_jh_otel", False):
            continue
        if unmet("fast span encoding for " + name, [Expect(name, "encode_spans", ("sdk_spans",))], _DISTRIBUTIONS):
            continue  # the exporter's own encoder stays
        wrap = wrapper()

        def fast(spans: Sequence[Any], original: Any = original, wrap: Any = wrap) -> Any:
            if type(spans) is PreEncoded:
                return wrap(spans.body)
            try:
                return wrap(encoder.encode(spans))
            except Exception:
                log.debug("jh_otel: a span batch needed the exporter's own encoder", exc_info=True)
                return original(spans)

        fast._jh_otel = True  # type: ignore[attr-defined]
        module.encode_spans = fast  # type: ignore[attr-defined]
        undo.append(partial(setattr, module, "encode_spans", original))
    return undo


def _grpc_request() -> Callable[[bytes], Any]:
    """The gRPC exporter needs the request message itself (its stub serializes it)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    return ExportTraceServiceRequest.FromString
