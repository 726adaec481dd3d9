"""Which contrib instrumentations ProcessTracing leaves on: traces off means none, whoever instrumented first."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from jh_otel.settings import Settings
from jh_otel.tracing import ProcessTracing


class FakeInstrumentor:
    instrumented = False

    @property
    def is_instrumented_by_opentelemetry(self) -> bool:
        return FakeInstrumentor.instrumented

    def instrument(self, **kwargs: Any) -> None:
        FakeInstrumentor.instrumented = True

    def uninstrument(self) -> None:
        FakeInstrumentor.instrumented = False


@pytest.fixture
def fake_module(monkeypatch: pytest.MonkeyPatch) -> str:
    module = types.ModuleType("jh_otel_test_fake_instrumentation")
    module.FakeInstrumentor = FakeInstrumentor  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    FakeInstrumentor.instrumented = False
    return module.__name__


@pytest.mark.parametrize(
    ("settings", "already", "allowed", "expected"),
    [
        (Settings(traces_exporters=("otlp",)), True, True, True),
        (Settings(traces_exporters=("otlp",)), False, True, True),
        (Settings(traces="off", traces_exporters=("otlp",)), True, True, False),
        (Settings(traces="off", traces_exporters=("otlp",)), False, True, False),
        (Settings(traces_exporters=("none",)), True, True, False),
        (Settings(traces_exporters=("otlp",)), True, False, False),
    ],
    ids=["on-after-wrapper", "on", "off-after-wrapper", "off", "no-exporter-after-wrapper", "not-allowed"],
)
def test_an_instrumentation_is_on_only_with_traces_on_and_allowed(
    fake_module: str, settings: Settings, already: bool, allowed: bool, expected: bool
) -> None:
    """With traces off (or no traces exporter) an instrumentation the wrapper switched on is switched off, not on
    again; with traces on it ends instrumented, unless jh_otel could not correct it."""
    FakeInstrumentor.instrumented = already
    tracing = ProcessTracing(settings, TracerProvider())
    tracing._instrument("fake", fake_module, "FakeInstrumentor", allowed)
    assert FakeInstrumentor.instrumented is expected
    tracing.uninstall()
    assert FakeInstrumentor.instrumented is False


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, True),
        ({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "requests, sqlalchemy"}, False),
        ({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "*"}, True),
        (
            {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "requests,sqlalchemy", "JH_OTEL_ADDED_DISABLED": "sqlalchemy"},
            True,
        ),
    ],
    ids=["none-disabled", "operator-disabled", "wildcard", "added-by-jh-otel"],
)
def test_sql_spans_follow_only_the_operators_disabled_instrumentations(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], expected: bool
) -> None:
    """A hub's SQLite engine gets SQL spans unless the operator's ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` names
    ``sqlalchemy``; the entry jh_otel adds itself under the wrapper does not switch them off, nor does ``*`` (which
    only the wrapper reads: it does not load jh_otel at all)."""
    import sqlalchemy
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from jh_otel.tracing import HubTracing

    for name in ("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "JH_OTEL_ADDED_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    engine = sqlalchemy.create_engine("sqlite://")
    app = types.SimpleNamespace(db=types.SimpleNamespace(get_bind=lambda: engine))
    hub = HubTracing(ProcessTracing(Settings(traces_exporters=("otlp",)), provider))
    with monkeypatch.context() as patch:
        patch.setattr("jh_otel.tracing.Operations.install", lambda self, app, started: None)
        hub.attach(app)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    finally:
        hub.detach()
        engine.dispose()
        provider.shutdown()
    assert [span.name for span in exporter.get_finished_spans()] == (["SELECT"] if expected else [])
