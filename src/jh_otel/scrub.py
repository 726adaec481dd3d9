"""Credential scrubbing for telemetry: pure functions over URLs, headers, form fields, SQL and free text.

JupyterHub's own log scrubber (``jupyterhub/log.py``) is the minimum bar: URL parameters whose names contain
``token``, ``auth``, ``key``, ``code``, ``state`` or ``_xsrf``, the token paths of ``/api/authorizations``, and the
``Authorization`` and ``Cookie`` headers. jh_otel adds ``password`` and ``secret``, compares names without regard to
case or URL encoding (nested too: ``%2574oken`` is ``token`` encoded twice), and also covers URL user info,
fragments, ``Set-Cookie``, form fields, SQL literals and messages that echo any of these. Redacted values become
``[redacted]``; names stay, so a span still says *which* parameter was sent.

Every function here runs in time linear in its input, whatever the input: what they scrub is often what an
unauthenticated client sent. No regular expression can start a match at every character of a long run (each starts
at a token boundary, checked by a look-behind, or at a literal), their repeated parts are disjoint (nothing to
backtrack into), and token paths are found with ``str.find``; URL-encoded names are decoded a bounded number of
times. Callers that export text still bound how much of it they scan (:data:`MAX_SCANNED`, :func:`truncate`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from urllib.parse import unquote, urlsplit, urlunsplit

REDACTED = "[redacted]"
TRUNCATED = "[truncated]"
"""Appended to a value cut at the scanning bound (see :func:`truncate`)."""
MAX_SCANNED = 8 * 1024
"""Characters of one text value (an attribute, a query string, a message, a span name) that scrubbing reads and
exports. Scrubbing is linear, so the bound is about the exporter thread's time per span (it holds the GIL while the
hub's event loop waits): 8 KiB is above any URL a browser or JupyterHub's own clients send (tornado's default
header limit is 64 KiB, but JupyterHub's URLs and messages are well under 2 KiB) and costs well under 1 ms."""
MAX_SCANNED_STACKTRACE = 32 * 1024
"""The bound for ``exception.stacktrace``: a hub traceback through tornado, JupyterHub and SQLAlchemy frames is
often 5-15 KiB, and its last lines (the innermost frame and the exception) are the useful ones, so 8 KiB would cut
the most useful part of legitimate traces. 32 KiB still scrubs in a few milliseconds and only errors produce it."""
SECRET_NAME_PARTS = ("token", "auth", "key", "code", "state", "_xsrf", "password", "secret")
SECRET_PATH_PREFIXES = ("/api/authorizations/token/", "/api/authorizations/cookie/")
"""JupyterHub's token paths: everything after one of these is a credential."""
_SECRET_NAME_PART = re.compile("|".join(re.escape(part) for part in SECRET_NAME_PARTS))
MAX_NAME_LENGTH = 256
"""A parameter, field or header name longer than this is taken for a credential's (see :func:`is_secret_name`)."""
_UNQUOTE_ROUNDS = 4  # %252574oken is "token" encoded three times; a name is decoded at most this often
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization"})
_COOKIE_HEADERS = frozenset({"cookie", "set-cookie"})


def is_secret_name(name: str) -> bool:
    """Whether a parameter, field or header called ``name`` carries a credential (whatever its case or its URL
    encoding, applied up to a few times over). A name longer than :data:`MAX_NAME_LENGTH` is taken for a
    credential's: no real name is that long, and it is not worth decoding."""
    return len(name) > MAX_NAME_LENGTH or _is_secret_name(name)


@lru_cache(maxsize=4096)
def _is_secret_name(name: str) -> bool:
    """Names repeat (a query string of thousands of ``x=1``): each is decoded and searched once."""
    for _ in range(_UNQUOTE_ROUNDS):
        if "%" not in name:
            break
        decoded = unquote(name)
        if decoded == name:
            break
        name = decoded
    return _SECRET_NAME_PART.search(name.lower()) is not None


def find_secret_path(path: str) -> tuple[str, str] | None:
    """``(kept, credential)`` for a path holding one of JupyterHub's token paths: the text up to and including
    ``/api/authorizations/token`` (or ``cookie``), and everything after its slash; else ``None``."""
    found = [(i, i + len(prefix)) for prefix in SECRET_PATH_PREFIXES if (i := path.find(prefix)) >= 0]
    if not found:
        return None
    _, end = min(found)  # the first one: everything after it is the credential, later prefixes included
    if end >= len(path):  # nothing after it: no credential (and no later prefix either)
        return None
    return path[: end - 1], path[end:]


def _scrub_secret_path(path: str) -> str:
    found = find_secret_path(path)
    return path if found is None else f"{found[0]}/{REDACTED}"


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
    path = _scrub_secret_path(parts.path)
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


# String literals ('it''s'): the body's two alternatives start differently (no backtracking between them), and a
# literal left open runs to the end of the text (a statement cut at the bound, or a driver message echoing one), so
# the match never fails and is never retried. Then numbers that are not part of an identifier or a bound-parameter
# name: the look-behind lets a match start only at the first digit of a run.
_SQL_STRING = re.compile(r"'(?:[^']|'')*(?:'|\Z)")
_SQL_NUMBER = re.compile(r"(?<![\w:$?%.])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b")


def scrub_sql(statement: str) -> str:
    """A SQL statement with every literal value replaced by ``?`` (bound parameters are already placeholders); an
    unterminated string literal is a literal up to the end."""
    return _SQL_NUMBER.sub("?", _SQL_STRING.sub("?", statement))


# name=value: the look-behind lets a match start only at the first character of a name, not at every character of a
# long run of them (which made the pattern quadratic: each start scanned the whole run for an = that never came).
_TEXT_PAIRS = re.compile(r"(?<![\w.%-])([\w.%-]+)=([^&\s\"'<>;,]+)")
# token/bearer/basic at a word boundary (checked by the look-behind after the first letter), whitespace, then a
# credential: whitespace and credential characters are disjoint. Written to start with a character set, which the
# regex engine skips to in C: a leading (?i) and \b made it try every position of the text.
_TEXT_CREDENTIALS = re.compile(r"([TtBb](?<!\w.)(?ai:(?<=t)oken|(?<=b)(?:earer|asic)))(\s+)([A-Za-z0-9._~+/=-]{6,})")
# scheme://host:password@, from the "://" (a look-behind asks for a scheme's last character): one attempt per "://",
# never one per character of a long scheme-like word, and the host and the password stop at the next / (which every
# later :// holds), so no two attempts scan the same characters. Starting with the literal lets the engine skip to it.
_TEXT_USERINFO = re.compile(r"(:(?<=\w:)//[^/\s:@]+):[^@\s/]+@")


def scrub_text(message: str, secrets: Iterable[str] = ()) -> str:
    """Free text (an exception message, a log line) with credentials redacted.

    ``name=value`` pairs whose name carries a credential, ``token xxx`` / ``Bearer xxx`` / ``Basic xxx``
    credentials, URLs' user info, and every string in ``secrets`` (values known to be secret, such as the
    tokens of the request being recorded).
    """
    for secret in secrets:
        if secret:
            message = message.replace(secret, REDACTED)
    # each rule only where its literal is (str searches: far cheaper than a pattern over text it cannot match)
    if "=" in message:
        message = _TEXT_PAIRS.sub(lambda m: f"{m[1]}={REDACTED}" if is_secret_name(m[1]) else m[0], message)
    lowered = message.lower()
    if "token" in lowered or "bearer" in lowered or "basic" in lowered:
        message = _TEXT_CREDENTIALS.sub(rf"\1\2{REDACTED}", message)
    if "://" in message and "@" in message:
        message = _TEXT_USERINFO.sub(rf"\1:{REDACTED}@", message)
    return message


# what a cut can leave of a scheme credential too short for _TEXT_CREDENTIALS (searched in the last characters only)
_CUT_CREDENTIAL = re.compile(r"(?i)\b(?:token|bearer|basic)\s+([A-Za-z0-9._~+/=-]{1,5})\Z")
_CUT_TAIL = 64
_USERINFO_STOP = re.compile(r"[/@\s]")
_CUT_PASSES = 16  # overlapping occurrences of known secrets the cut may step back over


def truncate(text: str, limit: int, secrets: Iterable[str] = ()) -> str:
    """The first ``limit`` characters of ``text`` (all of it when shorter), cut so that no credential is left half.

    The cut moves back to the start of any of ``secrets`` it would split (the rules could no longer recognise the
    half left), of a URL's user-info password it would separate from its ``@``, and of a ``token``/``Bearer``/
    ``Basic`` credential it would leave shorter than the rule's six characters. Where the cut falls in a run of
    more than a few overlapping known secrets (a text made of the request's own credentials), the head is
    :data:`REDACTED` alone. The caller scrubs the head as usual and then appends :data:`TRUNCATED` (after scrubbing,
    so that no rule takes the marker for part of a value). Linear in ``limit`` and the secrets' lengths.
    """
    if len(text) <= limit:
        return text
    candidates = [secret for secret in secrets if len(secret) > 1]
    cut = max(limit, 0)
    for _ in range(_CUT_PASSES):
        moved = cut
        for secret in candidates:  # an occurrence starting before the cut and ending after it
            start = text.find(secret, max(0, cut - len(secret) + 1), cut + len(secret) - 1)
            if 0 <= start < moved:
                moved = start
        if moved == cut:
            break
        cut = moved
    else:
        return REDACTED
    head = text[:cut]
    scheme = head.rfind("://")
    if scheme > 0 and (head[scheme - 1].isalnum() or head[scheme - 1] == "_"):
        netloc = scheme + 3
        colon = head.find(":", netloc)
        if colon > netloc and _USERINFO_STOP.search(head, netloc) is None:  # user:pass... and no @ yet
            head = head[: colon + 1]
    match = _CUT_CREDENTIAL.search(head, max(0, len(head) - _CUT_TAIL))
    if match is not None:
        head = head[: match.start(1)]
    return head
