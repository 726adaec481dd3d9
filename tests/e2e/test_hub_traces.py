"""End to end, traces: JupyterHub 6 under ``opentelemetry-instrument`` with traces on, the real proxy, real
single-user servers that inherit the instrumentation, and an OTLP receiver. One drive, many assertions: the span
trees of a login, a spawn (into the single-user server), a stop and a failing spawn; and no credential anywhere
in what the receiver got or what the scrape endpoints serve."""

from __future__ import annotations

import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import pytest
import requests

from hubproc import FAILING_USER, PASSWORD, SERVICE_TOKEN, Hub, free_port, otel_env
from otlp_receiver import OTLPReceiver, Span

pytestmark = pytest.mark.e2e

USER = "alice"
ECHO_USER = "echo"
SLOW_USER = "slow"  # spawns take 2 s: long enough to stream the spawn's progress
# every credential the drive sends, each distinctive enough to be found in a protobuf body
SECRETS = {
    "query_token": "qtok-5f1c9e2a7b3d4c68",
    "query_password": "qpass-77a1b2c3d4e5",
    "query_api_key": "qkey-0a9b8c7d6e5f",
    "query_client_secret": "qsecret-1234abcd5678",
    "bearer": "bearer-9e8d7c6b5a4f3e2d",
    "cookie_session": "cookie-sess-4b3c2d1e0f9a",
    "cookie_xsrf": "cookie-xsrf-8f7e6d5c4b3a",
    "oauth_code": "oauth-code-2468ace13579",
    "oauth_state": "oauth-state-1357bdf02468",
    "token_path": "pathtok-6c5b4a39281706",
    "echoed_password": "echo-pass-a1b2c3d4e5f6",
    "singleuser_token": "sutok-0f1e2d3c4b5a6978",
    "singleuser_bearer": "subearer-9a8b7c6d5e4f",
    "singleuser_code": "sucode-1122334455aa",
    "service_token": SERVICE_TOKEN,
    "password": PASSWORD,
}

ECHO_CONFIG = f"""
# DemoAuthenticator: the demo config's password authenticator (it refuses wrong passwords on JupyterHub 5.0 to 6.x)
class EchoingAuthenticator(DemoAuthenticator):
    # an authenticator whose error message echoes the password it was given
    async def authenticate(self, handler, data):
        if data.get("username") == "{ECHO_USER}":
            raise ValueError("cannot verify password %r for %s" % (data["password"], data["username"]))
        return await super().authenticate(handler, data)

c.JupyterHub.authenticator_class = EchoingAuthenticator

import asyncio
_failing_pre_spawn = c.Spawner.pre_spawn_hook

async def _slow_pre_spawn(spawner):
    _failing_pre_spawn(spawner)
    if spawner.user.name == "{SLOW_USER}":
        await asyncio.sleep(2)

c.Spawner.pre_spawn_hook = _slow_pre_spawn
"""


@dataclass
class Stack:
    hub: Hub
    receiver: OTLPReceiver
    exporter_url: str
    scrapes: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    exporter_port = free_port()
    extra = {
        "OTEL_PYTHON_JUPYTERHUB_SINGLEUSER_INSTRUMENTATION": "inherit",
        "OTEL_PYTHON_JUPYTERHUB_LOG_CORRELATION": "on",
        "OTEL_PYTHON_TORNADO_EXCLUDED_URLS": "hub/api/info",
    }
    with OTLPReceiver() as receiver:
        env = otel_env(receiver.http_endpoint, traces="otlp", exporter_port=exporter_port, extra=extra)
        with Hub(tmp_path_factory.mktemp("traced-hub"), env, extra_config=ECHO_CONFIG) as hub:
            stack = Stack(hub, receiver, f"http://127.0.0.1:{exporter_port}/metrics")
            drive(stack)
            yield stack


def drive(stack: Stack) -> None:
    hub, url = stack.hub, stack.hub.url
    assert hub.api("POST", "/users", json={"usernames": [USER, ECHO_USER, FAILING_USER, SLOW_USER]}).status_code == 201
    browser = requests.Session()
    browser.get(f"{url}/hub/login", timeout=30)
    form = {"username": USER, "password": PASSWORD, "_xsrf": browser.cookies.get("_xsrf", "")}
    assert browser.post(f"{url}/hub/login", data=form, allow_redirects=False, timeout=30).status_code == 302
    assert browser.get(f"{url}/hub/logout", allow_redirects=False, timeout=30).status_code == 302
    assert hub.refused(hub.login(USER, "wrong-password"))
    # the authenticator raises with the password in its message: a 500 whose exception must not leak it
    assert hub.login(ECHO_USER, SECRETS["echoed_password"]).status_code == 500
    assert hub.api("GET", "/info").status_code == 200  # excluded from tracing by the setting
    assert hub.api("GET", "/no-such-endpoint").status_code == 404

    # the spawn: one trace from the request into the single-user server
    assert hub.api("POST", f"/users/{USER}/server").status_code in (201, 202)
    hub.wait_server(USER, ready=True)
    send_credentials(stack)

    # a spawn watched through the progress API while it is pending, as the spawn page does
    request = threading.Thread(target=hub.api, args=("POST", f"/users/{SLOW_USER}/server"))
    request.start()
    hub.wait_server(SLOW_USER, ready=False, pending=True, timeout=10)
    with hub.session.get(f"{url}/hub/api/users/{SLOW_USER}/server/progress", stream=True, timeout=60) as stream:
        stream.raise_for_status()
        for line in stream.iter_lines(decode_unicode=True):
            if line and '"ready": true' in line:
                break
    request.join(60)
    hub.wait_server(SLOW_USER, ready=True)

    for name in (USER, SLOW_USER):
        assert hub.api("DELETE", f"/users/{name}/server").status_code in (202, 204)
        hub.wait_server(name, ready=False)
    hub.api("POST", f"/users/{FAILING_USER}/server")  # 202, or 500 (JupyterHub's own race when the server dies)
    hub.wait_server(FAILING_USER, ready=False)
    for endpoint, headers in (
        (f"{url}/hub/metrics", {"Authorization": f"token {SERVICE_TOKEN}"}),
        (stack.exporter_url, {}),
    ):
        stack.scrapes.append(requests.get(endpoint, headers=headers, timeout=10).text)
    stack.receiver.wait_for(
        lambda r: {"jupyterhub.spawn", "jupyterhub.stop", "jupyterhub.singleuser.startup"} <= r.span_names(),
        timeout=20,
    )
    time.sleep(2)  # the last batches: spans (0.2 s) and metrics (1 s)


def send_credentials(stack: Stack) -> None:
    """Each form of credential from the issue, to the hub and to a single-user server (through the proxy)."""
    url, s = stack.hub.url, SECRETS
    get = requests.get
    get(f"{url}/hub/api/user?token={s['query_token']}&password={s['query_password']}", timeout=10)
    get(f"{url}/hub/api/users?api_key={s['query_api_key']}&client_secret={s['query_client_secret']}", timeout=10)
    get(f"{url}/hub/api/user", headers={"Authorization": f"Bearer {s['bearer']}"}, timeout=10)
    cookies = {"jupyterhub-session-id": s["cookie_session"], "_xsrf": s["cookie_xsrf"]}
    get(f"{url}/hub/home", cookies=cookies, allow_redirects=False, timeout=10)
    get(f"{url}/hub/api/authorizations/token/{s['token_path']}", timeout=10)
    get(
        f"{url}/hub/api/oauth2/authorize?client_id=jupyterhub-user-{USER}&state={s['oauth_state']}&response_type=code",
        allow_redirects=False,
        timeout=10,
    )
    requests.post(
        f"{url}/hub/api/oauth2/token",
        data={"code": s["oauth_code"], "client_secret": s["query_client_secret"], "grant_type": "authorization_code"},
        timeout=10,
    )
    user_url = f"{url}/user/{USER}"
    get(f"{user_url}/api/status?token={s['singleuser_token']}", allow_redirects=False, timeout=10)
    get(f"{user_url}/api/status", headers={"Authorization": f"token {s['singleuser_bearer']}"}, timeout=10)
    get(
        f"{user_url}/oauth_callback?code={s['singleuser_code']}&state={s['oauth_state']}",
        allow_redirects=False,
        timeout=10,
    )


# ---------------------------------------------------------------- helpers


class Traces:
    def __init__(self, spans: list[Span]) -> None:
        self.spans = spans
        self.by_id = {span.span_id: span for span in spans}
        self.children: dict[str, list[Span]] = defaultdict(list)
        for span in spans:
            self.children[span.parent_span_id].append(span)

    def named(self, name: str, **attributes: object) -> list[Span]:
        return [
            s for s in self.spans if s.name == name and all(s.attributes.get(k) == v for k, v in attributes.items())
        ]

    def one(self, name: str, **attributes: object) -> Span:
        found = self.named(name, **attributes)
        assert len(found) == 1, (name, attributes, [(s.name, s.attributes) for s in found])
        return found[0]

    def parent(self, span: Span) -> Span | None:
        return self.by_id.get(span.parent_span_id)

    def kids(self, span: Span, name: str | None = None) -> list[Span]:
        return [s for s in self.children[span.span_id] if name is None or s.name == name]

    def descendants(self, span: Span) -> list[Span]:
        out, todo = [], [span]
        while todo:
            for child in self.children[todo.pop().span_id]:
                out.append(child)
                todo.append(child)
        return out


@pytest.fixture(scope="module")
def traces(stack: Stack) -> Traces:
    return Traces(stack.receiver.spans())


def spawn_trace(traces: Traces, user: str) -> tuple[Span, Span]:
    spawn = traces.one("jupyterhub.spawn", **{"jupyterhub.user.name": user})
    request = traces.parent(spawn)
    assert request is not None
    return request, spawn


# ---------------------------------------------------------------- trees


def test_a_spawn_is_one_trace_from_the_request_into_the_single_user_server(traces: Traces) -> None:
    """The spawn span, a successful child of the ``POST /hub/api/users/{user_name}/server`` server span, holds one
    spawner start, readiness wait and route addition in that order, SQL spans including ``INSERT servers``, the
    single-user server's startup span (same trace, under the start) and progress events from ``Server requested`` to
    ``Server ready``."""
    request, spawn = spawn_trace(traces, USER)
    assert request.name == "POST /hub/api/users/{user_name}/server" and request.kind == "SERVER"
    assert request.attributes["http.route"] == "/hub/api/users/{user_name}/server"
    assert request.attributes["jupyterhub.service.name"] == "e2e"
    assert spawn.attributes["jupyterhub.spawner.class"] == "jupyterhub.spawner.SimpleLocalProcessSpawner"
    assert spawn.attributes["jupyterhub.server.name"] == ""
    assert spawn.attributes["jupyterhub.status"] == "success" and spawn.status_code == "UNSET"
    # the whole spawn: start, the readiness wait and the proxy route, in this order, all inside the spawn span
    steps = {
        name: traces.kids(spawn, name)
        for name in ("jupyterhub.spawner.start", "jupyterhub.server.wait_up", "jupyterhub.proxy.add_route")
    }
    assert all(len(found) == 1 for found in steps.values()), steps
    start, wait, route = (found[0] for found in steps.values())
    assert (
        start.end_time_unix_nano <= wait.start_time_unix_nano <= wait.end_time_unix_nano <= route.start_time_unix_nano
    )
    assert (
        spawn.start_time_unix_nano <= start.start_time_unix_nano
        and route.end_time_unix_nano <= spawn.end_time_unix_nano
    )
    assert route.attributes["jupyterhub.user.name"] == USER
    # SQL of the spawn belongs to it
    sql = [s for s in traces.descendants(spawn) if s.attributes.get("db.system") == "sqlite"]
    assert sql and all(re.fullmatch(r"(SELECT|INSERT|UPDATE|DELETE)( \w+)?", s.name) for s in sql), [
        s.name for s in sql
    ]
    assert any(s.name == "INSERT servers" for s in sql)
    # the single-user server's startup, from its own service, is a child of spawner.start
    (startup,) = traces.kids(start, "jupyterhub.singleuser.startup")
    assert startup.resource["service.name"] == "jupyterhub-singleuser"
    assert startup.resource["jupyterhub.user.name"] == USER
    assert startup.trace_id == request.trace_id
    # progress messages are events
    names = [e.name for e in spawn.events]
    assert names[:1] == ["Server requested"] and "Server ready" in names


def test_spawn_progress_messages_are_span_events(traces: Traces) -> None:
    """What the progress API streams while the spawn is pending (here the base Spawner's one message) is recorded."""
    _, spawn = spawn_trace(traces, SLOW_USER)
    events = {e.name: e.attributes for e in spawn.events}
    assert events["Server requested"] == {"jupyterhub.progress": 0}
    assert events["Spawning server..."] == {"jupyterhub.progress": 50}
    assert events["Server ready"] == {"jupyterhub.progress": 100}
    assert [e.name for e in spawn.events].count("Server requested") == 1  # the stream's copy is not added twice


def test_the_readiness_wait_is_one_span_without_client_spans(traces: Traces) -> None:
    """The spawn's one ``jupyterhub.server.wait_up`` span counts at least one poll, has status UNSET and has no child
    span."""
    _, spawn = spawn_trace(traces, USER)
    (wait,) = traces.kids(spawn, "jupyterhub.server.wait_up")
    assert wait.attributes["jupyterhub.server.polls"] >= 1
    assert wait.status_code == "UNSET"
    assert traces.descendants(wait) == []


def test_proxy_calls_are_client_spans_with_context_propagation(traces: Traces) -> None:
    """The ``jupyterhub.proxy.add_route`` span has one child, a CLIENT span ``POST`` to the user's
    ``/api/routes/user/...`` URL with status code 201."""
    _, spawn = spawn_trace(traces, USER)
    (route,) = traces.kids(spawn, "jupyterhub.proxy.add_route")
    (client,) = traces.kids(route)
    assert client.kind == "CLIENT" and client.name == "POST"
    assert client.attributes["http.request.method"] == "POST"
    assert client.attributes["url.full"].endswith(f"/api/routes/user/{USER}")
    assert client.attributes["http.response.status_code"] == 201


def test_a_failing_spawn_shows_where_it_failed(traces: Traces) -> None:
    """A failing spawn's span has status ERROR, ``jupyterhub.status`` ``failure`` and an ``error.type``; the readiness
    wait is its only failed descendant, under which a stop's poll reports ``stopped`` with exit status ``3``."""
    _, spawn = spawn_trace(traces, FAILING_USER)
    assert spawn.status_code == "ERROR" and spawn.attributes["jupyterhub.status"] == "failure"
    assert spawn.attributes["error.type"]
    failed = [s for s in traces.descendants(spawn) if s.status_code == "ERROR"]
    assert [s.name for s in failed] == ["jupyterhub.server.wait_up"]
    (stop,) = traces.kids(failed[0], "jupyterhub.stop")
    polls = traces.kids(stop, "jupyterhub.spawner.poll")
    assert polls and polls[0].attributes["jupyterhub.status"] == "stopped"
    assert polls[0].attributes["jupyterhub.exit_status"] == "3"


def test_login_spans_carry_user_and_outcome(traces: Traces) -> None:
    """Alice's two ``jupyterhub.login`` spans are one ``success`` and one ``failure``, each a child of
    ``POST /hub/login``, and the successful one's request span carries her name too."""
    logins = traces.named("jupyterhub.login", **{"jupyterhub.user.name": USER})
    assert sorted(s.attributes["jupyterhub.login.status"] for s in logins) == ["failure", "success"]
    for login in logins:
        parent = traces.parent(login)
        assert parent is not None and parent.name == "POST /hub/login"
    ok = next(s for s in logins if s.attributes["jupyterhub.login.status"] == "success")
    assert traces.parent(ok).attributes["jupyterhub.user.name"] == USER  # the request span knows the user too


def test_logout_span_carries_the_user(traces: Traces) -> None:
    """The one ``jupyterhub.logout`` span carries the user's name and is a child of ``GET /hub/logout``."""
    logout = traces.one("jupyterhub.logout")
    assert logout.attributes["jupyterhub.user.name"] == USER
    assert traces.parent(logout).name == "GET /hub/logout"


def test_5xx_request_spans_have_status_error_and_the_exception(traces: Traces) -> None:
    """A login whose authenticator raises is an ERROR ``ValueError`` span under an ERROR ``POST /hub/login`` span with
    status code 500 and a redacted exception event, and server spans are ERROR when their status code is 5xx and UNSET
    otherwise."""
    (login,) = traces.named("jupyterhub.login", **{"jupyterhub.user.name": ECHO_USER})
    assert login.status_code == "ERROR" and login.attributes["error.type"] == "ValueError"
    request = traces.parent(login)
    assert request.name == "POST /hub/login"
    assert request.status_code == "ERROR"
    assert request.attributes["http.response.status_code"] == 500 and request.attributes["error.type"] == "ValueError"
    exception = next(e for e in request.events if e.name == "exception")
    assert exception.attributes["exception.type"] == "ValueError"
    assert "[redacted]" in exception.attributes["exception.message"]
    errors = [s for s in traces.spans if s.kind == "SERVER" and s.attributes.get("http.response.status_code", 0) >= 500]
    assert errors and all(s.status_code == "ERROR" for s in errors)
    ok = [s for s in traces.spans if s.kind == "SERVER" and s.attributes.get("http.response.status_code", 0) < 500]
    assert all(s.status_code == "UNSET" for s in ok)


def test_stop_and_poll_spans_carry_their_attributes(traces: Traces) -> None:
    """Alice's successful ``jupyterhub.stop`` span is a child of the DELETE server request, carries the spawner class
    and has route deletion, spawner stop and poll children, and her polls include a ``running`` one."""
    stop = traces.one("jupyterhub.stop", **{"jupyterhub.user.name": USER, "jupyterhub.status": "success"})
    assert traces.parent(stop).name == "DELETE /hub/api/users/{user_name}/server"
    assert stop.attributes["jupyterhub.spawner.class"] == "jupyterhub.spawner.SimpleLocalProcessSpawner"
    names = [s.name for s in traces.kids(stop)]
    assert {"jupyterhub.proxy.delete_route", "jupyterhub.spawner.stop", "jupyterhub.spawner.poll"} <= set(names)
    polls = traces.named("jupyterhub.spawner.poll", **{"jupyterhub.user.name": USER})
    assert {p.attributes["jupyterhub.status"] for p in polls} >= {"running"}


def test_span_names_are_route_templates(traces: Traces) -> None:
    """Server spans, from the hub and the single-user server, are named by route templates (no ``%``), an unknown path
    is ``GET unmatched`` without ``http.route``, the excluded ``/hub/api/info`` has none, and each carries method, path
    and status code."""
    servers = [s for s in traces.spans if s.kind == "SERVER"]
    assert servers and not [s.name for s in servers if "%" in s.name]
    assert "GET /hub/api/users/{user_name}" in {s.name for s in servers}
    (missing,) = [s for s in servers if s.attributes.get("url.path") == "/hub/api/no-such-endpoint"]
    assert missing.name == "GET unmatched" and "http.route" not in missing.attributes
    assert not [s for s in servers if s.attributes.get("url.path") == "/hub/api/info"]  # excluded by the setting
    for span in servers:
        assert {"http.request.method", "url.path", "http.response.status_code"} <= span.attributes.keys(), span
    assert {s.resource["service.name"] for s in servers} == {"jupyterhub", "jupyterhub-singleuser"}


def test_startup_is_a_trace_of_its_own(traces: Traces) -> None:
    """``jupyterhub.startup`` is a root span with ``init_spawners`` and ``proxy.check_routes`` children, and no
    descendant of the spawn span starts after the spawn ends."""
    startup = traces.one("jupyterhub.startup")
    assert startup.parent_span_id == ""
    names = {s.name for s in traces.kids(startup)}
    assert {"jupyterhub.init_spawners", "jupyterhub.proxy.check_routes"} <= names
    # nothing joins the spawn's trace once the spawn is over (polls started by the spawn are traces of their own)
    _, spawn = spawn_trace(traces, USER)
    late = [s.name for s in traces.descendants(spawn) if s.start_time_unix_nano > spawn.end_time_unix_nano]
    assert late == []


def test_latency_histograms_carry_trace_exemplars(stack: Stack, traces: Traces) -> None:
    """The exported ``jupyterhub.request.duration`` points carry exemplar trace ids, all of them traces the receiver
    got."""
    # an export carries the exemplars of the measurements made since the previous one
    exports = stack.receiver.metrics("jupyterhub.request.duration")
    linked = {t for metric in exports for point in metric.data_points for t in point.exemplar_trace_ids}
    assert linked, "no exemplar on jupyterhub.request.duration"
    assert linked <= {s.trace_id for s in traces.spans}


def test_hub_log_lines_carry_the_trace_context(stack: Stack, traces: Traces) -> None:
    """Among the hub's log lines carrying the spawn request's ``trace_id`` is one about
    ``/hub/api/users/alice/server``."""
    request, _ = spawn_trace(traces, USER)
    lines = [line for line in stack.hub.log().splitlines() if f"trace_id={request.trace_id}" in line]
    assert any("/hub/api/users/alice/server" in line for line in lines), lines[:5]


# ---------------------------------------------------------------- secrets


def test_no_credential_reaches_the_receiver_or_a_scrape(stack: Stack, traces: Traces) -> None:
    """No credential the drive sent appears in any OTLP body the receiver got or in either scrape, though spans show the
    requests that carried them, with ``[redacted]`` in the token path and query."""
    bodies = stack.receiver.raw_bodies()
    assert bodies and stack.scrapes
    # the credentials were sent where the spans say they were
    paths = {s.attributes.get("url.path") for s in traces.spans}
    assert {"/hub/api/oauth2/token", "/user/alice/oauth_callback", "/hub/api/authorizations/token/[redacted]"} <= paths
    queries = {s.attributes.get("url.query") for s in traces.spans}
    assert "token=[redacted]&password=[redacted]" in queries
    leaks = {
        label: where
        for label, secret in SECRETS.items()
        for where, data in [*(("otlp", b) for b in bodies), *(("scrape", t.encode()) for t in stack.scrapes)]
        if secret.encode() in data
    }
    assert not leaks
