"""Tables from the harness's JSON, and benchmarks/README.md's generated blocks (``harness.py --readme``).

Every figure in the README's tables comes from ``results.json`` (or, until a full run exists, ``results-smoke.json``)
and ``results-micro.json``: nothing is copied by hand. Each block sits between ``<!-- generated:NAME:begin -->`` and
``<!-- generated:NAME:end -->``; the text around them is the README's own.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any

from scenarios import DEFAULT_SETTINGS, FULL_SAMPLING, SCENARIOS, Op, Scenario

BENCH = Path(__file__).resolve().parent
README = BENCH / "README.md"
RESULTS, SMOKE_RESULTS, MICRO_RESULTS = (
    BENCH / "results.json",
    BENCH / "results-smoke.json",
    BENCH / "results-micro.json",
)
BREAKDOWN_RESULTS = BENCH / "results-breakdown.json"
SQL_VARIANTS = (
    ("without SQL spans (`OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=sqlalchemy`)", BENCH / "results-no-sql-spans.json"),
    (
        "SQL spans only for statements of 1 ms or more (`OTEL_PYTHON_JUPYTERHUB_SQL_SPAN_MIN_DURATION=0.001`)",
        BENCH / "results-sql-min-duration.json",
    ),
)
"""Runs of the SQL-heavy scenarios with a candidate setting (``--set``), each in a results file of its own."""
ORDER = [s.name for s in SCENARIOS]

UNITS = {
    "rss_delta_mib": ("{:+.1f} MiB", "jh_otel RSS - plain RSS after the load"),
    "rss_growth_delta_mib": ("{:+.1f} MiB", "jh_otel's RSS growth - plain's"),
    "exit_s_max": ("{:.2f} s", "slowest exit"),
    "scrape_ms": ("{:.1f} ms", "median of the scrapes"),
    "paced_lost": ("{:.0f} spans lost", ""),
}


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def ratio_ci(estimate: dict[str, Any] | None) -> str:
    """``0.93x [0.88, 0.98]``: the mean paired ratio and its 95 % confidence interval (or the one round's ratio)."""
    if not estimate or estimate.get("mean") is None:
        return "—"
    ci = estimate.get("ci95")
    text = f"{estimate['mean']:.2f}x"
    return f"{text} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{text} (1 round, no CI)"


def table(header: list[str], rows: list[list[str]], align: str = "") -> str:
    align = align or "l" + "r" * (len(header) - 1)
    marks = {"l": "---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def scenarios_in(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = results.get("scenarios", {})
    return [(name, found[name]) for name in sorted(found, key=lambda n: ORDER.index(n) if n in ORDER else 99)]


# --------------------------------------------------------------------------
# Hub scenarios
# --------------------------------------------------------------------------


def measured(target: dict[str, Any]) -> str:
    if target.get("judged") == "ci":
        return ratio_ci({"mean": target.get("value"), "ci95": target.get("ci95")})
    value = target.get("value")
    if value is None:
        return "—"
    pattern = UNITS.get(target["metric"], ("{}", ""))[0]
    return pattern.format(value)


def targets_table(results: dict[str, Any]) -> str:
    rows = []
    for name, entry in scenarios_in(results):
        for target in entry.get("targets", []):
            verdict = target["verdict"]
            why = f" ({target['why']})" if target.get("why") and target.get("value") is not None else ""
            if target.get("value") is None and target.get("why"):
                why = f" ({target['why']})"
            shown = f"**{verdict}**" if verdict != "met" else verdict
            note = f" ({target['note']})" if target.get("note") else ""
            rows.append([target["words"], f"`{name}`", measured(target) + note, shown + why])
    for failure in results.get("failures", []):
        rows.append(
            ["(scenario failed: see the JSON's `failures`)", f"`{failure['scenario']}`", "—", "**not measured**"]
        )
    return table(
        ["target (the issue's words)", "scenario", "measured (mean paired ratio [95 % CI])", "verdict"],
        rows,
        "lllll"[:4],
    )


def load_table(results: dict[str, Any]) -> str:
    rows = []
    for name, entry in scenarios_in(results):
        if entry.get("kind") != "load":
            continue
        base, cand = entry["labels"]
        s = entry["summary"]
        b, c = s[base], s[cand]
        spans = entry.get("spans", {}).get(cand) or {}
        per_request = spans.get("spans_per_request")
        sql = spans.get("sql_spans_per_request")
        rows.append(
            [
                f"`{name}`" + (f" ({base} vs {cand})" if base != "plain" else ""),
                f"{entry['rounds']} x {entry['duration_s']:g} s",
                fmt(b["rps_median"]),
                fmt(c["rps_median"]),
                ratio_ci(s["throughput_ratio"]),
                fmt(b["hub_cpu_per_request_us_median"], 0),
                fmt(c["hub_cpu_per_request_us_median"], 0),
                ratio_ci(s["cpu_ratio"]),
                f"{fmt(b['rss_mib'])} / {fmt(c['rss_mib'])} ({s['rss_delta_mib']:+.1f})",
                "—" if per_request is None else f"{per_request:.2f} ({sql:.2f} SQL)",
                "—"
                if not spans
                else "not traced (probes)"
                if spans["lost"] is None
                else f"{fmt(spans['lost'])} of {fmt(spans['requests_sent'])}",
                f"{fmt(b['errors'])} / {fmt(c['errors'])}",
                entry["tool"],
            ]
        )
    header = [
        "scenario",
        "rounds",
        "plain req/s (median)",
        "jh_otel req/s (median)",
        "throughput ratio [95 % CI]",
        "plain hub CPU us/req",
        "jh_otel hub CPU us/req",
        "CPU ratio [95 % CI]",
        "RSS MiB plain / jh_otel (delta)",
        "spans per request",
        "requests without a span",
        "errors",
        "load generator",
    ]
    lines = [table(header, rows, "lrrrrrrrrrrrl")]
    for name, entry in scenarios_in(results):
        if entry.get("kind") == "load":
            t = entry["summary"]["throughput_ratio"]
            lines.append(f"\n`{name}` per-round throughput ratios: {', '.join(f'{v:.2f}' for v in t['values'])}.")
    return "\n".join(lines)


def mix_table(results: dict[str, Any], scenario: str = "mix-1000") -> str:
    entry = results.get("scenarios", {}).get(scenario)
    if not entry or entry.get("kind") != "load":
        return f"No `{scenario}` in this run."
    base, cand = entry["labels"]
    weights = {op.name: op.weight for s in SCENARIOS if s.name == scenario for op in s.mix}
    total = sum(weights.values()) or 1
    rows = []
    for op_name, weight in weights.items():
        row = [f"`{op_name}`", f"{100 * weight / total:.0f} %"]
        for label in (base, cand):
            runs = [run["ops"][op_name] for run in entry["runs"][label] if "ops" in run and op_name in run["ops"]]
            ops = sum(r["ops"] for r in runs)
            reqs = sum(r["requests"] for r in runs)
            p50 = statistics.median(r["p50_ms"] for r in runs if "p50_ms" in r) if runs else None
            row += [fmt(ops), fmt(reqs), fmt(p50, 1)]
        rows.append(row)
    header = [
        "op",
        "weight",
        f"{base} ops",
        f"{base} requests",
        f"{base} p50 ms",
        f"{cand} ops",
        f"{cand} requests",
        f"{cand} p50 ms",
    ]
    return table(header, rows)


def other_tables(results: dict[str, Any]) -> str:
    parts = []
    found = results.get("scenarios", {})
    if "pipeline" in found:
        p = found["pipeline"]["rows"]
        rows = []
        for key, what in (
            ("unpaced", "hub-shaped traces as fast as the producer goes (queue holds all)"),
            ("paced", f"paced at {fmt(p['paced']['paced_at'], 0)} spans/s, the SDK's default batch settings"),
            ("worst_case", "worst case for scrubbing: a token in every span's URL"),
            ("no_scrubbing", "for reference: the plain OTLPSpanExporter, no scrubbing"),
        ):
            r = p[key]
            rows.append(
                [
                    what,
                    f"{fmt(r['received_unique'])} / {fmt(r['created'])}",
                    fmt(r["lost"]),
                    fmt(r["spans_per_s_end_to_end"], 0),
                    fmt(r["producer_spans_per_s"], 0),
                    "—" if key == "no_scrubbing" else f"{r['spans_with_token']} / {r['export_bodies_with_token']}",
                ]
            )
        parts.append(
            "**Span pipeline** (`pipeline`):\n\n"
            + table(
                [
                    "row",
                    "received / created",
                    "lost",
                    "spans/s end to end",
                    "producer spans/s",
                    "token in spans / bodies",
                ],
                rows,
            )
        )
    if "shutdown" in found:
        sd = found["shutdown"]
        base, cand = sd["labels"]
        rows = [
            [
                label,
                fmt(sd["summary"][label]["max_s"], 2),
                fmt(sd["summary"][label]["median_s"], 2),
                ", ".join(f"{r['seconds']:.2f}" for r in sd["runs"][label]),
            ]
            for label in (base, cand)
        ]
        parts.append(
            "**Hub exit with the collector unreachable** (`shutdown`; SIGTERM to exit, s):\n\n"
            + table(["hub", "max", "median", "each pair"], rows)
        )
    if "imports" in found:
        parts.append(imports_table(found["imports"]))
    if "outage" in found:
        parts.append(outage_table(found["outage"]))
    if "scrape-10k" in found:
        sc = found["scrape-10k"]
        base, cand = sc["labels"]
        hm, pr = sc["hub_metrics"], sc["probe"]
        rows = [
            [
                f"`/hub/metrics` at {fmt(sc['users'])} users: bytes / median ms",
                f"{fmt(hm[base]['bytes'])} / {fmt(hm[base]['median_ms'], 2)}",
                f"{fmt(hm[cand]['bytes'])} / {fmt(hm[cand]['median_ms'], 2)}",
            ],
        ]
        if "exporter_metrics" in sc:
            e = sc["exporter_metrics"]
            rows.append(
                ["exporter port `/metrics`: bytes / median ms", "—", f"{fmt(e['bytes'])} / {fmt(e['median_ms'], 2)}"]
            )
        rows.append(
            [
                "back-to-back `/hub/health`: median / p99 / max ms (max: the longest event-loop stall)",
                f"{fmt(pr[base]['median_ms'], 2)} / {fmt(pr[base]['p99_ms'], 2)} / {fmt(pr[base]['max_ms'], 1)}",
                f"{fmt(pr[cand]['median_ms'], 2)} / {fmt(pr[cand]['p99_ms'], 2)} / {fmt(pr[cand]['max_ms'], 1)}",
            ]
        )
        q = sc.get("snapshot_queries_offline", {})
        if "median_ms" in q:
            rows.append(
                [
                    f"jh_otel's snapshot queries at {fmt(q['users'])} users (offline), median ms",
                    "—",
                    fmt(q["median_ms"], 2),
                ]
            )
        rows.append(["RSS after, MiB", fmt(sc["rss"][base]["rss_mib"]), fmt(sc["rss"][cand]["rss_mib"])])
        parts.append("**Scrape and event-loop stalls** (`scrape-10k`):\n\n" + table(["measure", base, cand], rows))
    for name in ("churn", "singleuser"):
        if name in found:
            parts.append(cycles_table(name, found[name]))
    if "background" in found:
        bg = found["background"]
        base, cand = bg["labels"]
        s = bg["summary"]
        rows = [
            [
                label,
                fmt(s[label]["median_ms"], 3),
                fmt(s[label]["p99_ms"], 2),
                fmt(s[label]["max_ms"], 1),
                fmt(s[label]["spikes"]),
                fmt(s[label]["requests"]),
            ]
            for label in (base, cand)
        ]
        parts.append(
            "**Background work** (`background`):\n\n"
            + table(["hub", "median ms", "p99 ms (worst probe)", "max ms", "spikes", "requests"], rows)
            + f"\n\nHealth checks' median durations on the busy hub, ms: {bg.get('check_ms')}."
        )
    return "\n\n".join(parts) if parts else "No other measurement in this run."


def breakdown_block(results: dict[str, Any]) -> str:
    """Every breakdown scenario of a run (``results-breakdown.json``)."""
    parts = [
        breakdown_tables(name, entry)
        for name, entry in scenarios_in(results)
        if entry.get("kind") == "breakdown" and entry.get("breakdown")
    ]
    return "\n\n".join(parts) if parts else "No breakdown in this run."


def breakdown_tables(name: str, entry: dict[str, Any]) -> str:
    """A breakdown scenario: each hub's CPU per request by thread and GC, and jh_otel's hub's timed functions."""
    found = entry["breakdown"]
    labels = [label for label in entry.get("labels", []) if label in found]
    threads = sorted({t for label in labels for t in found[label]["thread_cpu_us_per_request"]})
    rows = [
        ["requests measured", *(fmt(found[label]["requests"]) for label in labels)],
        *(
            [
                f"CPU of thread `{t}`, us",
                *(fmt(found[label]["thread_cpu_us_per_request"].get(t), 1) for label in labels),
            ]
            for t in threads
        ),
        [
            "garbage collection, us (in the threads' time)",
            *(fmt(found[label]["gc_us_per_request"], 1) for label in labels),
        ],
        [
            "collections per generation, measured rounds",
            *(" / ".join(str(n) for n in found[label]["gc_collections"]) for label in labels),
        ],
    ]
    out = f"**Where the hub's CPU goes** (`{name}`: {entry.get('measures', '')}; per request):\n\n" + table(
        ["per request", *labels], rows
    )
    for label in labels:
        calls = found[label]["calls"]
        if calls:
            rows = [
                [
                    what.strip() if not what.startswith(" ") else f"... {what.strip()}",
                    fmt(c["calls_per_request"], 2),
                    fmt(c["cpu_us_per_call"], 2),
                    fmt(c["cpu_us_per_request"], 1),
                ]
                for what, c in calls.items()
            ]
            out += f"\n\n{label} hub, timed functions (thread CPU, nested ones counted in both):\n\n" + table(
                ["function", "calls per request", "CPU us per call", "CPU us per request"], rows
            )
    return out


def imports_table(entry: dict[str, Any]) -> str:
    rows = []
    for r in entry["rows"]:
        rows.append(
            [
                f"`{r['module']}`" if not r["module"].startswith("(") else r["module"],
                fmt(r.get("added_rss_mib"), 2) if "added_rss_mib" in r else "—",
                fmt(r.get("added_uss_mib"), 2) if "added_uss_mib" in r else "—",
                fmt(r.get("added_modules")) if "added_modules" in r else fmt(r["modules"]),
                fmt(r["rss_mib"]),
            ]
        )
    s = entry["summary"]
    return (
        f"**Memory per import** (`imports`: a fresh interpreter imports each module in turn, median of "
        f"{entry['repeat']}; a module counts what it added on top of those above it). The imports of a jh_otel hub "
        f"over OTLP/HTTP add {fmt(s['jh_otel_imports_rss_mib'])} MiB to a plain hub's "
        f"{fmt(s['plain_hub_imports_rss_mib'])} MiB; the last row, the gRPC exporter, is what "
        f"`OTEL_EXPORTER_OTLP_PROTOCOL=grpc` would add:\n\n"
        + table(["import", "RSS added, MiB", "USS added, MiB", "modules added", "RSS after, MiB"], rows)
    )


def outage_table(entry: dict[str, Any]) -> str:
    base, cand = both = entry["labels"]
    h, t = entry["hubs"], entry["timeline"]
    rows = []
    for what, key in (
        ("requests made while the collector was up (after the warm-up)", "sent_while_up"),
        ("... whose span arrived", "received_while_up"),
        ("... whose span was lost", "lost_up"),
        ("requests made while it was down / whose span arrived anyway", None),
        ("failed requests", "failed_requests"),
        ("hub RSS before the outage -> after, MiB", None),
        ("RSS growth, MiB", "rss_growth_mib"),
        ("`Queue full` warnings / outbox outage warnings in the hub log", None),
    ):
        if key is not None:
            rows.append([what, fmt(h[base][key]), fmt(h[cand][key])])
        elif what.startswith("requests made while it was down"):
            rows.append([what] + [f"{fmt(h[x]['sent_while_down'])} / {fmt(h[x]['received_while_down'])}" for x in both])
        elif what.startswith("hub RSS"):
            rows.append([what] + [f"{fmt(h[x]['rss_before_mib'])} -> {fmt(h[x]['rss_after_mib'])}" for x in both])
        else:
            rows.append(
                [what]
                + [f"{h[x]['log']['queue_full_warnings']} / {h[x]['log'].get('outage_warnings', 0)}" for x in both]
            )
    return (
        f"**Collector outage and flapping** (`outage`: up {fmt(t['warm_s'], 0)} s, down {fmt(t['down_s'], 0)} s, "
        f"{t['flaps']} x ({fmt(t['flap_s'], 0)} s up, {fmt(t['flap_s'], 0)} s down), up {fmt(t['settle_s'], 0)} s; "
        f"`{base}`: the SDK's delivery, `{cand}`: jh_otel's outbox):\n\n" + table(["measure", base, cand], rows)
    )


def cycles_table(name: str, entry: dict[str, Any]) -> str:
    base, cand = entry["labels"]
    s = entry["summary"]
    p, o = s[base], s[cand]
    first, last = s["rss_at_cycle"]["first"], s["rss_at_cycle"]["last"]
    rows = []
    if "fastspawners_live_at_end" in o:
        rows += [
            [
                f"FastSpawners alive after the last stop (of {fmt(o['fastspawners_created'])} made)",
                fmt(p["fastspawners_live_at_end"]),
                fmt(o["fastspawners_live_at_end"]),
                "",
            ],
            [
                "User objects alive, before -> after",
                f"{p['users_before']} -> {p['users_at_end']}",
                f"{o['users_before']} -> {o['users_at_end']}",
                "",
            ],
        ]
    else:
        rows.append(
            [
                "server start / stop, median s",
                f"{p['start_s_median']:.2f} / {p['stop_s_median']:.2f}",
                f"{o['start_s_median']:.2f} / {o['stop_s_median']:.2f}",
                "",
            ]
        )
    rows += [
        [
            f"hub RSS at cycle {first:,} -> {last:,}, MiB",
            f"{fmt(p['rss_first_mib'])} -> {fmt(p['rss_last_mib'])}",
            f"{fmt(o['rss_first_mib'])} -> {fmt(o['rss_last_mib'])}",
            f"growth {s['rss_growth_delta_mib']:+.1f} MiB over plain's",
        ],
        [
            f"time per cycle, ms (median of {s['timed_blocks']} timed blocks)",
            fmt(p["ms_per_cycle_median"]),
            fmt(o["ms_per_cycle_median"]),
            ratio_ci(s["cycle_ratio"]),
        ],
        [
            "hub CPU per cycle, ms",
            fmt(p["hub_cpu_ms_per_cycle_median"]),
            fmt(o["hub_cpu_ms_per_cycle_median"]),
            ratio_ci(s["cpu_ratio"]),
        ],
        ["spans exported per cycle", "—", fmt(s.get("spans_per_cycle")), ""],
    ]
    text = f"**Spawn/stop cycles** (`{name}`, {entry['blocks_per_hub']} blocks of {entry['block_cycles']} cycles"
    text += " per hub):\n\n"
    text += table(["measure", base, cand, "ratio [95 % CI] or difference"], rows)
    if "growers" in o:
        for label in (base, cand):
            grown = ", ".join(f"{g['type']} +{g['per_cycle']}" for g in s[label]["growers"][:6])
            text += f"\n\n{label}: types grown per cycle between the first and the last block: {grown or 'none'}."
    return text


def sql_variants_block() -> str:
    parts = []
    for title, path in SQL_VARIANTS:
        if path.exists():
            results = json.loads(path.read_text())
            parts.append(f"**{title}**\n\n{run_header(results, path)}\n\n{load_table(results)}")
    return "\n\n".join(parts) or "(no runs yet)"


def run_header(results: dict[str, Any], source: Path) -> str:
    m, code, jh = results.get("machine", {}), results.get("code", {}), results.get("hub_jh_otel", {})
    tools = sorted({e.get("tool", "") for e in results.get("scenarios", {}).values() if e.get("tool")})
    smoke = results.get("mode") == "smoke"
    lines = []
    if smoke:
        lines.append(
            "**Smoke figures**: one round of a few seconds per scenario and smaller setups, to show the harness works. "
            "They are no evidence for or against any target (no confidence interval from one round); a full run "
            "replaces them."
        )
        lines.append("")
    lines += [
        f"- run: {results.get('started_at', '?')} to {results.get('finished_at', '?')} "
        f"({fmt(results.get('run_time_s'), 0)} s), "
        f"mode **{results.get('mode', '?')}**, from `{source.name}`",
        f"- machine: {m.get('hostname', '?')}, {m.get('cpus', '?')} cores ({m.get('cpu_model', '?')}), "
        f"{m.get('memory_gib', '?')} GiB, load average at start {m.get('load_average_at_start')}",
        f"- load generators: {', '.join(tools) or '—'}",
        f"- code: {code.get('head', '?')}{' + uncommitted changes' if code.get('uncommitted') else ''}"
        f"{' (changed during the run)' if results.get('code_changed_during_run') else ''}; the jh_otel hubs ran "
        f"`{jh.get('path', '?')}` (sources {jh.get('digest', '?')})",
        f"- versions: {', '.join(f'{k} {v}' for k, v in results.get('versions', {}).items())}",
        f"- reproduce: `{results.get('command', '')}`",
    ]
    for r in results.get("replaced", []):
        lines.append(
            f"- scenario `{r['scenario']}` replaced by a run of its own ({r['started_at']}, code {r['head']}, jh_otel "
            f"sources {r['digest']}): {r['why']}; reproduce: `{r['command']}`"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------
# The scenario table itself
# --------------------------------------------------------------------------


NAMED_SETTINGS = {"full sampling": FULL_SAMPLING, "default": DEFAULT_SETTINGS}


def show_settings(settings: Any) -> str:
    """A variant's settings as the named set they extend (``full sampling``, ``default``) plus what differs."""
    for name, base in NAMED_SETTINGS.items():
        if sum(settings.get(k) != v for k, v in base.items()) <= 1:  # that set, one value changed at most
            extra = {k: v for k, v in settings.items() if k not in base or base[k] != v}
            return name + "".join(f", `{k}={v}`" for k, v in extra.items())
    return ", ".join(f"`{k}={v}`" for k, v in settings.items()) or "none"


def _settings(scenario: Scenario) -> str:
    candidate = show_settings(scenario.candidate.settings) + (
        " + config lines" if scenario.candidate.extra_config else ""
    )
    if scenario.kind == "pipeline":
        return "none: the hub's span pipeline with the SDK's batch defaults, in a child process"
    if scenario.baseline.wrapper:
        baseline = show_settings(scenario.baseline.settings)
        return f"{scenario.baseline.label}: {baseline}; {scenario.candidate.label}: {candidate}"
    return candidate


def settings_table() -> str:
    rows = [[f"**{name}**", ", ".join(f"`{k}={v}`" for k, v in base.items())] for name, base in NAMED_SETTINGS.items()]
    return table(["settings", "environment of the jh_otel hub"], rows, "ll")


def _mix(mix: tuple[Op, ...]) -> str:
    total = sum(op.weight for op in mix) or 1
    parts = []
    for op in mix:
        steps = " + ".join(f"`{s.method} {s.path.split('?')[0]}`" for s in op.steps)
        share = f"{100 * op.weight / total:.0f} % " if len(mix) > 1 else ""
        parts.append(f"{share}{steps} ({op.auth}{', ' + op.pool if op.pool else ''})")
    return "; ".join(parts) or "—"


def scenario_table(scenarios: tuple[Scenario, ...] = SCENARIOS) -> str:
    rows = []
    for s in scenarios:
        setup = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in vars(s.setup).items() if v and v != "default") or "—"
        timing = (
            f"{s.connections} conn., {s.rounds} x {s.duration_s:g} s (warm-up {s.warmup_s:g} s)"
            if s.kind == "load"
            else ", ".join(f"{k} {v}" for k, v in s.params.items() if not k.startswith("smoke_")) or "—"
        )
        targets = "; ".join(f"{t.metric} {t.op} {t.value:g}" for t in s.targets) or "—"
        rows.append(
            [
                f"`{s.name}`" + ("" if s.default else " (on demand)"),
                s.kind,
                s.measures,
                _settings(s),
                setup,
                _mix(s.mix),
                timing,
                targets,
            ]
        )
    return table(
        ["scenario", "kind", "measures", "jh_otel settings", "setup", "request mix (auth, users)", "load", "targets"],
        rows,
        "llllllll",
    )


# --------------------------------------------------------------------------
# Micro costs
# --------------------------------------------------------------------------


def micro_entry(runs: list[dict[str, Any]], label: str, smoke: bool, package: str) -> dict[str, Any]:
    """pytest-benchmark's JSON of each run, per benchmark: time per unit (us), median of the runs' medians."""
    benchmarks: dict[str, Any] = {}
    for run in runs:
        for b in run["benchmarks"]:
            per = b.get("extra_info", {}).get("per", 1) or 1
            item = benchmarks.setdefault(
                b["name"], {"per": per, "medians_us": [], "mins_us": [], "rounds": [], "iterations": []}
            )
            item["medians_us"].append(round(1e6 * b["stats"]["median"] / per, 3))
            item["mins_us"].append(round(1e6 * b["stats"]["min"] / per, 3))
            item["rounds"].append(b["stats"]["rounds"])
            item["iterations"].append(b["stats"].get("iterations", 1))
    for item in benchmarks.values():
        item["median_us"] = round(statistics.median(item["medians_us"]), 3)
        item["min_us"] = min(item["mins_us"])
    return {
        "label": label,
        "mode": "smoke" if smoke else "full",
        "runs": len(runs),
        "datetime": runs[0].get("datetime") if runs else None,
        "jh_otel": package,
        "benchmarks": benchmarks,
    }


MICRO_NAMES = {
    "test_request_span[api-token]": (
        "request span, start + finish (`ServerCorrections._start`/`_finish`), API request with a token"
    ),
    "test_request_span[anonymous]": "request span, start + finish, anonymous `GET /hub/api`",
    "test_sdk_span": "reference: the SDK's span alone (start with 10 attributes, 2 more, end)",
    "test_record[request_duration_seconds]": "catalogue record (`Recorder.record`), request histogram",
    "test_record[request_count]": "catalogue record, request counter",
    "test_record_exemplar": "catalogue record, request histogram with an exemplar, in a sampled span",
    "test_request_record": (
        "a request's metrics at JupyterHub's log function (its `prometheus_log_method` and jh_otel's records)"
    ),
    "test_log_line": "an access-log line through the hub's handler, default log correlation, in a sampled span",
    "test_sql_checkout": "a pool checkout, one `SELECT` and the checkin on a traced SQLite file (`trace_engine`)",
    "test_sql_step": "per statement: ten `SELECT`s in one event-loop step on a traced SQLite file, the step over "
    "(jh_otel makes a step's SQL spans at its end)",
    "test_encode": "encode (`SpanEncoder.encode`), per span of a 512-span hub batch",
    "test_encode_sdk": "reference: the OTLP exporters' `encode_spans`, per span of the same batch",
    "test_scrub[clean-request]": "scrub (`scrub_span`) of a clean request span",
    "test_scrub[clean-sql]": "scrub of a clean SQL span",
    "test_scrub[credential]": "scrub of a request span with its token in the URL (a redacted copy)",
}


def micro_table(data: dict[str, Any], labels: list[str] | None = None) -> str:
    entries = data.get("labels", {})
    labels = labels or list(entries)
    if not labels:
        return "No micro-cost results yet: `benchmarks/harness.py --micro --label NAME`."
    names: list[str] = []
    for label in labels:
        names += [n for n in entries[label]["benchmarks"] if n not in names]
    order = list(MICRO_NAMES)
    names.sort(key=lambda n: order.index(n) if n in order else len(order))
    rows = []
    for name in names:
        row = [MICRO_NAMES.get(name, f"`{name}`")]
        values = []
        for label in labels:
            b = entries[label]["benchmarks"].get(name)
            values.append(b["median_us"] if b else None)
            row.append("skipped" if not b else f"{b['median_us']:,.2f}")
        if len(labels) == 2:
            row.append(f"{values[1] / values[0]:.2f}x" if values[0] and values[1] else "—")
        rows.append(row)
    header = ["micro cost, us per unit (median)"] + [
        f"{label}{' (smoke)' if entries[label].get('mode') == 'smoke' else ''}" for label in labels
    ]
    if len(labels) == 2:
        header.append(f"{labels[1]} / {labels[0]}")
    lines = [table(header, rows)]
    for label in labels:
        e = entries[label]
        lines.append(
            f"\n`{label}`: {e.get('datetime', '?')[:19]}, {e['runs']} run(s) of pytest-benchmark, "
            f"jh_otel `{e['jh_otel']}` "
            f"(sources {e.get('digest', '?')}), {e.get('machine', {}).get('cpus', '?')} cores; `{e.get('command', '')}`"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------
# README
# --------------------------------------------------------------------------


def replace_block(text: str, name: str, body: str) -> str:
    begin, end = f"<!-- generated:{name}:begin -->", f"<!-- generated:{name}:end -->"
    if begin not in text or end not in text:
        raise SystemExit(f"{README} has no {begin} ... {end} markers")
    return re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: f"{begin}\n{body}\n{end}", text, flags=re.S)


def render_readme(output: Path | None, micro_output: Path) -> int:
    source = output or (RESULTS if RESULTS.exists() else SMOKE_RESULTS)
    text = README.read_text()
    text = replace_block(text, "scenarios", scenario_table())
    if source.exists():
        results = json.loads(source.read_text())
        text = replace_block(text, "run", run_header(results, source))
        text = replace_block(text, "targets", targets_table(results))
        text = replace_block(text, "load", load_table(results))
        text = replace_block(text, "mix", mix_table(results))
        text = replace_block(text, "other", other_tables(results))
    if BREAKDOWN_RESULTS.exists():
        breakdown = json.loads(BREAKDOWN_RESULTS.read_text())
        text = replace_block(
            text, "breakdown", run_header(breakdown, BREAKDOWN_RESULTS) + "\n\n" + breakdown_block(breakdown)
        )
    text = replace_block(text, "sql-variants", sql_variants_block())
    micro = json.loads(micro_output.read_text()) if micro_output.exists() else {}
    text = replace_block(text, "micro", micro_table(micro))
    README.write_text(text)
    print(f"rendered {source.name if source.exists() else '(no results yet)'} and {micro_output.name} into {README}")
    return 0
