"""Medians over seeds with a stated spread, and BP/DBP ratios with an interval.

Why: training benchmarks have a handful of seeds, so every number in the report says how much it moves between
seeds and how that was measured: min–max below 3 values, a 95 % percentile bootstrap from 3 on (2,000 resamples,
fixed seed, so a report re-rendered from the same files shows the same intervals).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOOTSTRAP_FROM = 3
RESAMPLES = 2000
RANGE, CI = "min–max", "95% CI"


@dataclass(frozen=True)
class Estimate:
    """A median (or ratio of medians) with its interval; value is NaN when there was nothing to estimate from."""

    value: float
    low: float
    high: float
    kind: str  # RANGE, CI, or "" when n < 2
    n: int


def _clean(values) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return values[np.isfinite(values)]


def _bootstrap_medians(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.median(values[rng.integers(0, len(values), (RESAMPLES, len(values)))], axis=1)


def median(values) -> Estimate:
    """Median of the finite values, with min–max (n < 3) or a bootstrap CI of the median (n ≥ 3)."""
    v = _clean(values)
    if len(v) == 0:
        return Estimate(np.nan, np.nan, np.nan, "", 0)
    if len(v) < BOOTSTRAP_FROM:
        return Estimate(float(np.median(v)), float(v.min()), float(v.max()), RANGE if len(v) > 1 else "", len(v))
    low, high = np.percentile(_bootstrap_medians(v, np.random.default_rng(0)), [2.5, 97.5])
    return Estimate(float(np.median(v)), float(low), float(high), CI, len(v))


def ratio(numerator, denominator) -> Estimate:
    """median(numerator) / median(denominator); interval: bootstrap CI of that ratio when both sides have ≥ 3
    values (resampled independently), else min–max of the ratio over all numerator × denominator pairs. Undefined
    (NaN) where a denominator is 0: leaving those values out would move the median beside it."""
    a, b = _clean(numerator), _clean(denominator)
    n = min(len(a), len(b))
    if n == 0 or (b == 0).any():
        return Estimate(np.nan, np.nan, np.nan, "", 0)
    value = float(np.median(a) / np.median(b))
    if n < BOOTSTRAP_FROM:
        pairs = a[:, None] / b[None, :]
        kind = RANGE if pairs.size > 1 else ""
        return Estimate(value, float(pairs.min()), float(pairs.max()), kind, n)
    rng = np.random.default_rng(0)
    low, high = np.percentile(_bootstrap_medians(a, rng) / _bootstrap_medians(b, rng), [2.5, 97.5])
    return Estimate(value, float(low), float(high), CI, n)
