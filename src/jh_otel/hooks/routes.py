"""Route templates: a tornado route pattern and its handler -> ``/hub/api/users/{user_name}/server``.

Used as the ``endpoint`` label, so it must be bounded: one value per route, never a raw path. Unnamed groups take
the names of the handler method's arguments (tornado passes groups positionally), named groups keep their name.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable
from typing import Any

UNMATCHED = "unmatched"
_METHODS = ("get", "post", "put", "patch", "delete", "head", "options")
# Handlers that only exist to answer 404 inside a prefix: their requests matched no real route.
_NOT_FOUND_HANDLERS = frozenset({"API404"})


def argument_names(handler_class: type) -> list[str]:
    """Positional argument names of the first HTTP method the handler defines itself."""
    for name in _METHODS:
        method = getattr(handler_class, name, None)
        if method is None or getattr(method, "__qualname__", "").startswith("RequestHandler."):
            continue
        try:
            params = list(inspect.signature(method).parameters.values())[1:]
        except (TypeError, ValueError):
            return []
        kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        return [p.name for p in params if p.kind in kinds]
    return []


def _group_end(pattern: str, start: int) -> int:
    """Index just past the ``)`` closing the group opened at ``start``."""
    depth, i = 0, start
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            i = pattern.index("]", i + 2) + 1 if "]" in pattern[i + 2 :] else len(pattern)
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return len(pattern)


def template(pattern: str, names: list[str]) -> str:
    """The route template of a tornado pattern; groups become ``{name}``."""
    out: list[str] = []
    counter = iter(range(1, 1000))
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "(":
            end = _group_end(pattern, i)
            body = pattern[i + 1 : end - 1]
            if body.startswith(("?=", "?!", "?<=", "?<!")):
                pass  # lookarounds match no text
            elif body.startswith("?:"):
                out.append(template(body[2:], names))
            else:
                named = re.match(r"\?P<(\w+)>", body)
                if named:
                    out.append(f"{{{named.group(1)}}}")
                else:
                    n = next(counter)
                    out.append(f"{{{names.pop(0) if names else f'arg{n}'}}}")
            i = end
            if i < len(pattern) and pattern[i] in "?*+":
                i += 1
            continue
        if c == "\\" and i + 1 < len(pattern):
            out.append(pattern[i + 1])
            i += 2
            continue
        if c == "." and pattern[i + 1 : i + 2] in ("*", "+"):
            out.append("{path}")
            i += 2
            continue
        if c not in "^$?":
            out.append(c)
        i += 1
    return "".join(out)


class Routes:
    """Handler class -> its route templates, from the hub's handler table."""

    def __init__(self, handlers: Iterable[tuple[Any, ...]]) -> None:
        self._by_class: dict[type, list[tuple[re.Pattern[str], str]]] = {}
        for entry in handlers:
            pattern, handler_class = entry[0], entry[1]
            if not isinstance(pattern, str) or not isinstance(handler_class, type):
                continue
            if handler_class.__name__ in _NOT_FOUND_HANDLERS:
                continue
            try:
                compiled = re.compile(pattern + "$")
            except re.error:
                continue
            names = argument_names(handler_class)
            self._by_class.setdefault(handler_class, []).append((compiled, template(pattern, list(names))))

    def endpoint(self, handler_class: type, path: str) -> str:
        candidates = self._by_class.get(handler_class)
        if not candidates:
            return UNMATCHED
        if len(candidates) > 1:
            for compiled, tmpl in candidates:
                if compiled.match(path):
                    return tmpl
        return candidates[0][1]
