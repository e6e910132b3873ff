"""The split-conformal quantile: the k-th smallest of n calibration scores, k = ceil((n + 1) * level), the
finite-sample rule under which a new score falls at or below it with probability at least `level`."""

from __future__ import annotations

import math

import numpy as np


def points_for(level: float) -> int:
    """The fewest scores whose conformal quantile at `level` is a score (k <= n): below it the rule asks for more
    than the largest, and a bound taken there covers less than `level` (n / (n + 1))."""
    return max(1, math.ceil(level / (1.0 - level) - 1e-9))


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The k-th smallest score (the largest when k > n, which covers less than `level`: callers keep n at least
    `points_for(level)`; the smallest when k < 1)."""
    scores = np.ravel(scores)
    n = scores.size
    k = min(n, max(1, math.ceil((n + 1) * level - 1e-9)))  # 11 * 0.8 is 8.8000000000000007 in floats: still k = 9
    return float(np.partition(scores, k - 1)[k - 1])
