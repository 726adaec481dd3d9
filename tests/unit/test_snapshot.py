"""Snapshot: counts from the hub's state in a constant number of queries; a failed refresh keeps the last one."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from jupyterhub import orm
from sqlalchemy import event, inspect

from jh_otel.snapshot import ProcessSampler, SnapshotRefresher, count_users, take_snapshot, walk_servers
from sqlitelock import locked, longest_gap

NOW = datetime.now(timezone.utc).replace(tzinfo=None)


def database(users: int, url: str = "sqlite://"):
    db = orm.new_session_factory(url)()
    db.add_all(
        orm.User(name=f"user{i}", last_activity=NOW - timedelta(days=i % 40) if i % 5 else None) for i in range(users)
    )
    db.commit()
    return db


def count_queries(db, action):
    statements = []

    def listener(conn, cursor, statement, *args):
        if statement != "SELECT 1":  # the pool's pre-ping, not a query of ours
            statements.append(statement)

    event.listen(db.get_bind(), "before_cursor_execute", listener)
    try:
        result = action()
    finally:
        event.remove(db.get_bind(), "before_cursor_execute", listener)
    return result, statements


def expected_active(users: int, days: int) -> int:
    return sum(1 for i in range(users) if i % 5 and i % 40 < days)


@pytest.mark.parametrize("users", [10, 2000])
def test_user_counts_cost_one_query_whatever_the_number_of_users(users: int) -> None:
    """Total and active users (24h, 7d, 30d) are right and cost one query at 10 and at 2000 users."""
    db = database(users)
    (total, active), statements = count_queries(db, lambda: count_users(db, NOW + timedelta(seconds=1)))
    assert len(statements) == 1
    assert total == users
    assert active == {
        ("24h",): expected_active(users, 1),
        ("7d",): expected_active(users, 7),
        ("30d",): expected_active(users, 30),
    }


def spawner(pending=None, ready=False, **more):
    return SimpleNamespace(pending=pending, ready=ready, **more)


def test_servers_are_counted_from_in_memory_state() -> None:
    """Ready servers are running; pending ones are counted by kind and not as running."""
    users = {
        "a": SimpleNamespace(name="a", spawners={"": spawner(ready=True), "x": spawner(pending="spawn")}),
        "b": SimpleNamespace(name="b", spawners={"": spawner(pending="stop"), "y": spawner(ready=True)}),
        "c": SimpleNamespace(name="c", spawners={"": spawner()}),
    }
    servers = walk_servers(users)
    assert servers.running == 2
    assert servers.pending == {("spawn",): 1, ("stop",): 1}


def test_the_walk_lists_local_processes_and_pending_spawns() -> None:
    """Ready servers with a local pid (per-server usage) and each pending spawn's start and time limit (the
    spawners health check), in the same walk."""
    started = datetime(2026, 1, 1, 12, 0, 0)  # naive UTC, as JupyterHub stores it
    orm = SimpleNamespace(started=started)
    users = {
        1: SimpleNamespace(
            name="alice",
            spawners={
                "": spawner(ready=True, pid=101),
                "gpu": spawner(pending="spawn", orm_spawner=orm, start_timeout=600, http_timeout=30),
            },
        ),
        2: SimpleNamespace(name="bob", spawners={"": spawner(ready=True, pid=0)}),  # no local process
        3: SimpleNamespace(name="k8s", spawners={"": spawner(ready=True)}),  # no pid attribute at all
        4: SimpleNamespace(name="carol", spawners={"": spawner(pending="stop", orm_spawner=orm)}),  # a stop
    }
    servers = walk_servers(users)
    assert servers.local == (("alice", "", 101),)
    assert servers.spawns == (("alice/gpu", started.replace(tzinfo=timezone.utc).timestamp(), 630.0),)


@pytest.mark.parametrize("url", ["sqlite://", "file"])
def test_take_snapshot_reads_everything_and_leaves_the_session_alone(url: str, tmp_path) -> None:
    """A snapshot holds users, servers and process figures; the hub's loaded objects are not expired."""
    db = database(20, f"sqlite:///{tmp_path / 'hub.sqlite'}" if url == "file" else url)
    loaded = db.query(orm.User).all()
    app = SimpleNamespace(db=db, users={"a": SimpleNamespace(spawners={"": spawner(ready=True)})})
    snap = take_snapshot(app, ProcessSampler())
    assert snap.total_users == 20 and snap.running_servers == 1
    assert snap.hub_memory_usage_bytes > 0
    assert snap.hub_memory_total_bytes >= snap.hub_memory_usage_bytes
    assert snap.hub_cpu_usage_percent >= 0
    assert not any(inspect(user).expired for user in loaded)


def test_there_is_no_snapshot_before_the_first_refresh_and_a_failed_refresh_keeps_the_last() -> None:
    """Before its first refresh the refresher has no snapshot (the gauges are absent, not zero); if the database
    fails, it logs and keeps serving the last good snapshot."""
    db = database(3)
    app = SimpleNamespace(db=db, users={})
    refresher = SnapshotRefresher(app, 1)
    assert refresher() is None
    asyncio.run(refresher.refresh())
    good = refresher()
    assert good is not None and good.total_users == 3
    app.db = SimpleNamespace(get_bind=lambda: 1 / 0)
    asyncio.run(refresher.refresh())
    assert refresher() is good


class _Records(logging.Handler):
    """Collects records (JupyterHub's alembic logging config replaces the root handlers pytest's caplog uses)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_refresh_queries_a_database_file_off_the_loop_and_survives_a_lock(tmp_path) -> None:
    """With a database file, the users query runs in a thread with a timeout: a file another process holds locked
    delays no tick of the event loop by more than a fraction of the timeout, and the counts keep their last values
    with one warning."""
    path = tmp_path / "hub.sqlite"
    db = database(4, f"sqlite:///{path}")
    app = SimpleNamespace(db=db, users={"a": SimpleNamespace(spawners={"": spawner(pending="spawn")})})
    refresher = SnapshotRefresher(app, 1)
    refresher.QUERY_TIMEOUT = 0.3
    asyncio.run(refresher.refresh())
    assert refresher() is not None and refresher().total_users == 4 and refresher().pending_servers == 1
    db.commit()
    records = _Records()
    logging.getLogger("jh_otel.snapshot").addHandler(records)
    try:
        with locked(path):
            _, gap = asyncio.run(longest_gap(refresher.refresh()))
    finally:
        logging.getLogger("jh_otel.snapshot").removeHandler(records)
    assert gap < 0.2
    assert refresher().total_users == 4  # the last counts
    assert [m for m in records.messages if "users query" in m] == [
        "jh_otel: the users query of the hub-state snapshot failed (TimeoutError); user counts keep their last values"
    ]
