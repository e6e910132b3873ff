"""Online correction of the peak bound a scaling decision trusts, by the outcomes of the bounds before it.

The forecast view's bound U (autoscaler.forecast_view) promises that a node's power stays under it over the policy's
risk window with probability ℓ, the policy's `confidence_threshold`. It is calibrated once, on the model's
calibration split (training.power.peak_bound); where the windows the policy meets later are wilder or calmer, U is
exceeded more or less often than 1 − ℓ. As the served intervals' online calibration does per lead
(training.power.online_calibration), a quantile tracker here keeps the bound's share of misses at 1 − ℓ by scaling
its distance above the expected peak E:

    U' = E + exp(θ) × (U − E),   then, once the window's power has been measured,
    θ += RATE × (missed − (1 − ℓ))   (missed: the window's highest measured power above U')

At ℓ = 0.8 a miss widens the bound four times as much as a window under it narrows it, so over a long run the
share of missed windows comes to 1 − ℓ whatever the shift. θ stays within ± log 4 (the bound's spread ¼–4×). A
window is learned from once, when its last step has been measured, so nothing is learned from the future. The rate
is the served intervals' (fixed a priori, not fitted to any trace). Only a level above 0.5 is corrected: below it
the level's bound lies under the expected peak, with no spread left to correct.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autoscaler.forecast_view import ForecastView

RATE = 0.05
MAX_FACTOR = 4.0


@dataclass
class PeakTracker:
    """One series' running correction of its peak bound (ℓ = `level`)."""

    level: float
    log_factor: float = 0.0
    windows: int = 0  # windows learned from
    misses: int = 0  # of them, those whose measured peak exceeded the bound

    def __post_init__(self) -> None:
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"the bound's level ({self.level}) must lie strictly between 0 and 1")

    @property
    def factor(self) -> float:
        """exp(θ): how far the bound's spread above the expected peak is stretched (> 1) or shrunk (< 1)."""
        return math.exp(self.log_factor)

    def learn(self, bound: float, measured_peak: float) -> None:
        """Learn from one window: the bound the decision used and the highest power measured over the window."""
        missed = float(measured_peak > bound)
        limit = math.log(MAX_FACTOR)
        self.log_factor = min(max(self.log_factor + RATE * (missed - (1.0 - self.level)), -limit), limit)
        self.windows += 1
        self.misses += int(missed)


def learn_window(tracker: PeakTracker, bound: float, read_peak: float, whole: bool) -> None:
    """Teach `tracker` a window's outcome as far as it was read: a miss whenever the part read passed the bound, a
    window under it only when it was read whole (a window cut short errs towards a wider bound). The controller
    (autoscaler.policy_bounds) and the replay (autoscaler.trace_replay) both learn through this."""
    if read_peak > bound or whole:
        tracker.learn(bound, read_peak)


def corrected(view: ForecastView, tracker: PeakTracker) -> ForecastView:
    """The view with the tracker's correction once it has learned from a window (the calibrated bound until then,
    and always at a level of 0.5 or below)."""
    if tracker.level <= 0.5 or not tracker.windows or not view.calibrated or not view.upper_quantile_per_node_watts:
        return view
    return view.spread(tracker.factor)
