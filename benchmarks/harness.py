#!/usr/bin/env python
"""jh_otel's benchmark harness: a plain hub against a jh_otel hub, scenario by scenario, in one run.

Run from the repository root with the project's venv::

    .venv/bin/python benchmarks/harness.py                    # full run of the default scenarios
    .venv/bin/python benchmarks/harness.py --smoke            # smoke: one round of 3 s per scenario
    .venv/bin/python benchmarks/harness.py --scenario api     # one scenario (repeatable; --list shows them)
    .venv/bin/python benchmarks/harness.py --micro --label after [--src PATH]   # micro costs, saved per label
    .venv/bin/python benchmarks/harness.py --readme           # regenerate README.md's tables from the JSON

The scenarios are data (``benchmarks/scenarios.py``); see benchmarks/README.md for the method. Loopback only; every
load loop is bounded in count and time; only processes the harness started are stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import hubs as hubmod  # noqa: E402  (puts tests/ on sys.path)
import loadgen  # noqa: E402
import measure  # noqa: E402
import pipeline  # noqa: E402
import report  # noqa: E402
from hubs import Options, log  # noqa: E402
from scenarios import BY_NAME, SCENARIOS, Scenario, param  # noqa: E402

from otlp_receiver import OTLPReceiver  # noqa: E402

RESULTS = BENCH / "results.json"
SMOKE_RESULTS = BENCH / "results-smoke.json"
PARTIAL_RESULTS = BENCH / "results-partial.json"
MICRO_RESULTS = BENCH / "results-micro.json"
BREAKDOWN_RESULTS = BENCH / "results-breakdown.json"  # runs of breakdown scenarios only: their own README block
SMOKE = {"rounds": 1, "duration_s": 3.0, "warmup_s": 1.0}


def run_scenario(
    scenario: Scenario, args: argparse.Namespace, receiver: OTLPReceiver, workdir: Path, options: Options
) -> dict[str, Any]:
    smoke = args.smoke
    rounds = args.rounds or (SMOKE["rounds"] if smoke else scenario.rounds)
    duration = args.duration or (SMOKE["duration_s"] if smoke else scenario.duration_s)
    warmup = SMOKE["warmup_s"] if smoke else scenario.warmup_s
    labels = (scenario.baseline.label, scenario.candidate.label)
    entry: dict[str, Any] = {
        "kind": scenario.kind,
        "measures": scenario.measures,
        "labels": list(labels),
        "variants": {"baseline": asdict(scenario.baseline), "candidate": asdict(scenario.candidate)},
        "started_at": hubmod.now_iso(),
    }
    started = time.monotonic()
    receiver.clear()
    if scenario.kind == "pipeline":
        result = pipeline.run(
            param(scenario, "spans", smoke),
            param(scenario, "paced_spans", smoke),
            float(scenario.params["rate"]),
            options.hub_pythonpath,
        )
    elif scenario.kind == "shutdown":
        result = measure.run_shutdown(scenario, workdir / scenario.name, options, smoke)
    elif scenario.kind == "imports":
        import imports

        result = imports.run(scenario, options, smoke)
    elif scenario.kind == "outage":
        import outage

        result = outage.run(scenario, workdir / scenario.name, options, smoke)
    else:
        pair, envs = hubmod.start_pair(workdir / scenario.name, scenario, receiver.http_endpoint, options)
        entry["env"] = envs
        try:
            if scenario.kind in ("load", "breakdown"):
                probes = (
                    {label: hubmod.probe_dir(workdir / scenario.name, label) for label in labels}
                    if scenario.kind == "breakdown"
                    else None
                )
                result = measure.run_load(
                    scenario, pair, labels, receiver, smoke, args.loadgen, rounds, duration, warmup, probes
                )
            elif scenario.kind == "scrape":
                result = measure.run_scrape(scenario, pair, labels, smoke)
            elif scenario.kind == "latency":
                result = measure.run_latency(scenario, pair, labels, smoke)
            elif scenario.kind == "cycles":
                import cycles

                result = cycles.run(
                    pair,
                    labels,
                    receiver,
                    param(scenario, "blocks", smoke),
                    param(scenario, "block_cycles", smoke),
                    fast=scenario.setup.spawner == "fast",
                )
            else:
                raise ValueError(f"unknown kind {scenario.kind!r}")
            result["exit_s_live_collector"] = hubmod.stop_all(pair)
        finally:
            hubmod.stop_all(pair)
    entry.update(result)
    entry["targets"] = measure.judge_targets(scenario.targets, result.get("summary", {}))
    entry["run_time_s"] = round(time.monotonic() - started, 1)
    for target in entry["targets"]:
        log(f"  target '{target['words']}': {target['verdict']} ({target.get('value')} {target.get('ci95') or ''})")
    return entry


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [".venv/bin/python", "benchmarks/harness.py", *sys.argv[1:]])


def run(args: argparse.Namespace) -> int:
    names = args.scenario or [s.name for s in SCENARIOS if s.default or args.all]
    selected = [BY_NAME[name] for name in names]
    breakdowns_only = bool(selected) and all(s.kind == "breakdown" for s in selected)
    if args.output:
        output = args.output
    elif args.scenario:
        output = BREAKDOWN_RESULTS if breakdowns_only and not args.smoke else PARTIAL_RESULTS
    else:
        output = SMOKE_RESULTS if args.smoke else RESULTS
    options = Options(
        hub_pythonpath=args.hub_pythonpath or "",
        candidate_set=dict(setting.split("=", 1) for setting in args.set),
        keep=args.keep,
    )
    dropped = sorted(k for k in os.environ if k.startswith("OTEL_"))
    for key in dropped:  # the hubs get the scenarios' settings and nothing else of OpenTelemetry's
        del os.environ[key]
    if dropped:
        log(f"ignoring {dropped} from the environment")
    wrk = loadgen.wrk_version() if shutil.which("wrk") and args.loadgen != "python" else ""
    if args.loadgen == "wrk" and not wrk:
        log("--loadgen wrk: wrk is not on PATH (apt-get install -y wrk)")
        return 2
    mode = "smoke" if args.smoke else "full"
    log(f"mode {mode}; scenarios {names}; load generators: {wrk or 'no wrk'} for static GETs, Python for the rest")
    workdir = Path(tempfile.mkdtemp(prefix="jh_otel_harness_"))
    results: dict[str, Any] = {
        "harness": 1,
        "mode": mode,
        "command": command_line(),
        "started_at": hubmod.now_iso(),
        "machine": hubmod.machine(),
        "versions": hubmod.versions(),
        "code": hubmod.code_state(),
        "hub_jh_otel": hubmod.hub_jh_otel(options),
        "options": {"hub_pythonpath": options.hub_pythonpath, "set": options.candidate_set, "loadgen": args.loadgen},
        "load_generators": {"wrk": wrk or None, "python": "threads + http.client keep-alive, in a child process"},
        "ignored_environment": dropped,
        "workdir": str(workdir),
        "scenarios": {},
        "failures": [],
    }
    started = time.monotonic()
    receiver = OTLPReceiver().start()
    try:
        for scenario in selected:
            log(f"scenario {scenario.name}: {scenario.measures}")
            try:
                results["scenarios"][scenario.name] = run_scenario(scenario, args, receiver, workdir, options)
            except Exception as error:  # noqa: BLE001 - reported, and the other scenarios still run
                log(f"scenario {scenario.name} FAILED: {type(error).__name__}: {error}")
                results["failures"].append({"scenario": scenario.name, "error": traceback.format_exc()[-4000:]})
            output.write_text(json.dumps(results, indent=2) + "\n")  # what is done so far survives an interruption
    finally:
        receiver.stop()
        results["finished_at"] = hubmod.now_iso()
        results["run_time_s"] = round(time.monotonic() - started, 1)
        results["code_at_end"] = hubmod.code_state()
        results["code_changed_during_run"] = results["code_at_end"] != results["code"]
        if results["code_changed_during_run"]:
            log("WARNING: the code changed during the run (see code and code_at_end in the JSON)")
        output.write_text(json.dumps(results, indent=2) + "\n")
        if results["failures"] or options.keep:
            log(f"hub working directories and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(report.targets_table(results))
    print()
    log(f"run time {results['run_time_s']} s; results: {output}; README: benchmarks/harness.py --readme")
    return 1 if results["failures"] else 0


# --------------------------------------------------------------------------
# Micro costs
# --------------------------------------------------------------------------


def run_micro(args: argparse.Namespace) -> int:
    """benchmarks/micro.py under pytest-benchmark, ``--repeat`` times in fresh processes, saved under ``--label``."""
    if not args.label:
        print("--micro needs --label (e.g. before, after)", file=sys.stderr)
        return 2
    import importlib.util

    if importlib.util.find_spec("pytest_benchmark") is None:
        print("--micro needs pytest-benchmark: .venv/bin/pip install 'pytest-benchmark>=5'", file=sys.stderr)
        return 2
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if args.src:
        env["PYTHONPATH"] = str(Path(args.src).resolve())
    which = subprocess.run(
        [sys.executable, "-c", "import jh_otel; print(jh_otel.__file__)"], env=env, capture_output=True, text=True
    )
    if which.returncode != 0:
        print(f"jh_otel does not import with that path:\n{which.stderr}", file=sys.stderr)
        return 2
    package = Path(which.stdout.strip()).parent
    repeat = args.repeat or (1 if args.smoke else 3)
    calibration = (
        ["--benchmark-max-time=0.1", "--benchmark-min-rounds=3"]
        if args.smoke
        else ["--benchmark-max-time=2.0", "--benchmark-min-rounds=20"]
    )
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeat):
            out = Path(tmp) / f"run{i}.json"
            command = [
                sys.executable,
                "-m",
                "pytest",
                str(BENCH / "micro.py"),
                "-p",
                "no:cacheprovider",
                "-q",
                "--benchmark-only",
                "--benchmark-warmup=on",
                f"--benchmark-json={out}",
                f"--benchmark-storage=file://{tmp}",  # not ./.benchmarks in the checkout
                *calibration,
            ]
            log(f"micro run {i + 1}/{repeat}: jh_otel from {package}")
            done = subprocess.run(command, cwd=BENCH.parent, env=env, capture_output=True, text=True, timeout=1800)
            if done.returncode != 0:
                print(done.stdout[-4000:], done.stderr[-2000:], file=sys.stderr)
                return 1
            runs.append(json.loads(out.read_text()))
    entry = report.micro_entry(runs, label=args.label, smoke=args.smoke, package=str(package))
    entry["digest"] = hubmod.source_digest(package)
    entry["code"] = hubmod.code_state() if not args.src else {"src": str(Path(args.src).resolve())}
    entry["command"] = command_line()
    entry["machine"] = hubmod.machine()
    entry["versions"] = hubmod.versions()
    output = args.micro_output
    data = json.loads(output.read_text()) if output.exists() else {"labels": {}}
    data["labels"][args.label] = entry
    output.write_text(json.dumps(data, indent=2) + "\n")
    print(report.micro_table(data, [args.label]))
    log(f"saved as label {args.label!r} in {output}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="one round of 3 s per scenario, smaller setups")
    parser.add_argument("--scenario", action="append", choices=sorted(BY_NAME), help="run only this (repeatable)")
    parser.add_argument("--all", action="store_true", help="every scenario, the non-default ones too")
    parser.add_argument("--list", action="store_true", help="print the scenario table and exit")
    parser.add_argument("--rounds", type=int, help="ABBA rounds per load scenario (default: the scenario's)")
    parser.add_argument("--duration", type=float, help="seconds per measured load run (default: the scenario's)")
    parser.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="auto: wrk for a static GET if on PATH, the Python generator for the rest; python: always Python",
    )
    parser.add_argument("--output", type=Path, help="results JSON (default results.json, -smoke, -partial)")
    parser.add_argument("--keep", action="store_true", help="keep the hubs' working directories and logs")
    parser.add_argument("--hub-pythonpath", metavar="PATH", help="first on the hubs' path: another jh_otel's src")
    parser.add_argument(
        "--set", action="append", default=[], metavar="VAR=VALUE", help="an extra setting of the candidate hub"
    )
    parser.add_argument("--micro", action="store_true", help="run the micro costs (pytest-benchmark) instead")
    parser.add_argument("--label", help="--micro: the label to save the results under (before, after, ...)")
    parser.add_argument("--src", help="--micro: measure the jh_otel in this src directory (PYTHONPATH)")
    parser.add_argument("--repeat", type=int, help="--micro: pytest-benchmark runs in fresh processes (3; smoke 1)")
    parser.add_argument("--micro-output", type=Path, default=MICRO_RESULTS)
    parser.add_argument("--readme", action="store_true", help="regenerate benchmarks/README.md's tables, run nothing")
    args = parser.parse_args()
    if args.rounds is not None and not 1 <= args.rounds <= 100:
        parser.error("--rounds must be between 1 and 100")
    if args.duration is not None and not 1 <= args.duration <= 600:
        parser.error("--duration must be between 1 and 600 seconds")
    if any("=" not in setting for setting in args.set):
        parser.error("--set takes VAR=VALUE")
    if args.list:
        print(report.scenario_table(SCENARIOS))
        return 0
    if args.readme:
        return report.render_readme(args.output, args.micro_output)
    if args.micro:
        return run_micro(args)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
