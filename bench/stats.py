"""Small statistics and number formatting shared by every benchmark."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


@dataclass(frozen=True)
class Summary:
    """A figure over repeated runs: the median, and the spread as min–max."""

    median: float
    low: float
    high: float
    runs: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Summary:
        data = [float(v) for v in values]
        if not data:
            return cls(math.nan, math.nan, math.nan, 0)
        return cls(median(data), min(data), max(data), len(data))

    def scaled(self, factor: float) -> Summary:
        return Summary(self.median * factor, self.low * factor, self.high * factor, self.runs)


def number(value: float, digits: int | None = None) -> str:
    """A readable number: fewer decimals as it grows, thousands separated."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if digits is None:
        magnitude = abs(value)
        digits = 0 if magnitude >= 100 else 1 if magnitude >= 10 else 2 if magnitude >= 1 else 3
    return f"{value:,.{digits}f}"


def spread(summary: Summary, digits: int | None = None) -> str:
    """'low–high' over the runs (a single run has no spread)."""
    if summary.runs < 2:
        return "(1 run)"
    return f"{number(summary.low, digits)}–{number(summary.high, digits)}"


def ratio(value: float, floor: float) -> float:
    if not floor or math.isnan(floor) or math.isnan(value):
        return math.nan
    return value / floor


def times(value: float) -> str:
    """A ratio as '2.4×'."""
    if math.isnan(value):
        return "n/a"
    return f"{value:.2f}×" if value < 10 else f"{value:.1f}×"


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"
