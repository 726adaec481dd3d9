"""What single-user servers inherit: the wrapper stripped (off) or a correct OpenTelemetry environment (inherit)."""

from __future__ import annotations

import os
from types import SimpleNamespace

from jh_otel.hooks.singleuser import (
    INHERITED,
    SingleUserEnvironment,
    auto_instrumentation_dir,
    inherited,
    without_wrapper,
)

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


def test_inherit_passes_on_no_credential_and_nothing_off_the_allow_list() -> None:
    """Headers, client keys and certificates, user info in an endpoint and unknown OTEL_* variables stay in the hub;
    the operator's own spawner environment (for servers that must authenticate) is kept."""
    hub = {
        "OTEL_SERVICE_NAME": "jupyterhub",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://user:hunter2@collector:4318/v1/traces",
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=collector-secret",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "api-key=traces-secret",
        "OTEL_EXPORTER_OTLP_CLIENT_KEY": "/etc/hub/client.key",
        "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE": "/etc/hub/client.crt",
        "OTEL_EXPORTER_OTLP_CERTIFICATE": "/etc/hub/ca.crt",
        "OTEL_SOMETHING_NEW": "x",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
        "OTEL_PROPAGATORS": "tracecontext,baggage",
    }
    spawner_env = {"OTEL_EXPORTER_OTLP_HEADERS": "api-key=for-servers"}
    env = inherited(dict(spawner_env), hub, "u", "")
    assert env == {
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=for-servers",
        "OTEL_SERVICE_NAME": "jupyterhub-singleuser",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
        "OTEL_PROPAGATORS": "tracecontext,baggage",
        "OTEL_RESOURCE_ATTRIBUTES": "jupyterhub.user.name=u,jupyterhub.server.name=",
    }
    assert not any("HEADERS" in k or "CLIENT" in k or "CERTIFICATE" in k for k in INHERITED)


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
