"""The harness's measurement kinds: load (paired throughput rounds), shutdown, scrape, latency; their summaries.

``load``: both hubs run at the same time and only one is loaded at any moment. After an unmeasured warm-up on each,
rounds alternate ABBA (baseline, candidate; candidate, baseline; ...); each round gives a paired ratio
candidate/baseline of throughput (successful requests / elapsed) and of hub CPU per request (``psutil``
``cpu_times()`` user+system of the hub process over the load, divided by its successful requests), and the
scenario's estimate is the mean paired ratio with its 95 % confidence interval. RSS (``memory_full_info``) after the
last round. Then, for a hub under the wrapper, every span its exports carried that started during the load is
counted: requests sent minus ``SERVER`` spans received = spans lost.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import costprobe
import hubs as hubmod
import loadgen
import requests
from hubs import AUTH, HUB_LABEL, log, machine_share, machine_times, rss, url
from scenarios import Op, Scenario, Target, param
from stats import judge, mean_ci

from hubproc import Hub

SERVER_KIND = 2  # opentelemetry.proto.trace.v1.Span.SPAN_KIND_SERVER
FLUSH_TIMEOUT_S = 30.0  # how long to wait for the hub's batch span processor after the load
FLUSH_QUIET_S = 7.0  # ... or until no new span arrived for longer than the SDK's 5 s schedule delay
MAX_ERROR_SHARE = 0.01  # a run with more failed requests than this is reported as invalid


def op_spec(op: Op) -> dict[str, Any]:
    """An op as the load generator child takes it (JSON)."""
    spec = asdict(op)
    for step in spec["steps"]:
        step["expect"] = list(step["expect"])
        step["headers"] = dict(step["headers"])
    return spec


def wrk_request(scenario: Scenario) -> tuple[str, dict[str, str]] | None:
    """(path, headers) when the mix is one static GET that wrk can send; else None."""
    if len(scenario.mix) != 1:
        return None
    op = scenario.mix[0]
    if len(op.steps) != 1 or op.auth not in ("none", "service") or op.pool:
        return None
    step = op.steps[0]
    if step.method != "GET" or step.body is not None or "{" in step.path or step.expect != (200,):
        return None
    return step.path, {**AUTH, **step.headers} if op.auth == "service" else dict(step.headers)


def traced(hub: Hub) -> bool:
    """Whether jh_otel makes (and exports) request spans in this hub."""
    disabled = {name.strip() for name in hub.env.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(",")}
    return hub.wrapper and hub.env.get("OTEL_TRACES_EXPORTER", "otlp") != "none" and "jupyterhub" not in disabled


# --------------------------------------------------------------------------
# Spans
# --------------------------------------------------------------------------


def count_spans(receiver: Any, labels: list[str], t0: int, t1: int) -> dict[str, dict[str, Any]]:
    """Per hub label: the spans that started between t0 and t1 (``time.time_ns()``, the SDK's clock too)."""
    out = {label: {"spans": 0, "server": 0, "sql": 0, "names": Counter()} for label in labels}
    for request in receiver.requests("traces"):
        for resource_spans in request.message.resource_spans:
            label = next((a.value.string_value for a in resource_spans.resource.attributes if a.key == HUB_LABEL), None)
            counts = out.get(label)
            if counts is None:
                continue
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    if not t0 <= span.start_time_unix_nano <= t1:
                        continue
                    counts["spans"] += 1
                    counts["names"][span.name] += 1
                    if span.kind == SERVER_KIND:
                        counts["server"] += 1
                    elif any(a.key.startswith("db.") for a in span.attributes):
                        counts["sql"] += 1
    return out


def account_spans(receiver: Any, sent: dict[str, int], t0: int, t1: int, expected: bool = True) -> dict[str, Any]:
    """Wait until every request sent to the traced hubs has its ``SERVER`` span (or nothing new arrived for
    FLUSH_QUIET_S, or FLUSH_TIMEOUT_S passed); then spans per request and spans lost, per hub. ``expected``: whether
    every request should make a span (not so for probes): if not, nothing counts as lost."""
    labels = list(sent)
    start = time.monotonic()
    last, last_change, complete = -1, start, False
    counts = count_spans(receiver, labels, t0, t1)
    for _ in range(int(FLUSH_TIMEOUT_S) + 2):
        counts = count_spans(receiver, labels, t0, t1)
        now = time.monotonic()
        if expected and all(counts[label]["server"] >= sent[label] for label in labels):
            complete = True
            break
        total = sum(c["spans"] for c in counts.values())
        if total != last:
            last, last_change = total, now
        elif now - last_change >= FLUSH_QUIET_S or now - start >= FLUSH_TIMEOUT_S:
            break
        time.sleep(1.0)
    out: dict[str, Any] = {"waited_s": round(time.monotonic() - start, 1), "every_request_has_a_span": complete}
    for label in labels:
        c, n = counts[label], sent[label]
        out[label] = {
            "requests_sent": n,  # by the load generator, warm-up included (wrk stops with requests in flight)
            "server_spans": c["server"],
            "lost": max(0, n - c["server"]) if expected else None,
            "spans": c["spans"],
            "sql_spans": c["sql"],
            "spans_per_request": round(c["spans"] / n, 2) if n else None,
            "sql_spans_per_request": round(c["sql"] / n, 2) if n else None,
            "span_names": dict(c["names"].most_common(12)),
        }
    receiver.clear()  # counted: the bodies are no longer needed
    return out


# --------------------------------------------------------------------------
# Load
# --------------------------------------------------------------------------


def run_summary(result: dict[str, Any], pid: int) -> dict[str, Any]:
    elapsed, ok = result["elapsed_s"], result["ok"]
    cpu = result["cpu_s"].get(str(pid), float("nan"))
    out = {
        "tool": result["tool"],
        "ok": ok,
        "errors": result["errors"],
        "elapsed_s": round(elapsed, 3),
        "rps": round(ok / elapsed, 2) if elapsed else 0.0,
        "hub_cpu_s": round(cpu, 3),
        "hub_cpu_per_request_us": round(1e6 * cpu / ok, 1) if ok else None,
        "hub_cpu_utilisation": round(cpu / elapsed, 3) if elapsed else None,
        "loadgen_cpu_utilisation": round(result["loadgen_cpu_s"] / elapsed, 3) if elapsed else None,
        "machine_busy": result.get("machine_busy"),
        "machine_steal": result.get("machine_steal"),
    }
    if "ops" in result:
        out["ops"] = result["ops"]
    if result.get("error_samples"):
        out["error_samples"] = result["error_samples"]
    return out


def run_load(
    scenario: Scenario,
    hubs: dict[str, Hub],
    labels: tuple[str, str],
    receiver: Any,
    smoke: bool,
    choice: str,
    rounds: int,
    duration: float,
    warmup: float,
    probes: dict[str, Path] | None = None,
) -> dict[str, Any]:
    """ABBA rounds of the scenario's load on each hub; with ``probes`` (a breakdown scenario: each hub's cost-probe
    directory), also each hub's own account of the measured rounds (GC, timed functions, threads)."""
    base, cand = labels
    connections = scenario.connections
    log(f"  setup: {asdict(scenario.setup)}")
    prepared = hubmod.prepare(scenario, hubs, connections)
    contexts = {label: prepared[label]["context"] for label in labels}
    ops = [op_spec(op) for op in scenario.mix]
    for label in labels:  # every op once on each hub: a setup that does not work fails here, not in the figures
        checked = loadgen.child(
            {"mode": "each", "port": hubs[label].hub_port, "seed": 0, "ops": ops, "context": contexts[label]}
        )
        bad = {name: s for name, s in checked["ops"].items() if s["ok"] != s["requests"]}
        if bad:
            raise RuntimeError(f"{scenario.name}: ops failing on the {label} hub: {bad} {checked['error_samples']}")
    static = wrk_request(scenario)
    tool = "wrk" if static and choice in ("auto", "wrk") and shutil.which("wrk") else "python"
    if choice == "wrk" and tool != "wrk":
        log(f"  {scenario.name}: wrk cannot send this mix (or is not on PATH): the Python generator runs it")
    sent: Counter[str] = Counter()

    def load(label: str, seconds: float, seed: int) -> dict[str, Any]:
        hub = hubs[label]
        before = machine_times()
        if tool == "wrk":
            assert static is not None
            result = loadgen.wrk(hub.hub_port, static[0], static[1], seconds, connections, [hub.proc.pid])
        else:
            result = loadgen.child(
                {
                    "port": hub.hub_port,
                    "duration": seconds,
                    "connections": connections,
                    "seed": seed,
                    "ops": ops,
                    "context": contexts[label],
                    "cpu_pids": [hub.proc.pid],
                }
            )
        result.update(machine_share(before, machine_times()))
        sent[label] += result["ok"] + result["errors"]
        return run_summary(result, hub.proc.pid)

    t0 = time.time_ns()
    for label in labels:
        load(label, warmup, seed=0)
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    readings = {label: costprobe.read(directory) for label, directory in (probes or {}).items()}
    for r in range(rounds):
        for label in labels if r % 2 == 0 else labels[::-1]:
            run = load(label, duration, seed=r + 1)
            runs[label].append(run)
            log(
                f"  round {r + 1}/{rounds} {label}: {run['rps']:,.1f} req/s, {run['hub_cpu_per_request_us']} us hub "
                f"CPU/req (hub {run['hub_cpu_utilisation']}, loadgen {run['loadgen_cpu_utilisation']} core), "
                f"errors {run['errors']}, machine busy {run['machine_busy']} steal {run['machine_steal']}"
            )
    t1 = time.time_ns()
    breakdown = {
        label: costprobe.difference(
            readings[label], costprobe.read(directory), sum(run["ok"] + run["errors"] for run in runs[label])
        )
        for label, directory in (probes or {}).items()
    }
    memory = {label: rss(hubs[label]) for label in labels}
    log(f"  RSS after the load: {memory}")
    traced_labels = [label for label in labels if traced(hubs[label])]
    expected = all(op.traced for op in scenario.mix)
    sent_traced = {label: sent[label] for label in traced_labels}
    spans = account_spans(receiver, sent_traced, t0, t1, expected) if traced_labels else {}
    for label in traced_labels:
        s = spans[label]
        log(
            f"  {label} spans: {s['requests_sent']:,} requests, {s['server_spans']:,} SERVER spans (lost {s['lost']}),"
            f" {s['spans_per_request']} spans/request ({s['sql_spans_per_request']} SQL)"
        )
    out: dict[str, Any] = {
        "tool": tool if tool == "python" else loadgen.wrk_version() or "wrk",
        "connections": connections,
        "rounds": rounds,
        "duration_s": duration,
        "warmup_s": warmup,
        "setup_took": {label: prepared[label]["took"] for label in labels},
        "runs": runs,
        "rss": memory,
        "spans": spans,
        "logs": {label: hubmod.log_counts(hubs[label]) for label in labels},
    }
    if breakdown:
        out["breakdown"] = breakdown
    out["summary"] = summarise_load(out, labels)
    return out


def summarise_load(out: dict[str, Any], labels: tuple[str, str]) -> dict[str, Any]:
    base, cand = labels
    runs = out["runs"]
    pairs = list(zip(runs[base], runs[cand]))
    summary: dict[str, Any] = {}
    for label in labels:
        rps = [run["rps"] for run in runs[label]]
        cpu = [run["hub_cpu_per_request_us"] for run in runs[label] if run["hub_cpu_per_request_us"]]
        requests_total = sum(run["ok"] + run["errors"] for run in runs[label])
        summary[label] = {
            "rps_median": round(statistics.median(rps), 2) if rps else None,
            "rps_min": min(rps, default=None),
            "rps_max": max(rps, default=None),
            "hub_cpu_per_request_us_median": round(statistics.median(cpu), 1) if cpu else None,
            "errors": sum(run["errors"] for run in runs[label]),
            "error_share": round(sum(run["errors"] for run in runs[label]) / requests_total, 4)
            if requests_total
            else 0,
            "rss_mib": out["rss"][label]["rss_mib"],
        }
    summary["throughput_ratio"] = mean_ci([c["rps"] / b["rps"] for b, c in pairs if b["rps"]])
    summary["cpu_ratio"] = mean_ci(
        [c["hub_cpu_per_request_us"] / b["hub_cpu_per_request_us"] for b, c in pairs if b["hub_cpu_per_request_us"]]
    )
    summary["rss_delta_mib"] = round(out["rss"][cand]["rss_mib"] - out["rss"][base]["rss_mib"], 1)
    if any(summary[label]["error_share"] > MAX_ERROR_SHARE for label in labels):
        summary["invalid"] = f"more than {MAX_ERROR_SHARE:.0%} of the requests failed"
    spans = out.get("spans", {}).get(cand)
    if spans:
        summary["spans_lost"] = spans["lost"]
        summary["spans_per_request"] = spans["spans_per_request"]
    return summary


# --------------------------------------------------------------------------
# Shutdown with the collector unreachable
# --------------------------------------------------------------------------


def light_traffic(hub: Hub, n: int = 50) -> None:
    session = requests.Session()
    session.headers.update(AUTH)
    for i in range(n):
        session.get(url(hub, "/hub/health"), timeout=10)
        session.get(url(hub, "/hub/api"), timeout=10)
        if i % 10 == 0:
            session.get(url(hub, "/hub/api/users"), timeout=10)
            session.get(url(hub, "/hub/api/no-such-endpoint"), timeout=10)
    session.post(url(hub, "/hub/api/users"), json={"usernames": ["traffic-a", "traffic-b"]}, timeout=30)


def run_shutdown(scenario: Scenario, workdir: Path, options: Any, smoke: bool) -> dict[str, Any]:
    """Pairs of hubs whose OTLP endpoint is a closed loopback port; SIGTERM after some traffic and a wait (longer
    each pair, to land at different points of the exporters' retry schedule)."""
    labels = (scenario.baseline.label, scenario.candidate.label)
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    for rep in range(param(scenario, "pairs", smoke)):
        pair, _ = hubmod.start_pair(workdir / f"pair{rep}", scenario, "", options)
        try:
            for hub in pair.values():
                light_traffic(hub)
            time.sleep(6 + 1.5 * rep)  # at least one export attempt has failed and is being retried
            for label in labels if rep % 2 == 0 else labels[::-1]:
                hub = pair[label]
                took = hub.stop()
                text = hub.log()
                runs[label].append(
                    {
                        "seconds": round(took, 3),
                        "returncode": hub.proc.returncode,
                        # jh_otel gave up flushing after OTEL_PYTHON_JUPYTERHUB_SHUTDOWN_TIMEOUT (default 0.5 s)
                        "flush_timeout_warning": "not flushed within" in text,
                    }
                )
                log(f"  pair {rep + 1} {label}: exit in {took:.2f}s (code {hub.proc.returncode})")
        finally:
            hubmod.stop_all(pair)
    summary: dict[str, Any] = {
        label: {
            "max_s": max(r["seconds"] for r in runs[label]),
            "median_s": statistics.median(r["seconds"] for r in runs[label]),
        }
        for label in labels
    }
    summary["exit_s_max"] = summary[labels[1]]["max_s"]
    return {"runs": runs, "summary": summary}


# --------------------------------------------------------------------------
# Scrape at many users, and the event loop's stalls
# --------------------------------------------------------------------------


def scrape_stats(port: int, path: str, headers: dict[str, str] | None, n: int) -> dict[str, Any]:
    """``n`` timed GETs on one keep-alive connection after one untimed one."""
    import http.client

    conn = http.client.HTTPConnection(hubmod.HOST, port, timeout=60)
    try:
        times, body, status = [], b"", 0
        for i in range(n + 1):
            t0 = time.perf_counter()
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            body, status = response.read(), response.status
            if status != 200:
                raise RuntimeError(f"GET {port}{path} -> {status}: {body[:200]!r}")
            if i:
                times.append(time.perf_counter() - t0)
        times.sort()
        return {
            "bytes": len(body),
            "median_ms": round(1000 * statistics.median(times), 2),
            "p90_ms": round(1000 * times[int(0.9 * (len(times) - 1))], 2),
            "max_ms": round(1000 * times[-1], 2),
            "n": n,
        }
    finally:
        conn.close()


def total_users_reported(hub: Hub) -> float | None:
    import re

    text = requests.get(url(hub, "/hub/metrics"), headers=AUTH, timeout=60).text
    match = re.search(r"^jupyterhub_total_users(?:\{[^}]*\})?\s+(\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def probe(hub: Hub, seconds: float) -> dict[str, Any]:
    result = loadgen.child({"mode": "probe", "port": hub.hub_port, "duration": seconds, "cpu_pids": [hub.proc.pid]})
    result["hub_cpu_s"] = round(result.pop("cpu_s").get(str(hub.proc.pid), float("nan")), 2)
    return result


def offline_count_users(db_path: Path, repetitions: int = 20) -> dict[str, Any]:
    """jh_otel's snapshot queries (jh_otel.snapshot.count_users) timed on a copy of the hub's database."""
    from datetime import datetime, timezone

    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    from jh_otel.snapshot import count_users

    copy = db_path.with_name("snapshot-timing.sqlite")
    shutil.copyfile(db_path, copy)
    engine = create_engine(f"sqlite:///{copy}")
    db = sessionmaker(bind=engine)()
    times = []
    try:
        total, _ = count_users(db, datetime.now(timezone.utc).replace(tzinfo=None))
        db.rollback()
        for _ in range(repetitions):
            t0 = time.perf_counter()
            total, _ = count_users(db, datetime.now(timezone.utc).replace(tzinfo=None))
            db.rollback()
            times.append(time.perf_counter() - t0)
    finally:
        db.close()
        engine.dispose()
        copy.unlink(missing_ok=True)
    return {
        "users": total,
        "median_ms": round(1000 * statistics.median(times), 2),
        "max_ms": round(1000 * max(times), 2),
    }


def setup_users(scenario: Scenario, smoke: bool) -> int:
    """The setup's users; a smaller number in smoke mode when the scenario says so (``smoke_users``)."""
    return int(scenario.params["smoke_users"]) if smoke and "smoke_users" in scenario.params else scenario.setup.users


def run_scrape(scenario: Scenario, hubs: dict[str, Hub], labels: tuple[str, str], smoke: bool) -> dict[str, Any]:
    base, cand = labels
    users = setup_users(scenario, smoke)
    n, probe_s = param(scenario, "scrapes", smoke), param(scenario, "probe_s", smoke)
    log(f"  creating {users:,} users on each hub")
    took = hubmod.in_parallel(hubs, lambda label, hub: hubmod.create_users(hub, 0, users))
    expected = users + 1  # JupyterHub's own admin
    t0, reported = time.monotonic(), None
    for _ in range(240):  # the snapshot refresh shows them (every 2 s here)
        reported = total_users_reported(hubs[cand])
        if reported == expected or time.monotonic() - t0 > 60:
            break
        time.sleep(0.25)
    out: dict[str, Any] = {
        "users": users,
        "create_users_s": took,
        "snapshot_shows_users_after_s": round(time.monotonic() - t0, 1),
    }
    out["total_users_reported"] = reported
    out["hub_metrics"] = {label: scrape_stats(hubs[label].hub_port, "/hub/metrics", AUTH, n) for label in labels}
    exporter_port = hubs[cand].env.get("OTEL_EXPORTER_PROMETHEUS_PORT")
    if exporter_port:
        out["exporter_metrics"] = scrape_stats(int(exporter_port), "/metrics", None, n)
    log(f"  /hub/metrics median ms: { {label: out['hub_metrics'][label]['median_ms'] for label in labels} }")
    out["probe"] = {label: probe(hubs[label], probe_s) for label in labels}
    for label in labels:
        p = out["probe"][label]
        log(f"  {label} probe: median {p['median_ms']} ms, p99 {p['p99_ms']} ms, max {p['max_ms']} ms")
    try:
        out["snapshot_queries_offline"] = offline_count_users(hubs[cand].dir / "jupyterhub.sqlite")
    except Exception as error:  # noqa: BLE001 - an older jh_otel may not have count_users: the rest stands
        out["snapshot_queries_offline"] = {"error": f"{type(error).__name__}: {error}"}
    out["rss"] = {label: rss(hubs[label]) for label in labels}
    out["summary"] = {
        "scrape_ms": out["hub_metrics"][cand]["median_ms"],
        "baseline_scrape_ms": out["hub_metrics"][base]["median_ms"],
        "exporter_scrape_ms": out.get("exporter_metrics", {}).get("median_ms"),
        "rss_delta_mib": round(out["rss"][cand]["rss_mib"] - out["rss"][base]["rss_mib"], 1),
    }
    if users != scenario.setup.users:
        out["summary"]["note"] = f"at {users:,} users (smoke)"
    return out


def run_latency(scenario: Scenario, hubs: dict[str, Hub], labels: tuple[str, str], smoke: bool) -> dict[str, Any]:
    """Back-to-back ``GET /hub/health`` on each hub, ABBA, after the setup; on the candidate the health checks'
    own durations (``/hub/api/jh-otel/health``)."""
    base, cand = labels
    prepared = hubmod.prepare(scenario, hubs, connections=1, users=setup_users(scenario, smoke))
    time.sleep(3)
    seconds, rounds = param(scenario, "probe_s", smoke), param(scenario, "rounds", smoke)
    probes: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    for r in range(rounds):
        for label in labels if r % 2 == 0 else labels[::-1]:
            p = probe(hubs[label], seconds)
            probes[label].append(p)
            log(
                f"  {label}: median {p['median_ms']} ms, p99 {p['p99_ms']} ms, max {p['max_ms']} ms, "
                f"{p['spike_count']} spikes"
            )
    checks: dict[str, dict[float, float]] = {}
    for _ in range(3 if smoke else 10):
        report = requests.get(url(hubs[cand], "/hub/api/jh-otel/health"), headers=AUTH, timeout=30).json()
        for name, result in report.get("checks", {}).items():
            if "time" in result:
                checks.setdefault(name, {})[result["time"]] = 1000 * result["duration_seconds"]
        time.sleep(1)
    summary: dict[str, Any] = {}
    for label in labels:
        runs = probes[label]
        summary[label] = {
            "median_ms": round(statistics.median(r["median_ms"] for r in runs), 3),
            "p99_ms": max(r["p99_ms"] for r in runs),
            "max_ms": max(r["max_ms"] for r in runs),
            "spikes": sum(r["spike_count"] for r in runs),
            "requests": sum(r["requests"] for r in runs),
        }
    return {
        "setup_took": {label: prepared[label]["took"] for label in labels},
        "probes": probes,
        "check_ms": {name: round(statistics.median(v.values()), 2) for name, v in sorted(checks.items())},
        "rss": {label: rss(hubs[label]) for label in labels},
        "summary": summary,
    }


def judge_targets(targets: tuple[Target, ...], summary: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for target in targets:
        verdict = judge(summary.get(target.metric), target.op, target.value, target.judged)
        if summary.get("invalid"):
            verdict = {**verdict, "verdict": "unclear", "why": summary["invalid"]}
        out.append({**asdict(target), **verdict, **({"note": summary["note"]} if "note" in summary else {})})
    return out
