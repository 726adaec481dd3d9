"""Spawn/stop cycles (the harness's ``cycles`` kind): churn with the in-process FastSpawner, or real servers.

One user, ``churn``; a cycle is ``POST /hub/api/users/churn/server`` then ``DELETE``, on the hub's own port, each
waited for (201/204, or 202 and polling the user model). Blocks of cycles alternate between the hubs (ABBA: which hub
goes first alternates), so drift of the machine hits both alike. After each candidate block the run waits until no
span export has arrived for a second longer than the hub's batch schedule delay (the SDK's 5 s), so that the block's
spans are counted (then dropped from the receiver) and out of the hub's queue before its checkpoint.

With the FastSpawner (``tests/fastspawner.py``): RSS (``psutil``, from outside) at the end of the first block and of
the last, and the growth between them; time and hub CPU per cycle over the blocks after the first (the first is the
warm-up and the RSS baseline), paired per block; after every block the hub's own count of live ``FastSpawner`` and
``User`` objects after a full ``gc.collect()`` (``GET /hub/api/fastspawner/live``), after the first and last block
the most numerous gc-tracked types, and the types that grew. With real servers (``SimpleLocalProcessSpawner``):
start and stop times per cycle.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from typing import Any

import requests
from hubs import AUTH, MIB, log, machine_share, machine_times, rss, url
from stats import mean_ci

import fastspawner
from hubproc import Hub

USER = "churn"
TYPES_TOP = 400  # gc-tracked types fetched for the growth diff (the hubs have some 2,000 types)
GROWERS = 15  # types reported per hub


def hub_cpu_s(hub: Hub) -> float:
    import psutil

    times = psutil.Process(hub.proc.pid).cpu_times()
    return times.user + times.system


def real_cycle(hub: Hub, name: str, timeout: float = 120.0) -> tuple[float, float]:
    """Start and stop a real server; the seconds each took (until ready, until gone)."""
    t0 = time.monotonic()
    response = requests.post(url(hub, f"/hub/api/users/{name}/server"), headers=AUTH, timeout=timeout)
    if response.status_code not in (201, 202):
        raise RuntimeError(f"spawn of {name}: {response.status_code} {response.text[:300]}")
    hub.wait_server(name, ready=True, timeout=timeout)
    started = time.monotonic() - t0
    t1 = time.monotonic()
    response = requests.delete(url(hub, f"/hub/api/users/{name}/server"), headers=AUTH, timeout=timeout)
    if response.status_code not in (202, 204):
        raise RuntimeError(f"stop of {name}: {response.status_code} {response.text[:300]}")
    hub.wait_server(name, ready=False, timeout=timeout)
    return started, time.monotonic() - t1


def run_block(hub: Hub, cycles: int, fast: bool) -> dict[str, Any]:
    durations: list[float] = []
    starts: list[float] = []
    stops: list[float] = []
    statuses: Counter[str] = Counter()
    machine = machine_times()
    cpu = hub_cpu_s(hub)
    started = time.monotonic()
    for _ in range(cycles):
        t = time.monotonic()
        if fast:
            spawned, stopped = fastspawner.cycle(hub, USER)
            statuses[f"{spawned}/{stopped}"] += 1
        else:
            start_s, stop_s = real_cycle(hub, USER)
            starts.append(start_s)
            stops.append(stop_s)
        durations.append(time.monotonic() - t)
    elapsed = time.monotonic() - started
    hub_cpu = hub_cpu_s(hub) - cpu
    quantiles = statistics.quantiles(durations, n=20) if len(durations) > 1 else durations * 19
    block = {
        "cycles": cycles,
        "seconds": round(elapsed, 3),
        "ms_per_cycle": round(1000 * elapsed / cycles, 2),
        "cycle_ms_median": round(1000 * statistics.median(durations), 2),
        "cycle_ms_p95": round(1000 * quantiles[18], 2),
        "hub_cpu_ms_per_cycle": round(1000 * hub_cpu / cycles, 2),
        **machine_share(machine, machine_times()),
        "statuses": dict(statuses),
    }
    if starts:
        block["start_s_median"] = round(statistics.median(starts), 3)
        block["stop_s_median"] = round(statistics.median(stops), 3)
    return block


def checkpoint(hub: Hub, fast: bool, types: bool) -> dict[str, Any]:
    """RSS as it is (from outside), then, with the FastSpawner, the hub's own count after a full collection."""
    memory = rss(hub)
    if not fast:
        return memory
    report = fastspawner.live(hub, **({"types": TYPES_TOP} if types else {}))
    return {
        **memory,
        "rss_after_gc_mib": round(report["rss_bytes"] / MIB, 1),
        "fastspawners": report["fastspawners"],
        "fastspawners_created": report["fastspawners_created"],
        "users": report["users"],
        "gc_objects": report["gc_objects"],
        "jh_otel_file": report.get("jh_otel_file"),
        **({"types": report["types"]} if types else {}),
    }


def growers(first: dict[str, int], last: dict[str, int], cycles: int) -> list[dict[str, Any]]:
    """The types whose live count grew most between two checkpoints (only the top TYPES_TOP are fetched)."""
    grown = Counter({name: count - first.get(name, 0) for name, count in last.items()})
    return [
        {"type": name, "grew": n, "per_cycle": round(n / cycles, 2), "at_end": last[name]}
        for name, n in grown.most_common(GROWERS)
        if n > 0
    ]


def run(
    hubs: dict[str, Hub], labels: tuple[str, str], receiver: Any, blocks: int, block_cycles: int, fast: bool
) -> dict:
    _, cand = labels
    for label, hub in hubs.items():
        if hub.api("POST", f"/users/{USER}").status_code != 201:
            raise RuntimeError(f"creating {USER} on the {label} hub failed")
    results: dict[str, Any] = {"blocks_per_hub": blocks, "block_cycles": block_cycles, "blocks": []}
    results["before"] = {label: checkpoint(hub, fast, types=False) for label, hub in hubs.items()}
    # the candidate's last spans wait in its batch processor for up to its schedule delay (the SDK's 5 s): wait
    # longer than that for quiet, so that each block's spans are in (and out of the hub's memory) before the checkpoint
    delay_s = float(hubs[cand].env.get("OTEL_BSP_SCHEDULE_DELAY", "5000")) / 1000
    quiet = {"quiet": delay_s + 1.0, "timeout": delay_s + 15.0}
    fastspawner.drain_spans(receiver, **quiet)  # startup's spans are not the cycles'
    spans: Counter[str] = Counter()
    for index in range(blocks):
        block: dict[str, Any] = {"cycle": (index + 1) * block_cycles}
        for label in labels if index % 2 == 0 else labels[::-1]:
            block[label] = run_block(hubs[label], block_cycles, fast)
            if label == cand:
                spans += fastspawner.drain_spans(receiver, **quiet)  # the hub's last spans in before anything else
            block[label]["after"] = checkpoint(hubs[label], fast, types=fast and index in (0, blocks - 1))
        results["blocks"].append(block)
        log(
            f"  block {index + 1}/{blocks} (cycle {block['cycle']}): "
            + "; ".join(
                f"{label} {block[label]['ms_per_cycle']} ms/cycle, RSS {block[label]['after']['rss_mib']} MiB"
                + (f", {block[label]['after']['fastspawners']} FastSpawners alive" if fast else "")
                for label in labels
            )
        )
    results["spans"] = dict(spans.most_common())
    results["summary"] = summarise(results, labels, fast)
    return results


def summarise(results: dict[str, Any], labels: tuple[str, str], fast: bool) -> dict[str, Any]:
    base, cand = labels
    blocks = results["blocks"]
    first, last = blocks[0], blocks[-1]
    timed = blocks[1:] or blocks
    summary: dict[str, Any] = {
        "rss_at_cycle": {"first": first["cycle"], "last": last["cycle"]},
        "timed_blocks": len(timed),
    }
    for label in labels:
        s: dict[str, Any] = {
            "rss_first_mib": first[label]["after"]["rss_mib"],
            "rss_last_mib": last[label]["after"]["rss_mib"],
            "rss_growth_mib": round(last[label]["after"]["rss_mib"] - first[label]["after"]["rss_mib"], 1),
            "ms_per_cycle_median": round(statistics.median(b[label]["ms_per_cycle"] for b in timed), 2),
            "hub_cpu_ms_per_cycle_median": round(statistics.median(b[label]["hub_cpu_ms_per_cycle"] for b in timed), 2),
        }
        if fast:
            after_first, after_last = first[label]["after"], last[label]["after"]
            s.update(
                rss_after_gc_growth_mib=round(after_last["rss_after_gc_mib"] - after_first["rss_after_gc_mib"], 1),
                fastspawners_live_at_end=after_last["fastspawners"],
                fastspawners_created=after_last["fastspawners_created"],
                users_before=results["before"][label]["users"],
                users_at_end=after_last["users"],
                growers=growers(after_first["types"], after_last["types"], last["cycle"] - first["cycle"]),
            )
        else:
            s.update(
                start_s_median=round(statistics.median(b[label]["start_s_median"] for b in blocks), 3),
                stop_s_median=round(statistics.median(b[label]["stop_s_median"] for b in blocks), 3),
            )
        summary[label] = s
    summary["cycle_ratio"] = mean_ci([b[cand]["ms_per_cycle"] / b[base]["ms_per_cycle"] for b in timed])
    summary["cpu_ratio"] = mean_ci([b[cand]["hub_cpu_ms_per_cycle"] / b[base]["hub_cpu_ms_per_cycle"] for b in timed])
    summary["rss_growth_delta_mib"] = round(summary[cand]["rss_growth_mib"] - summary[base]["rss_growth_mib"], 1)
    cycles = sum(b[cand]["cycles"] for b in blocks)
    summary["spans_per_cycle"] = round(sum(results.get("spans", {}).values()) / cycles, 1) if cycles else None
    return summary
