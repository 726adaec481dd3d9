"""Paired ratios, their 95 % confidence interval (Student's t), and how a target is judged on them."""

from __future__ import annotations

import math
import statistics
from typing import Any

# two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom (no scipy needed)
T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip

MET, NOT_MET, UNCLEAR = "met", "not met", "unclear"


def t975(df: int) -> float:
    return T975[df - 1] if df <= len(T975) else 1.96


def mean_ci(values: list[float]) -> dict[str, Any]:
    """Mean of ``values`` and its 95 % confidence interval; no interval for fewer than two values."""
    if not values:
        return {"n": 0, "mean": None, "ci95": None, "values": []}
    mean = statistics.fmean(values)
    out: dict[str, Any] = {"n": len(values), "mean": round(mean, 4), "values": [round(v, 4) for v in values]}
    if len(values) < 2:
        out["ci95"] = None
        return out
    half = t975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    out["ci95"] = [round(mean - half, 4), round(mean + half, 4)]
    out["stdev"] = round(statistics.stdev(values), 4)
    return out


def good(value: float, op: str, threshold: float) -> bool:
    return value >= threshold if op == ">=" else value <= threshold


def judge(estimate: dict[str, Any] | float | None, op: str, threshold: float, judged: str) -> dict[str, Any]:
    """The verdict on a target: for ``judged="ci"`` met when the whole interval is on the right side of the
    threshold, not met when none of it is, unclear when it straddles it (or with one round, no interval); for
    ``judged="value"`` met or not met on the value itself."""
    if estimate is None:
        return {"verdict": UNCLEAR, "why": "not measured"}
    if judged == "value":
        value = estimate if isinstance(estimate, (int, float)) else estimate.get("mean")
        if value is None:
            return {"verdict": UNCLEAR, "why": "not measured"}
        return {"verdict": MET if good(value, op, threshold) else NOT_MET, "value": value}
    assert isinstance(estimate, dict)
    mean, ci = estimate.get("mean"), estimate.get("ci95")
    if mean is None:
        return {"verdict": UNCLEAR, "why": "not measured"}
    if not ci:
        return {"verdict": UNCLEAR, "why": f"{estimate.get('n', 0)} round(s): no confidence interval", "value": mean}
    low, high = ci
    if good(low, op, threshold) and good(high, op, threshold):
        verdict = MET
    elif not good(low, op, threshold) and not good(high, op, threshold):
        verdict = NOT_MET
    else:
        verdict = UNCLEAR
    return {"verdict": verdict, "value": mean, "ci95": ci}
