"""Operation-span helpers that the end-to-end test cannot exercise on demand."""

from __future__ import annotations

import asyncio

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from jh_otel.tracing.operations import _outside_any_trace


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
