"""Credential scrubbing: every form the issue lists, table-driven, and nothing else changed."""

from __future__ import annotations

import pytest

from jh_otel.scrub import REDACTED, is_secret_name, scrub_fields, scrub_headers, scrub_sql, scrub_text, scrub_url

R = REDACTED

URLS = [
    ("/hub/api/users?token=abc123", f"/hub/api/users?token={R}"),
    (
        "/hub/oauth_callback?code=c0de&state=st4te&next=/hub/home",
        f"/hub/oauth_callback?code={R}&state={R}&next=/hub/home",
    ),
    ("/hub/login?_xsrf=2|ab|cd&next=%2Fhub%2F", f"/hub/login?_xsrf={R}&next=%2Fhub%2F"),
    (
        "/x?Access_Token=1&API_KEY=2&client_secret=3&Password=4",
        f"/x?Access_Token={R}&API_KEY={R}&client_secret={R}&Password={R}",
    ),
    ("/x?my%5Ftoken=1", f"/x?my%5Ftoken={R}"),
    ("/hub/api/authorizations/token/0123456789abcdef", f"/hub/api/authorizations/token/{R}"),
    ("/hub/api/authorizations/cookie/jupyterhub-session/s3cr3t", f"/hub/api/authorizations/cookie/{R}"),
    ("http://alice:hunter2@127.0.0.1:8000/hub/", f"http://alice:{R}@127.0.0.1:8000/hub/"),
    ("/user/alice/lab#access_token=abc&x=1", f"/user/alice/lab#access_token={R}&x=1"),
    ("/hub/spawn/alice?profile=gpu", "/hub/spawn/alice?profile=gpu"),
    ("/hub/home", "/hub/home"),
]


@pytest.mark.parametrize(("url", "expected"), URLS)
def test_scrub_url(url: str, expected: str) -> None:
    """Credential parameters, token paths, user-info passwords and fragment tokens are redacted; the rest is kept."""
    assert scrub_url(url) == expected


def test_scrub_headers() -> None:
    """Auth schemes and cookie names are kept, their values are not; other headers pass unchanged."""
    assert scrub_headers(
        {
            "Authorization": "token 0123456789abcdef",
            "proxy-authorization": "Basic YWxpY2U6aHVudGVyMg==",
            "Cookie": "jupyterhub-session-id=abc; _xsrf=2|x|y",
            "Set-Cookie": "jupyterhub-hub-login=zzz; Path=/hub/; HttpOnly",
            "X-Api-Key": "k",
            "Host": "127.0.0.1:8000",
            "User-Agent": "curl/8",
        }
    ) == {
        "Authorization": f"token {R}",
        "proxy-authorization": f"Basic {R}",
        "Cookie": f"jupyterhub-session-id={R};_xsrf={R}",
        "Set-Cookie": f"jupyterhub-hub-login={R}; Path=/hub/; HttpOnly",
        "X-Api-Key": R,
        "Host": "127.0.0.1:8000",
        "User-Agent": "curl/8",
    }
    assert scrub_headers([("Authorization", "sometoken")]) == {"Authorization": R}


def test_scrub_fields() -> None:
    """A login form keeps the user name and loses the password and the xsrf token."""
    assert scrub_fields({"username": "alice", "password": "hunter2", "_xsrf": "x", "next": "/hub/"}) == {
        "username": "alice",
        "password": R,
        "_xsrf": R,
        "next": "/hub/",
    }


SQL = [
    (
        "SELECT users.id FROM users WHERE users.name = 'alice' AND users.admin = 1",
        "SELECT users.id FROM users WHERE users.name = ? AND users.admin = ?",
    ),
    (
        "INSERT INTO api_tokens (hashed, prefix) VALUES ('sha512:abc', 'abcd')",
        "INSERT INTO api_tokens (hashed, prefix) VALUES (?, ?)",
    ),
    ("UPDATE users SET name='o''brien' WHERE id=-12.5e3", "UPDATE users SET name=? WHERE id=?"),
    (
        "SELECT * FROM t1 WHERE a = ? AND b = :name_1 AND c = %(c_2)s AND d = $1",
        "SELECT * FROM t1 WHERE a = ? AND b = :name_1 AND c = %(c_2)s AND d = $1",
    ),
]


@pytest.mark.parametrize(("statement", "expected"), SQL)
def test_scrub_sql(statement: str, expected: str) -> None:
    """String and number literals become ?; identifiers (t1, name_1) and placeholders stay."""
    assert scrub_sql(statement) == expected


def test_scrub_text() -> None:
    """An exception message that echoes credentials in any of their forms keeps none of them."""
    message = (
        "401 for http://127.0.0.1:8081/hub/api/users?token=abc123def&x=1: "
        "Authorization: token 0123456789abcdef, Bearer eyJhbGciOi.xyz, "
        "password=hunter2 from https://bob:pa55@example.invalid/ sent s3cr3t-value"
    )
    scrubbed = scrub_text(message, secrets=["s3cr3t-value"])
    for secret in ("abc123def", "0123456789abcdef", "eyJhbGciOi.xyz", "hunter2", "pa55", "s3cr3t-value"):
        assert secret not in scrubbed
    assert "x=1" in scrubbed and "127.0.0.1:8081/hub/api/users" in scrubbed


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("token", True),
        ("X-Auth-Token", True),
        ("oauth_state", True),
        ("my%5Fsecret", True),
        ("PASSWORD", True),
        ("next", False),
        ("username", False),
        ("profile", False),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    """Names are matched by substring, whatever their case or URL encoding."""
    assert is_secret_name(name) is secret
