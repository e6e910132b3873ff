"""Calibrated prediction intervals and a `confidence` that means what it says.

Intervals: conformalized quantile regression (CQR). On the calibration tail, the score of a point is how
far the actual lies outside the model's raw [lower, upper]; the interval is widened (or narrowed) per
lead time by the score quantile that gives the nominal coverage. A `scaled` calibration (the features-only
mode) measures the scores in multiples of a per-forecast scale, so its margins grow with that scale
(normalized conformal prediction).

Confidence: the probability that the actual power lands within ±`tolerance` (10 % by default) of the
point forecast. A raw value comes from the calibrated interval (its width read as a normal spread); a
monotone map fitted on the calibration tail turns it into the observed hit rate, so that on held-out
data the mean confidence matches how often forecasts really land within the band.

Peak: a bound on the most power reached within the next k steps, calibrated on the same tail
(training.power.peak_bound); calibrations saved without it fall back to the maximum of the per-step uppers.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import erf, sqrt
from statistics import NormalDist

import numpy as np
from pydantic import BaseModel, ConfigDict

from training.conformal import conformal_quantile, points_for
from training.power.peak_bound import fit_peak_margins, peak_upper

_MIN_POINTS_PER_LEAD = 30
_CONFIDENCE_BINS = 10
_erf = np.vectorize(erf, otypes=[float])


@dataclass(frozen=True)
class CalibratedForecast:
    point: np.ndarray  # [N, H] watts
    lower: np.ndarray
    upper: np.ndarray
    confidence: np.ndarray  # [N, H] in [0, 1]
    peak_upper: np.ndarray | None = None  # [N, H] bound on max(actual[1..k]) (training.power.peak_bound)
    # [N, H, 2] the LSTM's median and the LightGBM's point that the served point blends, where the model has both
    # (what training.power.online_blend learns from); None otherwise
    experts: np.ndarray | None = None


class Calibration(BaseModel):
    """Fitted on the calibration tail; saved beside the weights as calibration.json."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    coverage: float  # nominal interval coverage
    tolerance: float  # confidence band, as a fraction of the point forecast
    margins_watts: tuple[float, ...]  # CQR widening per lead (multiples of the forecast's scale when `scaled`)
    raw_knots: tuple[float, ...]  # confidence map: raw value -> observed hit rate
    rate_knots: tuple[float, ...]
    calibration_points: int
    calibration_coverage: float  # coverage on the calibration tail after widening (in-sample)
    peak_margins_watts: tuple[float, ...] | None = None  # peak bound per lead (None: saved before it existed)
    scaled: bool = False

    def apply(self, quantiles_watts: np.ndarray, scale: np.ndarray | None = None) -> CalibratedForecast:
        """Raw quantiles [N, H, 3] in watts -> calibrated forecast; a `scaled` one needs every forecast's scale [N]."""
        margins = np.asarray(self.margins_watts)[None, :]
        if self.scaled:
            if scale is None:
                raise ValueError("this calibration widens by each forecast's scale; none was given")
            margins = margins * np.asarray(scale, dtype=float)[:, None]
        point = np.maximum(quantiles_watts[..., 1], 0.0)  # the median stays the point forecast
        lower = np.clip(quantiles_watts[..., 0] - margins, 0.0, point)
        upper = np.maximum(quantiles_watts[..., 2] + margins, point)
        raw = raw_confidence(point, lower, upper, self.coverage, self.tolerance)
        confidence = self.confidence(raw)
        return CalibratedForecast(point, lower, upper, confidence, peak_upper(upper, self.peak_margins_watts or ()))


    def confidence(self, raw: np.ndarray) -> np.ndarray:
        """The hit rate observed at a raw value (the fitted map). Below the lowest calibrated raw value it falls
        linearly to 0 at raw 0, where the hit band has no width: a forecast less certain than any seen in
        calibration is never given their hit rate."""
        knots, rates = self.raw_knots, self.rate_knots
        if knots[0] > 0.0:
            knots, rates = (0.0, *knots), (0.0, *rates)
        return np.interp(raw, knots, rates)


def raw_confidence(point: np.ndarray, lower: np.ndarray, upper: np.ndarray, coverage: float,
                   tolerance: float) -> np.ndarray:
    """P(|actual - point| <= tolerance * point) if the actual were normal with the interval's spread."""
    z = NormalDist().inv_cdf(0.5 + coverage / 2.0)
    sigma = np.maximum((upper - lower) / (2.0 * z), 1e-6)
    return _erf(tolerance * np.abs(point) / (sigma * sqrt(2.0)))


def points_needed(coverage: float) -> int:
    """The fewest scored calibration points `fit_calibration` takes at `coverage` (fewer: a margin covering less)."""
    return max(_MIN_POINTS_PER_LEAD, points_for(coverage))


def fit_calibration(quantiles_watts: np.ndarray, actual: np.ndarray, mask: np.ndarray, *,
                    coverage: float, tolerance: float, scale: np.ndarray | None = None) -> Calibration:
    """Fit interval margins and the confidence map on scored calibration points.

    Args:
        quantiles_watts: [N, H, 3] raw model quantiles in watts.
        actual: [N, H] observed watts. mask: [N, H] which pairs are calibration points.
        scale: [N] positive per-forecast scale; given, the margins are multiples of it (`scaled`).
    """
    needed = points_needed(coverage)
    if mask.sum() < needed:
        raise ValueError(f"calibration needs at least {needed} held-out points at a coverage of {coverage:g}, got "
                         f"{int(mask.sum())}")
    scores = np.maximum(quantiles_watts[..., 0] - actual, actual - quantiles_watts[..., 2])
    if scale is not None:
        scores = scores / np.asarray(scale, dtype=float)[:, None]
    pooled = conformal_quantile(scores[mask], coverage)
    margins = []
    for lead in range(actual.shape[1]):
        lead_scores = scores[:, lead][mask[:, lead]]
        margins.append(conformal_quantile(lead_scores, coverage) if lead_scores.size >= needed else pooled)
    partial = Calibration(coverage=coverage, tolerance=tolerance, margins_watts=tuple(margins),
                          raw_knots=(0.0, 1.0), rate_knots=(0.0, 1.0), calibration_points=int(mask.sum()),
                          calibration_coverage=0.0, scaled=scale is not None)
    forecast = partial.apply(quantiles_watts, scale)
    inside = (actual >= forecast.lower) & (actual <= forecast.upper)
    hits = np.abs(actual - forecast.point) <= tolerance * np.abs(forecast.point)
    raw = raw_confidence(forecast.point, forecast.lower, forecast.upper, coverage, tolerance)
    raw_knots, rate_knots = _monotone_bins(raw[mask], hits[mask].astype(float))
    return partial.model_copy(update={
        "raw_knots": raw_knots,
        "rate_knots": rate_knots,
        "calibration_coverage": float(inside[mask].mean()),
        "peak_margins_watts": fit_peak_margins(forecast.upper, actual, mask, coverage),
    })


def _monotone_bins(raw: np.ndarray, hits: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Equal-count bins of the raw value, hit rate per bin, made non-decreasing (pool adjacent violators). Bins that
    share a raw value are one bin: tied values (raw 1.0 for every narrow interval) split in time order would leave
    knots at one raw value, of which the map would take the last bin's rate."""
    order = np.argsort(raw, kind="stable")
    groups: list[np.ndarray] = []
    for group in np.array_split(order, min(_CONFIDENCE_BINS, raw.size)):
        if groups and group.size and raw[groups[-1][-1]] == raw[group[0]]:  # sorted: its largest, the next's least
            groups[-1] = np.concatenate([groups[-1], group])
        elif group.size:
            groups.append(group)
    centers = [float(raw[g].mean()) for g in groups]
    rates = [float(hits[g].mean()) for g in groups]
    weights = [float(g.size) for g in groups]
    merged: list[list[float]] = []  # [center*weight, rate*weight, weight]
    for center, rate, weight in zip(centers, rates, weights, strict=True):
        merged.append([center * weight, rate * weight, weight])
        while len(merged) > 1 and merged[-2][1] / merged[-2][2] > merged[-1][1] / merged[-1][2]:
            last = merged.pop()
            merged[-1] = [a + b for a, b in zip(merged[-1], last, strict=True)]
    knots = [m[0] / m[2] for m in merged]
    values = [m[1] / m[2] for m in merged]
    lowest, highest = float(raw[order[0]]), float(raw[order[-1]])
    if lowest < knots[0]:  # the first bin's rate holds from the lowest value seen (below it: Calibration.confidence)
        knots, values = [lowest, *knots], [values[0], *values]
    if len(knots) == 1:
        knots, values = [lowest, max(highest, lowest + 1e-6)], [values[0], values[0]]
    return tuple(knots), tuple(values)
