"""Private functions of the contrib packages that jh_otel replaces or builds on: each is checked when jh_otel
installs, and one that is not as expected leaves that part out with one warning while the rest keeps working."""

from __future__ import annotations

import enum
import functools
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy
from opentelemetry.instrumentation import tornado as contrib_tornado
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from jh_otel import compat
from jh_otel.compat import Expect, problem, unmet
from jh_otel.tracing import SEMCONV_EXPECTS, encoding, sql, stable_http_semconv
from jh_otel.tracing.scrubbing import KnownSecrets
from jh_otel.tracing.server import ServerCorrections


def _two(a: Any, b: Any) -> None:
    """Stands in for a private function whose signature changed."""


class _Changed:
    """Stands in for a private class or method whose signature changed."""

    def __init__(self, only: Any) -> None:
        pass


def _break(monkeypatch: pytest.MonkeyPatch, expect: Expect) -> None:
    owner: Any = compat.resolve(expect.module, expect.qualname.rpartition(".")[0]) if "." in expect.qualname else None
    if owner is None:
        owner = __import__(expect.module, fromlist=["_"])
    attribute = expect.qualname.rpartition(".")[2]
    if expect.parameters is None and isinstance(owner, enum.EnumMeta):
        # an enum's members cannot be deleted: the module gets an enum without it
        monkeypatch.setattr(sys.modules[expect.module], owner.__name__, enum.Enum(owner.__name__, {"OTHER": "other"}))
    elif expect.parameters is None:
        monkeypatch.delattr(owner, attribute)
    elif expect.qualname.endswith("._register_event_listener"):
        monkeypatch.setattr(owner, attribute, classmethod(lambda cls, target: None))
    else:
        monkeypatch.setattr(owner, attribute, _two if "." not in expect.qualname else lambda self, other, more: None)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "jh_otel"]


PROBLEMS = [
    (Expect("os.path", "join", ("a",)), None),
    (Expect("os.path", "no_such_function"), "os.path.no_such_function is missing"),
    (Expect("no_such_module", "f"), "no_such_module.f is missing"),
    (Expect("tests_compat_module", "x"), "tests_compat_module.x is missing"),
    (Expect("os.path", "split", ("p",)), None),
    (Expect("os.path", "split", ("path",)), "os.path.split takes (p), not (path)"),
    (Expect("os.path", "split", ("p", "q")), "os.path.split takes (p), not (p, q)"),
    (
        Expect("logging", "Logger.log", ("self", "level")),
        "logging.Logger.log takes (self, level, msg), not (self, level)",
    ),
    (Expect("logging", "Logger.__init__", ("self", "name")), None),  # the extra ``level`` has a default
]


@pytest.mark.parametrize(("expect", "expected"), PROBLEMS)
def test_problem_names_what_differs(expect: Expect, expected: str | None) -> None:
    """A missing attribute, a renamed or added required parameter is a problem; extra defaulted parameters are not."""
    assert problem(expect) == expected


def test_unmet_warns_once_naming_the_part_and_the_versions(caplog: pytest.LogCaptureFixture) -> None:
    """An unmet part gives exactly one warning with the part, the mismatch and the installed versions."""
    with caplog.at_level(logging.WARNING, logger="jh_otel"):
        assert unmet("a part", [Expect("os.path", "split", ("x",)), Expect("os.path", "gone")], ["pytest", "nope-x"])
        assert not unmet("another part", [Expect("os.path", "split", ("p",))], ["pytest"])
    (message,) = _warnings(caplog)
    assert message.startswith("jh_otel: leaving out a part: os.path.split takes (p), not (x); os.path.gone is missing")
    assert "pytest " + pytest.__version__ in message and "nope-x (not installed)" in message


@pytest.mark.parametrize("expect", ServerCorrections.EXPECTS, ids=lambda e: e.qualname)
def test_tornado_corrections_are_left_out_when_a_replaced_function_changed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, expect: Expect
) -> None:
    """A contrib tornado function jh_otel replaces with another signature: nothing is replaced (no request would
    call jh_otel's function with arguments it does not take), one warning names the request spans and versions."""
    _break(monkeypatch, expect)
    originals = {name: getattr(contrib_tornado, name, None) for name in ServerCorrections._REPLACED}
    with caplog.at_level(logging.WARNING, logger="jh_otel"):
        assert ServerCorrections(KnownSecrets()).install(contrib_tornado) is None
    assert {name: getattr(contrib_tornado, name, None) for name in ServerCorrections._REPLACED} == originals
    (message,) = _warnings(caplog)
    assert "leaving out request spans (tornado)" in message and "opentelemetry-instrumentation-tornado 0." in message


@pytest.mark.parametrize("expect", ServerCorrections.PROBE_CLASSES, ids=lambda e: e.qualname)
def test_a_changed_class_patching_keeps_the_probes_wrapped_and_the_request_spans(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, expect: Expect
) -> None:
    """The contrib's ``patch_handler_class`` (or its patched-class marker) changed: the request-span corrections
    still install, the contrib's function is left as it is, and one warning names the unwrapped probes."""
    _break(monkeypatch, expect)
    shipped = getattr(contrib_tornado, "patch_handler_class", None)
    with caplog.at_level(logging.WARNING, logger="jh_otel"):
        undo = ServerCorrections(KnownSecrets()).install(contrib_tornado)
    try:
        assert undo and getattr(contrib_tornado, "patch_handler_class", None) is shipped
        assert contrib_tornado._start_span.__self__.__class__ is ServerCorrections
    finally:
        for restore in undo or ():
            restore()
    (message,) = _warnings(caplog)
    assert "leaving out unwrapped probes (tornado)" in message


def test_without_the_corrections_tornado_is_not_instrumented_and_the_rest_installs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Corrections left out: jh_otel does not instrument tornado at all (the contrib functions as shipped would name
    routes ``GET %s`` and fail requests under a base URL with a ``%``), and the rest of the tracing installs."""
    from opentelemetry.instrumentation.tornado import TornadoInstrumentor

    from jh_otel.settings import Settings
    from jh_otel.tracing import ProcessTracing

    monkeypatch.setattr(contrib_tornado, "_start_span", _two)
    tracing = ProcessTracing(Settings(traces_exporters=("otlp",)), TracerProvider())
    with caplog.at_level(logging.WARNING, logger="jh_otel"):
        tracing.install()
    try:
        assert not TornadoInstrumentor().is_instrumented_by_opentelemetry
        assert any("leaving out request spans (tornado)" in m for m in _warnings(caplog))
    finally:
        tracing.uninstall()


@pytest.fixture
def traced_engine() -> Iterator[tuple[Any, InMemorySpanExporter, Any]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    engine = sqlalchemy.create_engine("sqlite://")
    remove = sql.HubEngineTracer.remove_all_event_listeners  # before a test takes it away
    yield engine, exporter, provider.get_tracer("test")
    remove()
    engine.dispose()


@pytest.mark.parametrize("expect", sql.EXPECTS, ids=lambda e: e.qualname)
def test_sql_spans_are_left_out_when_the_engine_tracer_changed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, traced_engine: Any, expect: Expect
) -> None:
    """A contrib engine-tracer internal with another shape: no SQL span and one warning, and the hub's statements
    still run (no listener left that would fail them)."""
    engine, exporter, tracer = traced_engine
    _break(monkeypatch, expect)
    with caplog.at_level(logging.WARNING, logger="jh_otel"):
        assert sql.trace_engine(engine, tracer) is None
    with engine.connect() as connection:
        assert connection.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
    assert exporter.get_finished_spans() == ()
    (message,) = _warnings(caplog)
    assert "leaving out SQL spans" in message and "opentelemetry-instrumentation-sqlalchemy 0." in message


def test_sql_spans_need_the_contrib_tracers_state_or_leave_no_listener(
    monkeypatch: pytest.MonkeyPatch, traced_engine: Any
) -> None:
    """If the contrib tracer's constructor no longer sets the state jh_otel reads (contrib 0.61b0 had no
    ``_sem_conv_opt_in_mode_db``), construction fails and takes its listeners with it: statements still run."""
    engine, exporter, tracer = traced_engine
    original = sql.contrib.EngineTracer.__init__

    @functools.wraps(original)
    def without_state(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        del self._sem_conv_opt_in_mode_db

    monkeypatch.setattr(sql.contrib.EngineTracer, "__init__", without_state)
    with pytest.raises(AttributeError):
        sql.trace_engine(engine, tracer)
    with engine.connect() as connection:
        assert connection.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
    assert exporter.get_finished_spans() == ()


def test_fast_encoding_is_left_out_when_encode_spans_changed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An exporter module whose ``encode_spans`` takes other arguments keeps its own encoder, with one warning."""
    from opentelemetry.exporter.otlp.proto.http import trace_exporter

    monkeypatch.setattr(trace_exporter, "encode_spans", _two)
    with caplog.at_level(logging.WARNING, logger="jh_otel"):
        undo = encoding.install()
    try:
        assert trace_exporter.encode_spans is _two
    finally:
        for restore in undo:
            restore()
    assert any("leaving out fast span encoding for " + trace_exporter.__name__ in m for m in _warnings(caplog))


@pytest.mark.parametrize("expect", SEMCONV_EXPECTS, ids=lambda e: e.qualname)
def test_stable_http_conventions_are_left_out_when_the_contrib_internals_changed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, expect: Expect
) -> None:
    """The contrib semantic-convention switch jh_otel sets is missing: nothing is set, one warning."""
    _break(monkeypatch, expect)
    with caplog.at_level(logging.WARNING, logger="jh_otel"):
        stable_http_semconv({})
    (message,) = _warnings(caplog)
    assert "leaving out stable HTTP semantic conventions" in message


# --- JupyterHub's functions that the operation spans and the parts wrap ------------------------------------------

from jupyterhub.handlers.base import BaseHandler  # noqa: E402
from jupyterhub.spawner import Spawner  # noqa: E402
from jupyterhub.user import User  # noqa: E402

from jh_otel.runtime import PARTS  # noqa: E402
from jh_otel.tracing.operations import Operations  # noqa: E402

OPERATION_HOOKS = [
    ("login spans", BaseHandler, "login_user"),
    ("spawn spans", BaseHandler, "spawn_single_user"),
    ("spawn spans", Spawner, "_generate_progress"),
    ("stop spans", BaseHandler, "stop_single_user"),
    ("stop spans", BaseHandler, "user_stopped"),
    ("stop spans", User, "stop"),
    ("readiness-wait span", User, "_wait_up"),
    ("spawner method spans", User, "_new_spawner"),
    ("polls outside the spawn's trace", Spawner, "start_polling"),
]


class _App:
    """What the operation spans read of a JupyterHub application."""

    proxy = None
    users: dict = {}
    spawner_class = None

    async def init_spawners(self) -> int:
        return 0


def _wrapped(owner: type, attribute: str) -> bool:
    return hasattr(owner.__dict__.get(attribute), "__wrapped__")


@pytest.mark.parametrize(
    ("part", "owner", "attribute"), OPERATION_HOOKS, ids=[f"{o.__name__}.{a}" for _, o, a in OPERATION_HOOKS]
)
def test_an_operation_part_is_left_out_when_its_jupyterhub_function_changed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, part: str, owner: type, attribute: str
) -> None:
    """A JupyterHub function an operation span wraps, with other parameters: that part is not installed (one
    warning naming it and JupyterHub's version), every other part is."""
    monkeypatch.setattr(owner, attribute, lambda self, something_else, and_more: None)
    operations = Operations(TracerProvider().get_tracer("test"))
    with caplog.at_level(logging.WARNING, logger="jh_otel"):
        operations.install(_App())
    try:
        assert not _wrapped(owner, attribute)
        (message,) = _warnings(caplog)
        assert message.startswith(f"jh_otel: leaving out {part}: ") and "jupyterhub " in message
        others = [(o, a) for p, o, a in OPERATION_HOOKS if p != part]
        assert all(_wrapped(o, a) for o, a in others)
    finally:
        operations.uninstall()
    assert not any(_wrapped(o, a) for _, o, a in OPERATION_HOOKS)


@pytest.mark.parametrize(
    ("part", "expect"),
    [(part, expect) for part in PARTS for expect in part.expects],
    ids=[f"{part.__name__}-{expect.qualname}" for part in PARTS for expect in part.expects],
)
def test_a_part_of_the_wiring_is_left_out_when_its_jupyterhub_function_changed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, part: Any, expect: Expect
) -> None:
    """Each JupyterHub function a part of the wiring wraps, changed: the part's expectations are unmet, with one
    warning naming the part (the wiring then skips it: tests/unit/test_runtime.py)."""
    _break(monkeypatch, expect)
    with caplog.at_level(logging.WARNING, logger="jh_otel"):
        assert unmet(part.name, part.expects, ("jupyterhub",))
    (message,) = _warnings(caplog)
    assert message.startswith(f"jh_otel: leaving out {part.name}: ") and expect.target() in message
