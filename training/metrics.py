"""Forecast error and interval metrics over scored (origin, lead) pairs."""

from __future__ import annotations

import numpy as np

COVERAGE_TOLERANCE = 0.05  # an interval's coverage within this of the nominal (75-85 % for the default 80 % interval)


def point_metrics(forecast: np.ndarray, actual: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """MAE and RMSE in watts, MAPE in percent (pairs with zero actual power are left out of MAPE)."""
    error = (forecast - actual)[mask]
    truth = actual[mask]
    nonzero = truth != 0
    return {
        "mae": float(np.abs(error).mean()),
        "rmse": float(np.sqrt((error**2).mean())),
        "mape": float((np.abs(error[nonzero]) / np.abs(truth[nonzero])).mean() * 100.0),
    }


def interval_metrics(lower: np.ndarray, upper: np.ndarray, point: np.ndarray, confidence: np.ndarray,
                     actual: np.ndarray, mask: np.ndarray, *, nominal: float, tolerance: float) -> dict[str, float]:
    """Coverage of the interval, its mean width, and how the stated confidence matches the hit rate."""
    inside = (actual >= lower) & (actual <= upper)
    hits = np.abs(actual - point) <= tolerance * np.abs(point)
    return {
        "coverage": float(inside[mask].mean()),
        "nominal_coverage": nominal,
        "mean_interval_width": float((upper - lower)[mask].mean()),
        "mean_confidence": float(confidence[mask].mean()),
        "hit_rate": float(hits[mask].mean()),
        "confidence_tolerance": tolerance,
    }


def mae_by_lead(forecast: np.ndarray, actual: np.ndarray, mask: np.ndarray) -> list[float | None]:
    """MAE per lead (column) over its scored points; None for a lead without any (JSON has no NaN)."""
    error = np.where(mask, np.abs(forecast - actual), 0.0).sum(axis=0)
    points = mask.sum(axis=0)
    return [round(float(total / count), 3) if count else None for total, count in zip(error, points, strict=True)]
