#!/usr/bin/env python
"""Spawn/stop churn: a plain hub against a jh_otel hub over 1,000 spawn/stop cycles of one user each.

Run from the repository root with the project's venv::

    .venv/bin/python benchmarks/churn.py             # 10 blocks of 100 cycles per hub, about 4 minutes
    .venv/bin/python benchmarks/churn.py --quick     # 3 blocks of 20 cycles: a smoke run
    .venv/bin/python benchmarks/churn.py --readme    # only render results-churn.json into benchmarks/README.md
    .venv/bin/python benchmarks/churn.py --hub-pythonpath /tmp/old/src   # the hubs run another jh_otel

Both hubs use tests/fastspawner.py's in-process spawner (a spawn is an asyncio listener in the hub's own loop), so a
cycle costs only JupyterHub's and jh_otel's own work. The jh_otel hub runs the e2e test's OpenTelemetry settings
(tests/e2e/test_spawn_churn.py): traces over OTLP/HTTP at full sampling and metrics ``prometheus,otlp`` to a live
in-process ``OTLPReceiver``. Blocks of cycles alternate between the hubs (ABBA), so machine drift hits both alike.
Measured: RSS at the end of the first block (cycle 100) and of the last (cycle 1,000) and the growth between them;
time and hub CPU per cycle over the blocks after the first (median, paired per-block ratio, 95 % confidence
interval of the mean ratio); the FastSpawner and User objects alive in each hub (``gc``) and the types that grew.
Prints a markdown table and writes benchmarks/results-churn.json. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import MIB, OTEL, PLAIN, VARIANTS, code_state, fmt, log, rss, stop_all, versions  # noqa: E402

import fastspawner  # noqa: E402
from hubproc import Hub, free_port, otel_env  # noqa: E402
from otlp_receiver import OTLPReceiver  # noqa: E402

# targets from the issue
RSS_GROWTH_DELTA_MIB_TARGET = 3.0  # jh_otel's RSS growth over the cycles at most this much above plain's
CYCLE_RATIO_TARGET = 1.1  # jh_otel's time per cycle at most this multiple of plain's

USER = "churn"
TYPES_TOP = 400  # gc-tracked types fetched for the growth diff (the hubs have some 2,000 types)
GROWERS = 15  # types reported per hub
README = Path(__file__).resolve().parent / "README.md"
BEGIN, END = "<!-- churn:begin -->", "<!-- churn:end -->"
# two-sided 95 % quantiles of Student's t, degrees of freedom 1..30 (no scipy in the venv)
T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean and its 95 % confidence interval (Student's t; the normal 1.96 beyond 30 degrees of freedom)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    df = len(values) - 1
    half = (T975[df - 1] if df <= len(T975) else 1.96) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def source_digest(init_file: str | None) -> str:
    """A digest of the jh_otel sources a hub imported (its package directory), to tell the checkout's code from
    another copy (``PYTHONPATH=/some/copy/src``) in the results."""
    if not init_file:
        return ""
    package = Path(init_file).parent
    digest = hashlib.sha1()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def hub_cpu_s(hub: Hub) -> float:
    times = psutil.Process(hub.proc.pid).cpu_times()
    return times.user + times.system


def run_block(hub: Hub, cycles: int) -> dict[str, Any]:
    """``cycles`` spawn/stop cycles, each timed; the hub's CPU over the block."""
    durations: list[float] = []
    statuses: Counter[str] = Counter()
    machine = psutil.cpu_times()
    cpu = hub_cpu_s(hub)
    started = time.monotonic()
    for _ in range(cycles):
        t = time.monotonic()
        spawned, stopped = fastspawner.cycle(hub, USER)
        durations.append(time.monotonic() - t)
        statuses[f"{spawned}/{stopped}"] += 1
    elapsed = time.monotonic() - started
    hub_cpu = hub_cpu_s(hub) - cpu
    busy, steal = machine_busy(machine, psutil.cpu_times())
    quantiles = statistics.quantiles(durations, n=20) if len(durations) > 1 else durations * 19
    return {
        "cycles": cycles,
        "seconds": round(elapsed, 3),
        "ms_per_cycle": round(1000 * elapsed / cycles, 2),
        "cycle_ms_median": round(1000 * statistics.median(durations), 2),
        "cycle_ms_p95": round(1000 * quantiles[18], 2),
        "hub_cpu_ms_per_cycle": round(1000 * hub_cpu / cycles, 2),
        # the whole machine's busy share (all cores) and hypervisor steal: other work on the machine shows here
        "machine_busy": busy,
        "machine_steal": steal,
        "statuses": dict(statuses),
    }


def machine_busy(before: Any, after: Any) -> tuple[float, float]:
    """Busy and steal shares of the machine's CPU time between two ``psutil.cpu_times()``."""
    fields = ("user", "system", "nice", "irq", "softirq")
    busy = sum(getattr(after, f, 0) - getattr(before, f, 0) for f in fields)
    idle = sum(getattr(after, f, 0) - getattr(before, f, 0) for f in ("idle", "iowait"))
    steal = getattr(after, "steal", 0) - getattr(before, "steal", 0)
    total = max(1e-9, busy + idle + steal)
    return round(busy / total, 3), round(steal / total, 3)


def checkpoint(hub: Hub, types: bool) -> dict[str, Any]:
    """RSS as it is (psutil, from outside), then the hub's own count report (after a full collection)."""
    memory = rss(hub)
    report = fastspawner.live(hub, **({"types": TYPES_TOP} if types else {}))
    return {
        **memory,
        "rss_after_gc_mib": round(report["rss_bytes"] / MIB, 1),
        "fastspawners": report["fastspawners"],
        "fastspawners_created": report["fastspawners_created"],
        "users": report["users"],
        "gc_objects": report["gc_objects"],
        "count_s": report["seconds"],
        **({"types": report["types"]} if types else {}),
    }


def growers(first: dict[str, int], last: dict[str, int], cycles: int) -> list[dict[str, Any]]:
    """The types whose live count grew most between two checkpoints (only the top TYPES_TOP are fetched, so a type
    new in ``last`` may have been present below the cut in ``first``)."""
    grown = Counter({name: count - first.get(name, 0) for name, count in last.items()})
    return [
        {"type": name, "grew": n, "per_cycle": round(n / cycles, 2), "at_end": last[name]}
        for name, n in grown.most_common(GROWERS)
        if n > 0
    ]


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    blocks = results["blocks"]
    first, last = blocks[0], blocks[-1]
    timed = blocks[1:] or blocks  # the first block is the warm-up and the RSS baseline
    summary: dict[str, Any] = {
        "rss_at_cycle": {"first": first["cycle"], "last": last["cycle"]},
        "timed_blocks": len(timed),
    }
    for variant in VARIANTS:
        summary[variant] = {
            "rss_first_mib": first[variant]["after"]["rss_mib"],
            "rss_last_mib": last[variant]["after"]["rss_mib"],
            "rss_growth_mib": round(last[variant]["after"]["rss_mib"] - first[variant]["after"]["rss_mib"], 1),
            "rss_after_gc_growth_mib": round(
                last[variant]["after"]["rss_after_gc_mib"] - first[variant]["after"]["rss_after_gc_mib"], 1
            ),
            "ms_per_cycle_median": round(statistics.median(b[variant]["ms_per_cycle"] for b in timed), 2),
            "hub_cpu_ms_per_cycle_median": round(
                statistics.median(b[variant]["hub_cpu_ms_per_cycle"] for b in timed), 2
            ),
            "fastspawners_live_at_end": last[variant]["after"]["fastspawners"],
            "fastspawners_created": last[variant]["after"]["fastspawners_created"],
            "users_before": results["before"][variant]["users"],
            "users_at_end": last[variant]["after"]["users"],
            "growers": growers(
                first[variant]["after"]["types"], last[variant]["after"]["types"], last["cycle"] - first["cycle"]
            ),
        }
    for key in ("ms_per_cycle", "hub_cpu_ms_per_cycle"):
        ratios = [b[OTEL][key] / b[PLAIN][key] for b in timed]
        mean, low, high = mean_ci(ratios)
        summary[f"{key}_ratio"] = {
            "per_block": [round(r, 3) for r in ratios],
            "median": round(statistics.median(ratios), 3),
            "mean": round(mean, 3),
            "ci95": [round(low, 3), round(high, 3)],
        }
    summary["rss_growth_delta_mib"] = round(summary[OTEL]["rss_growth_mib"] - summary[PLAIN]["rss_growth_mib"], 1)
    spans = results.get("spans", {})
    cycles = sum(b[OTEL]["cycles"] for b in blocks)
    summary["spans_per_cycle"] = round(sum(spans.values()) / cycles, 1) if spans else None
    return summary


def verdict_ci(low: float, high: float, target: float) -> str:
    """Met if the whole 95 % interval is within the target, not met if none of it is, else unclear."""
    if high <= target:
        return "yes"
    if low > target:
        return "no"
    return "unclear (CI straddles the target)"


def table(results: dict[str, Any]) -> str:
    s = results["summary"]
    p, o = s[PLAIN], s[OTEL]
    first, last = s["rss_at_cycle"]["first"], s["rss_at_cycle"]["last"]
    t, c = s["ms_per_cycle_ratio"], s["hub_cpu_ms_per_cycle_ratio"]
    timed = f"median of blocks 2-{s['timed_blocks'] + 1}" if s["timed_blocks"] < len(results["blocks"]) else "median"
    rows = [
        (
            f"FastSpawners alive after the last stop (of {fmt(o['fastspawners_created'])} made)",
            fmt(p["fastspawners_live_at_end"]),
            fmt(o["fastspawners_live_at_end"]),
            f"{o['fastspawners_live_at_end'] - p['fastspawners_live_at_end']:+d}",
            "<= plain",
            "yes" if o["fastspawners_live_at_end"] <= p["fastspawners_live_at_end"] else "no",
        ),
        (
            "User objects alive, before -> after",
            f"{p['users_before']} -> {p['users_at_end']}",
            f"{o['users_before']} -> {o['users_at_end']}",
            "",
            "no growth",
            "yes" if o["users_at_end"] <= o["users_before"] else "no",
        ),
        (f"hub RSS at cycle {first:,}, MiB", fmt(p["rss_first_mib"]), fmt(o["rss_first_mib"]), "", "", ""),
        (f"hub RSS at cycle {last:,}, MiB", fmt(p["rss_last_mib"]), fmt(o["rss_last_mib"]), "", "", ""),
        (
            f"RSS growth, cycle {first:,} -> {last:,}, MiB",
            f"{p['rss_growth_mib']:+.1f}",
            f"{o['rss_growth_mib']:+.1f}",
            f"{s['rss_growth_delta_mib']:+.1f} MiB",
            f"<= +{RSS_GROWTH_DELTA_MIB_TARGET:g} MiB",
            "yes" if s["rss_growth_delta_mib"] <= RSS_GROWTH_DELTA_MIB_TARGET else "no",
        ),
        (
            f"time per cycle, ms ({timed}; ratio: paired per block, mean [95 % CI])",
            fmt(p["ms_per_cycle_median"], 1),
            fmt(o["ms_per_cycle_median"], 1),
            f"{t['mean']:.2f}x [{t['ci95'][0]:.2f}, {t['ci95'][1]:.2f}]",
            f"<= {CYCLE_RATIO_TARGET:g}x",
            verdict_ci(t["ci95"][0], t["ci95"][1], CYCLE_RATIO_TARGET),
        ),
        (
            "hub CPU per cycle, ms (same blocks and ratio)",
            fmt(p["hub_cpu_ms_per_cycle_median"], 1),
            fmt(o["hub_cpu_ms_per_cycle_median"], 1),
            f"{c['mean']:.2f}x [{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}]",
            "",
            "",
        ),
        ("spans exported per cycle", "—", fmt(s["spans_per_cycle"]), "", "", ""),
    ]
    lines = ["| metric | plain | jh_otel | difference or ratio | target | met |", "|---|---:|---:|---:|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(lines)


def render_readme(results: dict[str, Any]) -> None:
    """Put the table, and the run it came from, between the markers in benchmarks/README.md."""
    text = README.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{README} has no {BEGIN} ... {END} markers")
    code = results["code"]
    hub_code = results["hub_jh_otel"]
    origin = "the checkout" if hub_code["file"].startswith(str(ROOT)) else hub_code["file"]
    s = results["summary"]
    block = (
        f"{BEGIN}\n"
        f"Run {results['started_at'][:10]} ({results['versions']['cpus']} cores; {s['timed_blocks'] + 1} blocks of "
        f"{results['block_cycles']} cycles per hub; code {code['head']}"
        f"{' + uncommitted changes' if code['uncommitted'] else ''}, the jh_otel hub ran {origin} "
        f"(sources {hub_code['digest']}); `benchmarks/results-churn.json`):\n\n"
        f"{table(results)}\n\n"
        f"Per-block time ratios: {', '.join(f'{r:.2f}' for r in s['ms_per_cycle_ratio']['per_block'])}.\n"
        f"{END}"
    )
    README.write_text(re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S))
    log(f"rendered the table into {README}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=10, help="blocks of cycles per hub (default 10)")
    parser.add_argument("--block-cycles", type=int, default=100, help="cycles per block (default 100)")
    parser.add_argument("--quick", action="store_true", help="3 blocks of 20 cycles: a smoke run")
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parent / "results-churn.json")
    parser.add_argument("--keep", action="store_true", help="keep the hubs' working directories (and logs)")
    parser.add_argument(
        "--hub-pythonpath",
        metavar="PATH",
        help="put PATH first on the hubs' path only, e.g. an older commit's src: measure that jh_otel",
    )
    parser.add_argument("--readme", action="store_true", help="only render --output into benchmarks/README.md")
    args = parser.parse_args()
    if args.readme:
        render_readme(json.loads(args.output.read_text()))
        return 0
    if args.quick:
        args.blocks, args.block_cycles = 3, 20
    if args.blocks < 2 or args.block_cycles < 1:
        parser.error("at least 2 blocks (the first is the RSS baseline) of at least 1 cycle")

    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="jh_otel_bench_churn_"))
    results: dict[str, Any] = {
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "blocks_per_hub": args.blocks,
        "block_cycles": args.block_cycles,
        "versions": versions(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "workdir": str(workdir),
        "code": code_state(),
        "blocks": [],
    }
    receiver = OTLPReceiver().start()
    hubs: dict[str, Hub] = {}
    ok = False
    try:
        # the test's environment; the plain hub gets it too, and without the wrapper nothing reads it
        env = otel_env(
            receiver.http_endpoint,
            traces="otlp",
            metrics="prometheus,otlp",
            exporter_port=free_port(),
            extra={"OTEL_TRACES_SAMPLER": "always_on"},
        )
        if args.hub_pythonpath:  # the hubs' path only: this process keeps the checkout's tests/hubproc.py and jh_otel
            env["PYTHONPATH"] = args.hub_pythonpath
        results["otel_env"] = env
        for variant in VARIANTS:
            # in hubs before it starts: a hub that fails to come up is still stopped below
            hub = hubs[variant] = Hub(
                workdir / variant, env, wrapper=variant == OTEL, extra_config=fastspawner.hub_config()
            )
            hub.start(timeout=120)
            if hub.api("POST", f"/users/{USER}").status_code != 201:
                raise RuntimeError(f"creating {USER} on the {variant} hub failed")
            log(f"{variant} hub up (pid {hub.proc.pid}, hub port {hub.hub_port})")
        report = fastspawner.live(hubs[OTEL])
        results["hub_jh_otel"] = {"file": report["jh_otel_file"], "digest": source_digest(report["jh_otel_file"])}
        if not report["jh_otel_file"]:
            raise RuntimeError("jh_otel is not loaded in the jh_otel hub")
        log(f"jh_otel hub runs {report['jh_otel_file']} (sources {results['hub_jh_otel']['digest']})")
        results["before"] = {v: checkpoint(h, types=False) for v, h in hubs.items()}
        fastspawner.drain_spans(receiver)  # startup's spans are not the cycles'
        spans: Counter[str] = Counter()
        for index in range(args.blocks):
            block: dict[str, Any] = {"cycle": (index + 1) * args.block_cycles}
            # ABBA: which hub goes first alternates, so neither always follows the other's export burst
            for variant in VARIANTS if index % 2 == 0 else VARIANTS[::-1]:
                block[variant] = run_block(hubs[variant], args.block_cycles)
                if variant == OTEL:
                    # the hub's last spans flushed (and counted) before anything else is measured
                    spans += fastspawner.drain_spans(receiver)
                block[variant]["after"] = checkpoint(hubs[variant], types=index in (0, args.blocks - 1))
            results["blocks"].append(block)
            log(
                f"block {index + 1}/{args.blocks} (cycle {block['cycle']}): "
                + "; ".join(
                    f"{v} {block[v]['ms_per_cycle']} ms/cycle, RSS {block[v]['after']['rss_mib']} MiB, "
                    f"{block[v]['after']['fastspawners']} FastSpawners alive"
                    for v in VARIANTS
                )
            )
        results["spans"] = dict(spans.most_common())
        results["summary"] = summarise(results)
        results["shutdown_s"] = stop_all(hubs)
        ok = True
    finally:
        stop_all(hubs)
        receiver.stop()
        results["run_time_s"] = round(time.monotonic() - started, 1)
        results["code_at_end"] = code_state()
        results["code_changed_during_run"] = results["code_at_end"] != results["code"]
        if results["code_changed_during_run"]:
            log(f"WARNING: src/ or tests/ changed during the run: {results['code']} -> {results['code_at_end']}")
        if ok:
            args.output.write_text(json.dumps(results, indent=2) + "\n")
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"failed; hub logs kept in {workdir}")
    print()
    print(table(results))
    print()
    for variant in VARIANTS:
        grown = ", ".join(f"{g['type']} +{g['per_cycle']}" for g in results["summary"][variant]["growers"][:8])
        print(f"{variant}: types grown per cycle between the first and the last block: {grown or 'none'}")
    print(f"\nrun time {results['run_time_s']}s; results: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
