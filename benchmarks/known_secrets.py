"""Memory of :class:`jh_otel.tracing.scrubbing.KnownSecrets` at a busy hub's rate, per trace kept.

A hub at about 100 requests a second keeps some 12,000 traces' secrets for the 120 s TTL. The stream here is the
realistic mix's shape: 60 % of requests carry a user's three cookies (a login cookie of 200 characters, a session id
of 32, an ``_xsrf`` of 88) from 50 logged-in users, 40 % a server's 32-character token from 50 servers; each request
brings its own copies of the strings, as tornado parses them from its headers. The second row gives every request
values of its own (nothing to share): what each trace cost before the sets were shared.

    .venv/bin/python benchmarks/known_secrets.py      # about a second
"""

from __future__ import annotations

import random
import string
import tracemalloc

from jh_otel.tracing.scrubbing import KnownSecrets

TRACES = 11_000
USERS = 50


def _text(rng: random.Random, length: int) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=length))


def bytes_per_trace(repeated: bool, seed: int = 1) -> float:
    """tracemalloc's bytes still held per trace once ``TRACES`` requests' values were added and dropped."""
    rng = random.Random(seed)
    cookies = [(_text(rng, 200), _text(rng, 32), _text(rng, 88)) for _ in range(USERS)]
    tokens = [_text(rng, 32) for _ in range(USERS)]
    tracemalloc.start()  # the requests' strings are made from here on: what KnownSecrets keeps of them counts
    stream = []
    for _ in range(TRACES):
        if not repeated:
            values = [_text(rng, 200), _text(rng, 32), _text(rng, 88)] if rng.random() < 0.6 else [_text(rng, 32)]
        elif rng.random() < 0.6:
            values = ["".join(value) for value in cookies[rng.randrange(USERS)]]  # copies, as each request has
        else:
            values = ["".join(tokens[rng.randrange(USERS)])]
        stream.append((rng.getrandbits(128) | 1, values))
    known = KnownSecrets()
    for trace_id, values in stream:
        known.add(trace_id, values)
    del stream, values  # the requests are gone: what is left is what KnownSecrets keeps
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return held / len(known)


def main() -> None:
    shared = bytes_per_trace(repeated=True)
    distinct = bytes_per_trace(repeated=False)
    print(f"traces kept: {TRACES:,}")
    print(f"a user's cookies repeated (shared): {shared:,.0f} bytes a trace, {shared * TRACES / 2**20:.2f} MiB")
    print(f"every value distinct (nothing shared): {distinct:,.0f} bytes a trace, {distinct * TRACES / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
