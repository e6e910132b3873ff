"""The forecast service's value types: what a caller sends (`PowerHistory`), what a forecast answers
(`PowerForecast`), what a replica serves (`ServedModel`), a request the model cannot answer
(`ForecastRequestError`) and one the model that would answer it is not loaded for (`ModelNotLoaded`).

Shared by the API, the Serve deployments, the scaling controller and the forecaster's inference code
(training.power.inference); plain pydantic, no model code, so the controller and the API read them without
importing the forecaster.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict


class PowerHistory(BaseModel):
    """Recent telemetry of one node or workload, one value per model step, oldest first.

    No `power_watts`: the features-only mode (power estimated from `numeric` and `workload_type`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    power_watts: tuple[float, ...] = ()
    numeric: dict[str, tuple[float, ...]] = {}
    workload_type: str | None = None
    end_time: datetime | None = None  # time of the last value (UTC); None means `as_of`, floored to the step
    as_of: datetime | None = None  # the "now" of a default end_time (a batch's acceptance); None: when answered
    horizon_s: int  # how far ahead to forecast
    step_s: int | None = None  # the step of the lists, when the caller read them at one (e.g. from a store)
    filled_steps: int = 0  # power values repeated from the one before over steps without a reading (a store's gaps)
    # a node's own stored window (PowerPredictor.forecast_stored, forecast_windows), which the replica follows online:
    # answered with the blend its model's node windows taught (training/power/online_blend.py); set by the replica,
    # never by a client
    node_window: bool = False
    # a past window the replica replays to warm a node's online calibration (set by the replica): its forward pass is
    # no request, so it is left out of the served latency
    replay: bool = False


class ForecastRequestError(ValueError):
    """A request the model cannot answer as asked; `field` names the offending request field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self):  # survives pickling across Serve replicas
        return (ForecastRequestError, (self.field, self.message))


class ModelNotLoaded(Exception):
    """The model that would answer a request is configured, but this replica has not loaded it (no version of it
    could be loaded yet): a passing state, answered 503, not a request to change."""

    def __init__(self, model_ids: tuple[str, ...]):
        super().__init__(f"the model that answers this horizon ({', '.join(model_ids)}) is not loaded on this replica "
                         "yet (its version could not be loaded); try again later")
        self.model_ids = model_ids

    def __reduce__(self):  # survives pickling across Serve replicas
        return (ModelNotLoaded, (self.model_ids,))


class PowerForecast(BaseModel):
    """Calibrated forecast for lead steps 1..n after `end_time`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_version: str
    step_s: int
    timestamps: tuple[datetime, ...]
    point: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    confidence: tuple[float, ...]
    window_coverage: float  # share of the input window that was real power history (not padded, not filled)
    padded_steps: int
    interval_coverage: float  # nominal coverage of [lower, upper]
    confidence_tolerance: float | None = None  # `confidence`: P(|actual - point| <= this x point); None: unknown
    # peak_upper[k-1] bounds max(actual[1..k]) with probability (1 + interval_coverage) / 2, the level of `upper`
    # (training.power.peak_bound); None from code that cannot bound the peak (a decision then uses max(upper))
    peak_upper: tuple[float, ...] | None = None
    estimated_from: tuple[str, ...] = ()  # features-only mode: the features the power history was estimated from
    # inputs beyond the range the model trained on ("power_watts"): an extrapolation, its intervals widened with the
    # level and its confidence that of the wider interval, at most the lowest calibrated (training.power.extrapolation)
    outside_training_range: tuple[str, ...] = ()
    trained_on_synthetic_data: bool = False
    # scored leads (earlier forecasts of this model version's nodes on this replica, scored on their stored power)
    # that corrected [lower, upper] and the confidence online (training/power/online_calibration.py); 0: the static
    # calibration alone
    online_calibration_points: int = 0
    # the LSTM's median and the LightGBM's point per lead that `point` blends, for a replica's online blend to learn
    # from (training/power/online_blend.py); None for a model without both and for a sum of nodes; never answered
    blend_experts: tuple[tuple[float, ...], tuple[float, ...]] | None = None


class ServedModel(BaseModel):
    """What a PowerPredictor replica serves: version, step, window, horizon, features and live latency."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_version: str
    step_seconds: int
    sequence_length: int
    horizon_steps: int
    max_gap_seconds: int | None = None  # the longest gap training filled a reading over; None: the default rule
    features: tuple[str, ...]
    latency_ms: dict[str, float | int]  # p50/p90/p99 of model calls and call counts (deployments/latency.py)
    trained_on_synthetic_data: bool = False
    pinned: bool = False  # the version is the one `user_config.model_version` pins, not the registry's active one


def utc_now_floor(step_s: int, now: datetime | None = None) -> datetime:
    """Now (or `now`), rounded down to the step: the default time of a history's last value."""
    stamp = (now or datetime.now(UTC)).timestamp()
    return datetime.fromtimestamp(stamp - stamp % step_s, UTC)


def last_value_time(history: PowerHistory, step_s: int) -> datetime:
    """The step of a history's last value: its `end_time`, else its `as_of` (or now), floored to the step (training
    labels a step's value with the step's start: a value at 12:59 of an hourly model is the 12:00 step's)."""
    return utc_now_floor(step_s, history.end_time or history.as_of)
