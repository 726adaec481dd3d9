"""Credential scrubbing for telemetry: pure functions over URLs, headers, form fields, SQL and free text.

JupyterHub's own log scrubber (``jupyterhub/log.py``) is the minimum bar: URL parameters whose names contain
``token``, ``auth``, ``key``, ``code``, ``state`` or ``_xsrf``, the token paths of ``/api/authorizations``, and the
``Authorization`` and ``Cookie`` headers. jh_otel adds ``password`` and ``secret``, compares names without regard to
case or URL encoding, and also covers URL user info, fragments, ``Set-Cookie``, form fields, SQL literals and
messages that echo any of these. Redacted values become ``[redacted]``; names stay, so a span still says *which*
parameter was sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote, urlsplit, urlunsplit

REDACTED = "[redacted]"
SECRET_NAME_PARTS = ("token", "auth", "key", "code", "state", "_xsrf", "password", "secret")
SECRET_PATHS = re.compile(r"(/api/authorizations/(?:token|cookie))/(.+)$")
"""JupyterHub's token paths: group 1 the prefix kept, group 2 the credential."""
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization"})
_COOKIE_HEADERS = frozenset({"cookie", "set-cookie"})


def is_secret_name(name: str) -> bool:
    """Whether a parameter, field or header called ``name`` carries a credential."""
    lowered = unquote(name).lower()
    return any(part in lowered for part in SECRET_NAME_PARTS)


def _scrub_pairs(pairs: str) -> str:
    """``a=1&token=x`` -> ``a=1&token=[redacted]``, leaving everything else byte for byte."""
    out = []
    for pair in pairs.split("&"):
        name, sep, _ = pair.partition("=")
        out.append(f"{name}={REDACTED}" if sep and is_secret_name(name) else pair)
    return "&".join(out)


def scrub_url(url: str) -> str:
    """A URL or path with credential parameters, token paths and user-info passwords redacted."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, sep, _ = userinfo.partition(":")
        netloc = f"{user}:{REDACTED}@{host}" if sep else netloc
    path = SECRET_PATHS.sub(rf"\1/{REDACTED}", parts.path)
    query = _scrub_pairs(parts.query) if parts.query else ""
    fragment = _scrub_pairs(parts.fragment) if "=" in parts.fragment else parts.fragment
    return urlunsplit((parts.scheme, netloc, path, query, fragment))


def _scrub_cookie(value: str, separator: str) -> str:
    names = [chunk.split("=", 1)[0].strip() for chunk in value.split(separator) if chunk.strip()]
    return separator.join(f"{name}={REDACTED}" for name in names)


def scrub_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers with credentials redacted: the auth scheme and cookie names are kept, values are not."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for name, value in items:
        lowered = name.lower()
        if lowered in _CREDENTIAL_HEADERS:
            scheme, sep, _ = value.strip().partition(" ")
            value = f"{scheme} {REDACTED}" if sep else REDACTED
        elif lowered == "cookie":
            value = _scrub_cookie(value, ";")
        elif lowered == "set-cookie":
            first, _, attributes = value.partition(";")
            value = _scrub_cookie(first, ";") + (f";{attributes}" if attributes else "")
        elif is_secret_name(name):
            value = REDACTED
        out[name] = value
    return out


def scrub_fields(fields: Mapping[str, object]) -> dict[str, object]:
    """Form or JSON fields with credential-named values redacted (``password``, ``_xsrf``, ``token``...)."""
    return {name: REDACTED if is_secret_name(name) else value for name, value in fields.items()}


# string literals ('it''s'), then numbers that are not part of an identifier or a bound-parameter name
_SQL_STRING = re.compile(r"'(?:[^']|'')*'")
_SQL_NUMBER = re.compile(r"(?<![\w:$?%.])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b")


def scrub_sql(statement: str) -> str:
    """A SQL statement with every literal value replaced by ``?`` (bound parameters are already placeholders)."""
    return _SQL_NUMBER.sub("?", _SQL_STRING.sub("?", statement))


_TEXT_PAIRS = re.compile(r"([\w.%-]+)=([^&\s\"'<>;,]+)")
_TEXT_CREDENTIALS = re.compile(r"(?i)\b(token|bearer|basic)(\s+)([A-Za-z0-9._~+/=-]{6,})")


def scrub_text(message: str, secrets: Iterable[str] = ()) -> str:
    """Free text (an exception message, a log line) with credentials redacted.

    ``name=value`` pairs whose name carries a credential, ``token xxx`` / ``Bearer xxx`` / ``Basic xxx``
    credentials, URLs' user info, and every string in ``secrets`` (values known to be secret, such as the
    tokens of the request being recorded).
    """
    for secret in secrets:
        if secret:
            message = message.replace(secret, REDACTED)
    message = _TEXT_PAIRS.sub(lambda m: f"{m[1]}={REDACTED}" if is_secret_name(m[1]) else m[0], message)
    message = _TEXT_CREDENTIALS.sub(rf"\1\2{REDACTED}", message)
    return re.sub(r"(\w+://[^/\s:@]+):[^@\s/]+@", rf"\1:{REDACTED}@", message)
