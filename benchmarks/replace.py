"""Put one scenario of a partial run (``harness.py --scenario NAME --output FILE``) in place of its entry in a full
run's JSON, recorded under ``replaced`` with why, the partial run's code and command (the README header lists it).

    .venv/bin/python benchmarks/replace.py benchmarks/results.json PARTIAL.json NAME "why"
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> int:
    full_path, partial_path, name, why = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    full, partial = json.loads(full_path.read_text()), json.loads(partial_path.read_text())
    full["scenarios"][name] = partial["scenarios"][name]
    replaced = [r for r in full.get("replaced", []) if r["scenario"] != name]
    replaced.append(
        {
            "scenario": name,
            "why": why,
            "started_at": partial.get("started_at"),
            "head": partial.get("code", {}).get("head", "?")
            + (" + uncommitted changes" if partial.get("code", {}).get("uncommitted") else ""),
            "digest": partial.get("hub_jh_otel", {}).get("digest"),
            "command": partial.get("command"),
        }
    )
    full["replaced"] = replaced
    full_path.write_text(json.dumps(full, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
