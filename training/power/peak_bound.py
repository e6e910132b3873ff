"""A calibrated bound on the peak: the most power a series reaches within the next k steps.

A scaling decision has to hold from now until a change could take effect and hold, so it needs the maximum
over that window, not each step's own quantile. On the calibration split, for every window whose leads
1..k are all scored, the score is how far the actual peak max(actual[1..k]) lies above the peak of the
calibrated per-step upper ends max(upper[1..k]); lead k's margin is the conformal quantile of those scores
at the upper end's own level, (1 + coverage) / 2 (negative where the per-step uppers overstate the peak).

    peak_upper[k] = max(upper[1..k]) + margin[k], made non-decreasing in k

Leads with fewer than `MIN_WINDOWS` full calibration windows (or than the conformal rule needs at that level:
training.conformal.points_for) have no margin of their own: they take the
last calibrated lead's margin if it is positive, else 0. A calibration without margins (models saved
before this bound existed) gives margin 0 everywhere: the maximum of the per-step uppers, the rule every
scaling decision used before. That fallback is not itself a calibrated bound on the peak; on the backtest
suite's calibration splits it was the larger bound at long leads (docs/results.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.conformal import conformal_quantile, points_for

MIN_WINDOWS = 30


def peak_level(coverage: float) -> float:
    """The quantile level of a central `coverage` interval's upper end, which the peak bound shares."""
    return (1.0 + coverage) / 2.0


def fit_peak_margins(upper: np.ndarray, actual: np.ndarray, mask: np.ndarray, coverage: float) -> tuple[float, ...]:
    """Per lead k, the conformal margin of the peak over leads 1..k (only the leading run of leads with enough
    full windows; see the module docstring).

    Args:
        upper: [N, H] calibrated per-step upper ends in watts. actual: [N, H] observed watts.
        mask: [N, H] which (window, lead) pairs are calibration points.
        coverage: the interval's nominal central coverage.
    """
    full = np.cumprod(mask, axis=1).astype(bool)  # leads 1..k all scored
    score = np.fmax.accumulate(np.where(mask, actual, -np.inf), axis=1) - np.maximum.accumulate(upper, axis=1)
    margins, level = [], peak_level(coverage)
    needed = max(MIN_WINDOWS, points_for(level))
    for lead in range(actual.shape[1]):
        scores = score[full[:, lead], lead]
        if scores.size < needed:
            break
        margins.append(round(conformal_quantile(scores, level), 4))
    return tuple(margins)


def peak_upper(upper: np.ndarray, margins: Sequence[float]) -> np.ndarray:
    """[N, H] bound on max(actual[1..k]) for every lead k, from the calibrated per-step uppers [N, H]."""
    horizon = upper.shape[-1]
    extended = np.zeros(horizon)
    known = min(len(margins), horizon)
    extended[:known] = margins[:known]
    if known < horizon and margins:
        extended[known:] = max(margins[-1], 0.0)
    bound = np.maximum.accumulate(upper, axis=-1) + extended
    return np.maximum.accumulate(bound, axis=-1)


