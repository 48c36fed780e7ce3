"""Latency statistics from integer nanoseconds, without numpy.

Percentiles use the nearest-rank method on a sorted list: p is the smallest sample such that at
least p% of the samples are less than or equal to it (p100 is the maximum).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

NS_PER_MS = 1_000_000


def percentile(sorted_ns: Sequence[int], p: float) -> int:
    """Nearest-rank percentile of an ascending list of nanoseconds (0 < p <= 100)."""
    if not sorted_ns:
        raise ValueError("percentile of no samples")
    if not 0 < p <= 100:
        raise ValueError(f"percentile {p} is not in (0, 100]")
    rank = math.ceil(p / 100 * len(sorted_ns))
    return sorted_ns[max(rank, 1) - 1]


def ms(ns: int | float) -> float:
    return round(ns / NS_PER_MS, 3)


def summarize(latencies_ns: Sequence[int], wall_ns: int) -> dict[str, float | int]:
    """ops, seconds, ops/s and latency percentiles (ms) of one measured window."""
    ordered = sorted(latencies_ns)
    n = len(ordered)
    if n == 0 or wall_ns <= 0:
        return {"ops": n, "seconds": round(wall_ns / 1e9, 3), "ops_per_s": 0.0}
    return {
        "ops": n,
        "seconds": round(wall_ns / 1e9, 3),
        "ops_per_s": round(n / (wall_ns / 1e9), 1),
        "mean_ms": ms(sum(ordered) / n),
        "p50_ms": ms(percentile(ordered, 50)),
        "p90_ms": ms(percentile(ordered, 90)),
        "p99_ms": ms(percentile(ordered, 99)),
        "max_ms": ms(ordered[-1]),
    }


def rate(count: int, elapsed_ns: int) -> float:
    return round(count / (elapsed_ns / 1e9), 1) if elapsed_ns > 0 else 0.0
