"""Percentiles and the per-measurement summary every row reports."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None without data."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def distribution_ms(values: Iterable[float]) -> dict[str, float | int | None]:
    """p50/p95/p99/max in milliseconds of values in seconds, and how many there were."""
    data = list(values)
    return {
        "n": len(data),
        "p50": ms(percentile(data, 50)),
        "p95": ms(percentile(data, 95)),
        "p99": ms(percentile(data, 99)),
        "max": ms(max(data)) if data else None,
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return round(numerator / denominator, 3)


def difference(left: float | None, right: float | None) -> float | None:
    if left is None or right is None:
        return None
    return round(left - right, 2)


def median(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return None if not present else round(percentile(present, 50) or 0.0, 3)
