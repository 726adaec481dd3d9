#!/usr/bin/env python3
"""Resolution check: jh-otel resolves with the pip operators have, quickly, to one OpenTelemetry train.

    python3 .ci/resolution.py [--limit 60] [--jobs 1] [--python 3.11]... [--keep]

For each Python 3.10 to 3.13 on this machine, a fresh venv with the pip that Python bundles (`python -m venv`);
then one venv with the newest pip (`pip install -U pip`, on the newest Python found) and one with pip 23.0 (on the
oldest). In each, `pip install --dry-run --report` of:

    checkout        the checkout
    checkout+ops    the checkout beside unpinned opentelemetry-distro opentelemetry-exporter-otlp jupyterhub
    wheel           jh-otel by name (a wheel of the checkout, built once, found with --find-links)
    wheel+ops       jh-otel by name beside the same packages

Each case must resolve in under --limit seconds of wall time, and every opentelemetry-* package it resolves must
belong to one train: the core packages (API, SDK, exporter-otlp*, proto) at one version, the contrib ones
(semantic-conventions, instrumentation*, distro, exporter-prometheus, util-http, ...) at the one the resolved SDK
pins, and the packages pyproject.toml caps with "<=" at that cap (the newest train allowed). The machine's pip
configuration (indexes, constraints) is used as it is. Exit status 1 on any failure.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: tomli, or the copy pip vendors
    try:
        import tomli as tomllib
    except ImportError:
        try:
            from pip._vendor import tomli as tomllib
        except ImportError:
            sys.exit("resolution.py: needs Python 3.11+ (tomllib), tomli or pip")

ROOT = Path(__file__).resolve().parent.parent
MINORS = (10, 11, 12, 13)
OPERATOR_PACKAGES = ["opentelemetry-distro", "opentelemetry-exporter-otlp", "jupyterhub"]
OLDEST_PIP = "23.0"


def log(message: str) -> None:
    print(message, flush=True)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


def find_python(minor: int) -> str | None:
    """A working python3.MINOR: PATH first (a pyenv shim may point at nothing), then pyenv's versions, then /usr."""
    candidates = [shutil.which(f"python3.{minor}")]
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/3.{minor}.*/bin/python3.{minor}"), reverse=True)
    candidates += [f"/usr/local/bin/python3.{minor}", f"/usr/bin/python3.{minor}"]
    for candidate in candidates:
        if not candidate or not os.access(candidate, os.X_OK):
            continue
        probe = run([candidate, "-c", "import sys, venv, ensurepip; print(sys.version_info[1], sys.executable)"])
        if probe.returncode == 0 and probe.stdout.split()[0] == str(minor):
            return probe.stdout.split()[1]
    return None


@dataclass
class Env:
    label: str  # "3.11 bundled", "3.13 newest", ...
    python: str  # the interpreter the venv is made from
    pip_args: list[str]  # []: the bundled pip; else `pip install` these first
    path: Path = Path()
    pip_version: str = ""


@dataclass
class Result:
    env: Env
    case: str
    seconds: float = 0.0
    ok: bool = False
    problems: list[str] = field(default_factory=list)
    core: dict[str, str] = field(default_factory=dict)
    contrib: dict[str, str] = field(default_factory=dict)
    jupyterhub: str = ""
    backtracks: int = 0  # pip's "looking at multiple versions of X" messages


def make_env(env: Env, work: Path) -> None:
    env.path = work / ("venv-" + env.label.replace(" ", "-"))
    subprocess.run([env.python, "-m", "venv", str(env.path)], check=True)
    pip = [str(env.path / "bin" / "python"), "-m", "pip"]
    if env.pip_args:
        subprocess.run(pip + ["install", "-q", *env.pip_args], check=True)
    env.pip_version = run(pip + ["--version"]).stdout.split()[1]


def declared_caps(pyproject: dict) -> dict[str, str]:
    """{canonical name: version} of every runtime dependency capped with "<=", e.g. opentelemetry-sdk: 1.45.1."""
    caps = {}
    for requirement in pyproject["project"]["dependencies"]:
        match = re.match(r"\s*([A-Za-z0-9._-]+)[^;]*?<=\s*([^,;\s]+)", requirement)
        if match:
            caps[canonical(match.group(1))] = match.group(2)
    return caps


def check_report(result: Result, report: dict, caps: dict[str, str], version: str) -> None:
    installs = {canonical(i["metadata"]["name"]): i for i in report["install"]}
    otel = {name: i["metadata"]["version"] for name, i in installs.items() if name.startswith("opentelemetry-")}
    result.core = {n: v for n, v in otel.items() if not v.startswith("0.")}
    result.contrib = {n: v for n, v in otel.items() if v.startswith("0.")}
    result.jupyterhub = installs.get("jupyterhub", {}).get("metadata", {}).get("version", "")
    problems = result.problems
    ours = installs.get("jh-otel")
    if ours is None:
        problems.append("jh-otel is not in the resolution")
    elif ours["metadata"]["version"] != version:
        problems.append(f"resolved jh-otel {ours['metadata']['version']}, not the checkout's {version}")
    elif not ours["download_info"]["url"].startswith("file://"):
        problems.append(f"resolved jh-otel from {ours['download_info']['url']}, not the checkout or its wheel")
    if len(set(result.core.values())) != 1:
        problems.append(f"core packages at several versions: {result.core}")
    if len(set(result.contrib.values())) != 1:
        problems.append(f"contrib packages at several versions: {result.contrib}")
    sdk = installs.get("opentelemetry-sdk")
    if sdk is None:
        problems.append("opentelemetry-sdk is not in the resolution")
    else:
        pins = [
            r for r in sdk["metadata"].get("requires_dist", []) if r.startswith("opentelemetry-semantic-conventions")
        ]
        pinned = pins[0].split("==")[1].split(";")[0].strip() if pins and "==" in pins[0] else None
        if pinned and set(result.contrib.values()) != {pinned}:
            problems.append(
                f"the SDK {sdk['metadata']['version']} pins semantic-conventions {pinned}, "
                f"contrib resolved at {sorted(set(result.contrib.values()))}"
            )
    for name, cap in caps.items():
        if name in otel and otel[name] != cap:
            problems.append(f"{name} resolved at {otel[name]}, not at its declared ceiling {cap}")


def resolve(
    env: Env, case: str, work: Path, wheel_dir: Path, caps: dict[str, str], version: str, limit: float
) -> Result:
    result = Result(env, case)
    report_path = work / f"report-{env.label.replace(' ', '-')}-{case}.json"
    target = [str(ROOT)] if case.startswith("checkout") else ["--find-links", str(wheel_dir), "jh-otel"]
    extra = OPERATOR_PACKAGES if case.endswith("+ops") else []
    cmd = [
        str(env.path / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--report",
        str(report_path),
        *target,
        *extra,
    ]
    start = time.monotonic()
    try:
        proc = run(cmd, timeout=max(3 * limit, 180))
    except subprocess.TimeoutExpired:
        result.seconds = time.monotonic() - start
        result.problems.append(f"pip still resolving after {result.seconds:.0f} s: stopped")
        return result
    result.seconds = time.monotonic() - start
    result.backtracks = proc.stdout.count("pip is looking at multiple versions of")
    if proc.returncode != 0:
        lines = [
            line
            for line in (proc.stdout + proc.stderr).splitlines()
            if line.strip() and not line.startswith("WARNING: Location")
        ]  # this machine's local indexes
        tail = "\n".join(lines[-15:])
        result.problems.append(f"pip exited {proc.returncode}:\n{tail}")
        return result
    check_report(result, json.loads(report_path.read_text()), caps, version)
    if result.seconds >= limit:
        result.problems.append(f"took {result.seconds:.1f} s, the limit is {limit:.0f} s")
    result.ok = not result.problems
    return result


def show(result: Result) -> None:
    head = f"[{result.env.label}, pip {result.env.pip_version}] {result.case}:"
    log(f"{head} {'ok' if result.ok else 'FAILED'} in {result.seconds:.1f} s, {result.backtracks} backtracks")
    for group in (result.core, result.contrib):
        for version in sorted(set(group.values())):
            names = sorted(n.removeprefix("opentelemetry-") for n, v in group.items() if v == version)
            log(f"    {version:<8} {', '.join(names)}")
    if result.jupyterhub:
        log(f"    jupyterhub {result.jupyterhub}")
    for problem in result.problems:
        log("    problem: " + problem.replace("\n", "\n        "))


def train(result: Result) -> str:
    core = "/".join(sorted(set(result.core.values()))) or "-"
    contrib = "/".join(sorted(set(result.contrib.values()))) or "-"
    return f"{core} + {contrib}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=float, default=60.0, help="seconds one resolution may take (default 60)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="resolutions run at once (default 1: pip is CPU-bound on big index pages, and the "
        "times are only comparable with the limit when nothing else competes)",
    )
    parser.add_argument("--python", action="append", help="only these Python versions, e.g. 3.11 (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the venvs and reports (the path is printed)")
    args = parser.parse_args()
    started = time.monotonic()

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    caps = declared_caps(pyproject)
    minors = [int(v.split(".")[1]) for v in args.python] if args.python else list(MINORS)
    pythons = {}
    for minor in minors:
        found = find_python(minor)
        log(f"python3.{minor}: {found or 'not on this machine: skipped'}")
        if found:
            pythons[minor] = found
    if not pythons:
        log("resolution.py: no Python 3.10 to 3.13 found")
        return 1

    envs = [Env(f"3.{m} bundled", p, []) for m, p in pythons.items()]
    envs.append(Env(f"3.{max(pythons)} newest", pythons[max(pythons)], ["--upgrade", "pip"]))
    envs.append(Env(f"3.{min(pythons)} pip{OLDEST_PIP}", pythons[min(pythons)], [f"pip=={OLDEST_PIP}"]))

    work = Path(tempfile.mkdtemp(prefix="jh-otel-resolution-"))
    try:
        for env in envs:
            make_env(env, work)
            log(f"venv {env.label}: pip {env.pip_version}")

        # the wheel that `pip install jh-otel` would get, built once by the first bundled pip
        wheel_dir = work / "wheels"
        build = run(
            [
                str(envs[0].path / "bin" / "python"),
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--quiet",
                "-w",
                str(wheel_dir),
                str(ROOT),
            ]
        )
        wheels = sorted(wheel_dir.glob("jh_otel-*.whl"))
        if build.returncode != 0 or len(wheels) != 1:
            log(f"building the wheel failed:\n{build.stdout}{build.stderr}")
            return 1
        version = wheels[0].name.split("-")[1]
        log(f"wheel: {wheels[0].name} (built with pip {envs[0].pip_version}, {envs[0].label})")

        cases = ["checkout", "checkout+ops", "wheel", "wheel+ops"]
        jobs = [(env, case) for env in envs for case in cases]
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = [
                pool.submit(resolve, env, case, work, wheel_dir, caps, version, args.limit) for env, case in jobs
            ]
            results = []
            for future in futures:
                results.append(future.result())
                show(results[-1])
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    log("")
    log(f"{'python / pip':<26} {'case':<13} {'seconds':>7} {'backtracks':>10}  {'train (core + contrib)':<24} result")
    for r in results:
        log(
            f"{r.env.label + ', pip ' + r.env.pip_version:<26} {r.case:<13} {r.seconds:>7.1f} {r.backtracks:>10}  "
            f"{train(r):<24} {'ok' if r.ok else 'FAILED'}"
        )
    failed = [r for r in results if not r.ok]
    total = time.monotonic() - started
    log(
        f"resolution check: {len(results) - len(failed)} of {len(results)} cases ok, "
        f"slowest {max(r.seconds for r in results):.1f} s (limit {args.limit:.0f} s, {args.jobs} at once), "
        f"total {total:.0f} s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
