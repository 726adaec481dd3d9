"""Operation-span helpers that the end-to-end test cannot exercise on demand."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from jh_otel.tracing.operations import Operations, _outside_any_trace


def test_work_scheduled_while_polling_starts_runs_outside_the_spawns_trace() -> None:
    """``Spawner.start_polling`` runs inside the spawn's span; what it schedules (tornado's PeriodicCallback copies
    the context of the moment) must not join that trace, or every poll of a server's life would."""
    tracer = TracerProvider().get_tracer("test")
    seen: dict[str, bool] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def start_polling(label: str) -> None:
            loop.call_soon(lambda: seen.__setitem__(label, trace.get_current_span().get_span_context().is_valid))

        with tracer.start_as_current_span("jupyterhub.spawn"):
            start_polling("plain")
            _outside_any_trace(start_polling, None, ("wrapped",), {})
            assert trace.get_current_span().get_span_context().is_valid  # the spawn's own context is untouched
        await asyncio.sleep(0)

    asyncio.run(main())
    assert seen == {"plain": True, "wrapped": False}


class _Base:
    """A spawner-like class (jh_otel wraps any class's start/stop/poll)."""

    name = ""

    async def start(self) -> tuple[str, int]:
        return ("127.0.0.1", 1)

    async def stop(self) -> None:
        return None

    async def poll(self) -> int | None:
        return None


class _Sub(_Base):
    async def start(self) -> tuple[str, int]:
        return await super().start()


def _operations() -> tuple[Any, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Operations(provider.get_tracer("test")), exporter


def test_spawner_methods_are_wrapped_per_class_and_keep_no_spawner_alive() -> None:
    """Tracing a spawner class wraps its methods on the class: a spawner is collected once dropped, its spans are
    made, and uninstalling restores the class as it was."""
    originals = {name: _Base.__dict__[name] for name in ("start", "stop", "poll")}
    operations, exporter = _operations()
    operations.trace_spawner_class(_Base)
    spawner = _Base()
    assert asyncio.run(spawner.start()) == ("127.0.0.1", 1)
    asyncio.run(spawner.poll())
    alive = weakref.ref(spawner)
    del spawner
    gc.collect()
    assert alive() is None
    assert [s.name for s in exporter.get_finished_spans()] == ["jupyterhub.spawner.start", "jupyterhub.spawner.poll"]
    operations.uninstall()
    assert {name: _Base.__dict__[name] for name in originals} == originals


def test_a_subclass_calling_super_makes_one_span_and_inherited_methods_are_not_wrapped_twice() -> None:
    """A subclass whose ``start`` calls ``super().start()`` (both classes traced) makes one start span; its inherited
    ``stop`` is the base's wrapper, not a second layer; an untraced subclass's own attribute is removed on uninstall."""
    operations, exporter = _operations()
    operations.trace_spawner_class(_Base)
    operations.trace_spawner_class(_Sub)
    assert "stop" not in _Sub.__dict__
    asyncio.run(_Sub().start())
    asyncio.run(_Sub().stop())
    assert [s.name for s in exporter.get_finished_spans()] == ["jupyterhub.spawner.start", "jupyterhub.spawner.stop"]
    operations.uninstall()
    assert _Sub.__dict__["start"].__name__ == "start" and not hasattr(_Sub.__dict__["start"], "__wrapped__")


def test_no_operation_span_is_made_while_instrumentation_is_suppressed() -> None:
    """jh_otel's own checks run with instrumentation suppressed: a wrapped spawner method then makes no span."""
    operations, exporter = _operations()
    operations.trace_spawner_class(_Base)
    try:
        with suppress_instrumentation():
            asyncio.run(_Base().poll())
        assert exporter.get_finished_spans() == ()
    finally:
        operations.uninstall()
