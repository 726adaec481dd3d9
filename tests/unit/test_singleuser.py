"""What single-user servers inherit: the wrapper stripped (off) or a correct OpenTelemetry environment (inherit)."""

from __future__ import annotations

import os
from types import SimpleNamespace

from jh_otel.hooks.singleuser import SingleUserEnvironment, auto_instrumentation_dir, inherited, without_wrapper

WRAPPER = auto_instrumentation_dir()


def test_off_removes_only_the_wrapper_directory() -> None:
    """The sitecustomize directory leaves PYTHONPATH; the operator's own entries stay, in order."""
    env = {"PYTHONPATH": os.pathsep.join([WRAPPER, "/opt/mine", "/opt/other"])}
    assert without_wrapper(env, WRAPPER) == {"PYTHONPATH": "/opt/mine" + os.pathsep + "/opt/other"}
    assert without_wrapper({"PYTHONPATH": WRAPPER}, WRAPPER) == {}
    assert without_wrapper({"PATH": "/bin"}, WRAPPER) == {"PATH": "/bin"}


def test_inherit_gives_the_hub_settings_under_another_service_name() -> None:
    """The server gets the hub's OTEL_* variables, its own service name and resource attributes, no exporter port."""
    hub = {
        "OTEL_SERVICE_NAME": "jupyterhub",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
        "OTEL_METRICS_EXPORTER": "prometheus,otlp",
        "OTEL_EXPORTER_PROMETHEUS_PORT": "9464",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
        "UNRELATED": "x",
    }
    env = inherited({"PYTHONPATH": WRAPPER}, hub, "a lice", "gpu,1")
    assert env == {
        "PYTHONPATH": WRAPPER,
        "OTEL_SERVICE_NAME": "jupyterhub-singleuser",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test,"
        "jupyterhub.user.name=a%20lice,jupyterhub.server.name=gpu%2C1",
    }


def test_inherit_keeps_a_service_name_the_operator_gave_the_spawner() -> None:
    """An OTEL_SERVICE_NAME from Spawner.environment wins over the default."""
    env = inherited({"OTEL_SERVICE_NAME": "notebooks"}, {"OTEL_SERVICE_NAME": "jupyterhub"}, "u", "")
    assert env["OTEL_SERVICE_NAME"] == "notebooks"


def test_the_wrapper_applies_the_mode_to_get_env() -> None:
    """Spawner.get_env's result is filtered, and a failure inside leaves it untouched."""
    spawner = SimpleNamespace(user=SimpleNamespace(name="u"), name="")
    env = SingleUserEnvironment("off").wrapper(lambda: {"PYTHONPATH": WRAPPER}, spawner, (), {})
    assert env == {}
    broken = SingleUserEnvironment("inherit").wrapper(lambda: {"A": "1"}, object(), (), {})
    assert broken == {"A": "1"}
