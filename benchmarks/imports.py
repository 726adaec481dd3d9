"""The ``imports`` kind: what each import of a jh_otel hub adds to a plain hub's memory.

A fresh interpreter imports ``jupyterhub.app`` (what a plain hub has), then the modules a jh_otel hub loads, one
at a time in the order given, and reports its RSS and USS after each (``gc.collect()`` first). A module's figure is
what it added on top of everything before it, so a library shared by two modules counts for the first. Run
``repeat`` times in fresh processes; each figure is the median.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from typing import Any

from scenarios import Scenario, param

CHILD = r"""
import gc, importlib, json, sys, psutil
process = psutil.Process()
def now():
    gc.collect()
    info = process.memory_full_info()
    return info.rss / 2**20, info.uss / 2**20, len(sys.modules)
rows = []
for name in sys.argv[1:]:
    if name != "-":
        importlib.import_module(name)
    rows.append((name, *now()))
print(json.dumps(rows))
"""


def measure(modules: list[str], env: dict[str, str]) -> list[tuple[str, float, float, int]]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, "-", *modules], capture_output=True, text=True, env=env, timeout=300, check=True
    )
    return [tuple(row) for row in json.loads(out.stdout)]


def run(scenario: Scenario, options: Any, smoke: bool) -> dict[str, Any]:
    modules = list(scenario.params["modules"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if options.hub_pythonpath:
        env["PYTHONPATH"] = options.hub_pythonpath
    runs = [measure(modules, env) for _ in range(param(scenario, "repeat", smoke))]
    rows = []
    for i, name in enumerate(["-", *modules]):
        rss = statistics.median(r[i][1] for r in runs)
        uss = statistics.median(r[i][2] for r in runs)
        count = runs[0][i][3]
        if i == 0:
            rows.append({"module": "(interpreter)", "rss_mib": round(rss, 1), "modules": count})
            continue
        prev_rss = statistics.median(r[i - 1][1] for r in runs)
        prev_uss = statistics.median(r[i - 1][2] for r in runs)
        rows.append(
            {
                "module": name,
                "rss_mib": round(rss, 1),
                "uss_mib": round(uss, 1),
                "added_rss_mib": round(rss - prev_rss, 2),
                "added_uss_mib": round(uss - prev_uss, 2),
                "modules": count,
                "added_modules": count - runs[0][i - 1][3],
            }
        )
    base = next(r for r in rows if r["module"] == scenario.params["baseline_module"])
    total = rows[-1]
    extra = [r["module"] for r in rows if r["module"] in scenario.params.get("not_loaded_over_http", ())]
    loaded = [r for r in rows[rows.index(base) + 1 :] if r["module"] not in extra]
    return {
        "rows": rows,
        "repeat": len(runs),
        "summary": {
            "jh_otel_imports_rss_mib": round(sum(r["added_rss_mib"] for r in loaded), 1),
            "plain_hub_imports_rss_mib": base["rss_mib"],
            "total_rss_mib": total["rss_mib"],
        },
    }
