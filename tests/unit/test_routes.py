"""Route templates: bounded endpoint labels from tornado patterns."""

from __future__ import annotations

import pytest

from jh_otel.hooks.routes import UNMATCHED, Routes, template

TEMPLATES = [
    ("/hub/api/users", [], "/hub/api/users"),
    ("/hub/api/users/([^/]+)", ["user_name"], "/hub/api/users/{user_name}"),
    (
        "/hub/api/users/([^/]+)/servers/([^/]*)/progress",
        ["user_name", "server_name"],
        "/hub/api/users/{user_name}/servers/{server_name}/progress",
    ),
    (
        "/hub/api/authorizations/cookie/([^/]+)(?:/([^/]+))?",
        ["cookie_name", "cookie_value"],
        "/hub/api/authorizations/cookie/{cookie_name}/{cookie_value}",
    ),
    ("/user/(?P<user_name>[^/]+)(?P<user_path>/.*)?", [], "/user/{user_name}{user_path}"),
    ("/hub/api/?", [], "/hub/api/"),
    ("/hub/health$", [], "/hub/health"),
    ("/hub/error/(\\d+)", [], "/hub/error/{arg1}"),
    ("/hub/static/(.*)", ["path"], "/hub/static/{path}"),
    ("(?!/hub/).*", [], "{path}"),
    ("/hub/spawn/([^/]+)/([^/]+)", ["user_name"], "/hub/spawn/{user_name}/{arg2}"),
]


@pytest.mark.parametrize(("pattern", "names", "expected"), TEMPLATES)
def test_template(pattern: str, names: list[str], expected: str) -> None:
    """Groups become {argument names}, regex syntax disappears."""
    assert template(pattern, list(names)) == expected


class UserAPIHandler:
    def get(self, user_name):
        pass


class UserServerAPIHandler:
    def post(self, user_name, server_name=""):
        pass


class API404:
    def get(self, *args):
        pass


def test_routes_pick_the_template_of_the_matching_pattern() -> None:
    """A handler class with several routes gets the template of the route the path matches."""
    routes = Routes(
        [
            ("/hub/api/users/([^/]+)", UserAPIHandler),
            ("/hub/api/users/([^/]+)/server", UserServerAPIHandler),
            ("/hub/api/users/([^/]+)/servers/([^/]*)", UserServerAPIHandler),
            ("/hub/api/(.*)", API404),
        ]
    )
    assert routes.endpoint(UserAPIHandler, "/hub/api/users/alice") == "/hub/api/users/{user_name}"
    assert routes.endpoint(UserServerAPIHandler, "/hub/api/users/a/servers/b") == (
        "/hub/api/users/{user_name}/servers/{server_name}"
    )
    assert routes.endpoint(UserServerAPIHandler, "/hub/api/users/a/server") == "/hub/api/users/{user_name}/server"
    assert routes.endpoint(API404, "/hub/api/nothing") == UNMATCHED
    assert routes.endpoint(dict, "/anything") == UNMATCHED
