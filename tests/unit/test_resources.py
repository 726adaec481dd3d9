"""Per-server resource usage: a process tree's CPU and memory as psutil sees them, bounded user names."""

from __future__ import annotations

import subprocess
import sys
import time
from types import SimpleNamespace

import psutil
import pytest

from jh_otel.custom import UserLabels
from jh_otel.resources import ResourceSampler, tree_usage

# a parent holding 40 MB with a child (a "kernel") holding 60 MB and burning CPU
TREE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "x = bytearray(60_000_000)\\nwhile True: pass"])
x = bytearray(40_000_000)
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.fixture
def tree():
    parent = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    time.sleep(0.5)
    yield parent.pid, child_pid
    for pid in (child_pid, parent.pid):
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass
    parent.wait(10)


def test_tree_usage_is_the_sum_over_the_server_and_its_children(tree) -> None:
    """``tree_usage`` gives a server's RSS within 10 % of the sum over it and its child (over 100 MB) and positive CPU
    seconds, and ``None`` for a process that does not exist."""
    parent, child = tree
    cpu, rss = tree_usage(parent)
    expected_rss = sum(psutil.Process(pid).memory_info().rss for pid in tree)
    assert rss == pytest.approx(expected_rss, rel=0.1)
    assert rss > 100_000_000
    assert cpu > 0
    assert tree_usage(2**22 + 12345) is None  # no such process


def test_the_sampler_gives_cpu_percent_between_samples_and_memory(tree) -> None:
    """The sampler's first CPU reading of a server is 0 and the next, a second later, the busy tree's percent (at least
    50), with its memory over 100 MB."""
    parent, _ = tree
    instruments = SimpleNamespace()
    sampler = ResourceSampler(lambda: None, instruments, UserLabels(10), interval=1)
    first = sampler.sample([("alice", "", parent)])
    assert first[("cpu", "alice", "")] == 0.0  # no previous sample yet
    time.sleep(1.0)
    second = sampler.sample([("alice", "", parent)])
    assert 50 <= second[("cpu", "alice", "")] <= 100 * psutil.cpu_count() + 5  # the busy child: about one core
    assert second[("memory", "alice", "")] > 100_000_000


def test_users_past_the_cap_are_summed_as_other(tree) -> None:
    """With a cap of one user name, the other users' servers are read as ``_other`` under their own server names, the
    default server's memory being bob's (the same tree as alice's)."""
    parent, _ = tree
    sampler = ResourceSampler(lambda: None, SimpleNamespace(), UserLabels(1), interval=1)
    readings = sampler.sample([("alice", "", parent), ("bob", "", parent), ("carol", "x", parent)])
    assert {key[1] for key in readings} == {"alice", "_other"}
    memory = readings[("memory", "alice", "")]
    assert readings[("memory", "_other", "")] == pytest.approx(memory, rel=0.1)
    assert ("memory", "_other", "x") in readings
