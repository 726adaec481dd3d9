"""The instrumentor: lazy, reversible, and inert in processes that are not a hub."""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry

from jh_otel import JupyterHubInstrumentor, Settings


def test_instrument_wraps_the_hub_lifecycle_and_uninstrument_restores_it() -> None:
    """JupyterHub's lifecycle methods are wrapped on instrument and are the originals again after uninstrument."""
    from jupyterhub.app import JupyterHub

    originals = {name: vars(JupyterHub)[name] for name in ("init_tornado_application", "start", "cleanup")}
    reader = InMemoryMetricReader()
    instrumentor = JupyterHubInstrumentor()
    instrumentor.instrument(
        meter_provider=MeterProvider(metric_readers=[reader]), registry=CollectorRegistry(), settings=Settings()
    )
    try:
        for name, original in originals.items():
            assert vars(JupyterHub)[name] is not original
            assert vars(JupyterHub)[name].__wrapped__ is original
        # no hub has started: nothing is created, nothing is exported
        assert instrumentor.telemetry is None
        assert reader.get_metrics_data() is None or not reader.get_metrics_data().resource_metrics
    finally:
        instrumentor.uninstrument()
    assert {name: vars(JupyterHub)[name] for name in originals} == originals


def test_declares_the_jupyterhub_range_it_supports() -> None:
    """The instruments extra is what opentelemetry-instrument checks before loading jh_otel."""
    assert list(JupyterHubInstrumentor().instrumentation_dependencies()) == ["jupyterhub >= 5, < 7"]
