"""The forecast as one scaling decision sees it: per node, power it stays under over the policy's risk window."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

from pydantic import BaseModel, ConfigDict, Field

from autoscaler.schema import Watts


class ForecastView(BaseModel):
    """What the decision needs from the power forecast over the policy's risk window (`window_s` long).

    `upper_quantile_per_node_watts[i]`: power node i stays under over the whole window with probability the
    policy's `confidence_threshold`: a bound on the window's maximum when `peak_bound` (training.power.peak_bound;
    the decision then follows autoscaler.peak_rule), else (a forecast without `peak_upper`) the highest per-lead
    quantile, with which the decision keeps its earlier rule. Every served model gives `peak_upper`: one saved
    before the calibrated bound gives the running maximum of its per-step uppers (Calibration.apply),
    uncalibrated. `expected_per_node_watts[i]`: the highest point forecast in the window. Build it with
    `from_interval`, or `unavailable(reason)` when there is no forecast (no model, stale window, calibration not
    measured): the policy then uses measured power and says why.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    upper_quantile_per_node_watts: list[Watts] = []
    expected_per_node_watts: list[Watts] = []
    calibrated: bool = False
    peak_bound: bool = False
    window_s: int | None = Field(None, ge=0)
    reason: str | None = None
    spread_factor: float | None = Field(None, gt=0)  # the bound's spread stretched online (autoscaler.peak_tracking)
    extrapolated_nodes: int = Field(0, ge=0)  # nodes whose window lies beyond the model's training range

    @classmethod
    def unavailable(cls, reason: str) -> ForecastView:
        return cls(calibrated=False, reason=reason)

    def spread(self, factor: float) -> ForecastView:
        """The bound's distance above the expected peak scaled by `factor` (online: U' = E + f (U - E))."""
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"the spread factor ({factor}) must be a finite number > 0")
        bounds = [expected + factor * max(bound - expected, 0.0)
                  for bound, expected in zip(self.upper_quantile_per_node_watts, self.expected_per_node_watts,
                                             strict=True)]
        return self.model_copy(update={"upper_quantile_per_node_watts": bounds, "spread_factor": factor})

    @classmethod
    def from_interval(cls, median: Sequence[Sequence[float]], upper: Sequence[Sequence[float]], *,
                      coverage: float, level: float, peak: Sequence[Sequence[float]] | None = None,
                      window_s: int | None = None) -> ForecastView:
        """The `level` bound over the window, per node, from a calibrated central interval and its peak bound.

        Args:
            median, upper: [nodes][leads] point forecast and upper end of the central `coverage` interval in
                watts (`PowerForecast.point`, `.upper`), leads cut to the window.
            coverage: the interval's nominal coverage; level: the policy's `confidence_threshold`.
            peak: [nodes][leads] bound on max(actual[1..k]) at the upper end's level (`PowerForecast.peak_upper`),
                or None: then the highest of each lead's `level` quantile.
            window_s: the time the leads cover (said in the decision's reason).

        The upper end and the peak bound are (1 + coverage) / 2 quantiles. Reading the distance above the point
        forecast (for the peak: the window's highest point) as a normal spread, the `level` bound is
        point + z(level) / z((1 + coverage) / 2) * (bound - point); the upper side only, so skewed (CQR-widened)
        intervals stay honest on the side that matters.
        """
        if not (0 < coverage < 1 and 0 < level < 1):
            raise ValueError(f"coverage ({coverage}) and level ({level}) must lie strictly between 0 and 1")
        if len(median) != len(upper) or (peak is not None and len(peak) != len(median)):
            raise ValueError(f"median, upper and peak need one row per node (got {len(median)}, {len(upper)}, "
                             f"{None if peak is None else len(peak)})")
        rows = [*median, *upper, *(peak or [])]
        if not all(math.isfinite(sum(row)) for row in rows):  # a NaN or an infinity makes its row's sum one
            raise ValueError("the forecast holds a value that is not a finite number (NaN or infinite)")
        normal = NormalDist()
        ratio = normal.inv_cdf(level) / normal.inv_cdf((1 + coverage) / 2)
        per_node, expected = [], []
        for node, (points, highs) in enumerate(zip(median, upper, strict=True)):
            if len(points) != len(highs) or not points or (peak is not None and len(peak[node]) != len(points)):
                raise ValueError(f"node {node}: median, upper and peak need the same, non-zero number of leads")
            if peak is None:
                bound = max(p + ratio * max(h - p, 0.0) for p, h in zip(points, highs, strict=True))
            else:
                top = max(points)
                bound = top + ratio * max(max(peak[node]) - top, 0.0)
            per_node.append(max(bound, 0.0))
            expected.append(max(max(points), 0.0))
        return cls(upper_quantile_per_node_watts=per_node, expected_per_node_watts=expected, calibrated=True,
                   peak_bound=peak is not None, window_s=window_s)
