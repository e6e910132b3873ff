"""HTTP request and response bodies. Value types live with their owners (training/, deployments/)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from autoscaler.live_accuracy import VersionLiveAccuracy
from autoscaler.schema import InvalidStoredPolicy, ScalingEvent, ScalingPolicy
from core.durations import MAX_TEXT_CHARS, format_duration, parse_duration
from core.registry_metadata import MODEL_ID_PATTERN
from core.telemetry import ID_PATTERN, MAX_ID_CHARS
from training.cost.schema import CostEstimate, CostQuery
from training.retrain_attempt import AttemptOutcome, Trigger

MAX_HISTORY_STEPS = 10_080  # one week at a 1-minute step
MAX_BATCH_ITEMS = 1_000
MAX_HORIZON_SECONDS = 7 * 86400
MAX_RETRAIN_HISTORY_SECONDS = 366 * 86400
MIN_RETRAIN_HISTORY_SECONDS = 3600  # less can split into no training, calibration and held-out windows
MAX_PATH_CHARS = 1024
MAX_WATTS = 1e7  # 10 MW: above any node's or workload's draw; larger values only overflow the model
MAX_CLOCK_SKEW = timedelta(days=1)  # how far past the server's clock a history may end
EARLIEST_END_TIME = datetime(2000, 1, 1, tzinfo=UTC)  # no power telemetry is older; the model's clock needs it

# Strict: a number, never a bool or a numeric string.
Watts = Annotated[float, Field(ge=0, le=MAX_WATTS, allow_inf_nan=False, strict=True)]
Percent = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False, strict=True)]
Celsius = Annotated[float, Field(ge=-50, le=150, allow_inf_nan=False, strict=True)]


MAX_LIST_ERRORS = 20  # a history with more bad values gets one error for them all, not one each
_HISTORY_BOUNDS = {"power_watts": (0.0, MAX_WATTS, "W"), "cpu_utilization": (0.0, 100.0, "%"),
                   "memory_usage": (0.0, 100.0, "%"), "gpu_utilization": (0.0, 100.0, "%"),
                   "npu_utilization": (0.0, 100.0, "%"), "temperature": (-50.0, 150.0, "°C")}


def _history(description: str) -> Any:
    return Field(None, min_length=1, max_length=MAX_HISTORY_STEPS, description=description)


def _screened(value: Any, field: str) -> Any:
    """A history list with more than `MAX_LIST_ERRORS` bad values refused with one error that counts them (pydantic
    would build one error per value: a batch of long lists of negative watts took seconds and gigabytes to refuse);
    anything else passes on to the strict per-value validation."""
    if not isinstance(value, list) or not MAX_LIST_ERRORS < len(value) <= MAX_HISTORY_STEPS:
        return value  # too short to hold more bad values, or too long (pydantic says so, once)
    low, high, unit = _HISTORY_BOUNDS[field]
    bad = _bad_indexes(value, low, high)
    if len(bad) > MAX_LIST_ERRORS:
        raise ValueError(f"{len(bad)} of its {len(value)} values are not numbers from {low:g} to {high:g} {unit} "
                         f"(the first at index {bad[0]})")
    return value


def _bad_indexes(values: list[Any], low: float, high: float) -> list[int]:
    """Where `values` holds no number from `low` to `high` (bools are no numbers); vectorised when every value is a
    number, which a request's lists are but for mistakes."""
    if set(map(type, values)) <= {float, int}:
        try:
            array = np.asarray(values, dtype=float)
        except OverflowError:  # an integer beyond any float: the one-by-one check below says where
            pass
        else:
            return np.flatnonzero(~((array >= low) & (array <= high))).tolist()
    return [index for index, item in enumerate(values) if type(item) not in (int, float) or not low <= item <= high]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PowerFeatures(_Body):
    """Recent telemetry, oldest first, one value per step of the model that answers (`step_seconds` in the
    response; GET /api/v1/models lists each model's step and horizon). Lists may be shorter than its window and
    of different lengths: each list's last value is at `end_time`. With a `node_id` the store knows, a short
    `power_watts` window is completed at the front from its stored telemetry (`store_filled_steps`)."""

    power_watts: list[Watts] | None = _history(
        "measured power, W; without it the window comes from stored telemetry (node_id, or a workload_id the config "
        "lists), else its power is estimated from the other lists (history_source features_only)")
    cpu_utilization: list[Percent] | None = _history("CPU utilization, %")
    memory_usage: list[Percent] | None = _history("memory usage, %")
    gpu_utilization: list[Percent] | None = _history("mean GPU utilization, %")
    npu_utilization: list[Percent] | None = _history("mean NPU utilization, %")
    temperature: list[Celsius] | None = _history("hottest device, °C")
    workload_type: str | None = Field(None, max_length=64, description="training, inference, batch, idle, ... "
                                                                      "(case and surrounding spaces ignored)")

    @field_validator(*_HISTORY_BOUNDS, mode="before")
    @classmethod
    def _few_bad_values(cls, value: Any, info: ValidationInfo) -> Any:
        return _screened(value, info.field_name)

    @field_validator("workload_type")
    @classmethod
    def _normalize_workload(cls, value: str | None) -> str | None:
        """As training reads the label (core.telemetry_csv): "Training " is the model's "training"."""
        return (value.strip().lower() or None) if value is not None else None


class PowerPredictionRequest(_Body):
    workload_id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    node_id: str | None = Field(None, min_length=1, max_length=MAX_ID_CHARS, pattern=ID_PATTERN,
                                description="a node id as the collectors store it (no control characters)")
    features: PowerFeatures | None = None
    prediction_horizon: str = Field("1h", max_length=MAX_TEXT_CHARS, description='"30m", "1h", "24h" ... (m = minutes)')
    step: str | None = Field(None, max_length=MAX_TEXT_CHARS,
                             description='the step of the lists ("1min", "1h"): given, only a served model of that '
                                         "step answers (else a 422 listing the served steps); default: the model "
                                         "the horizon routes to, whose step the lists are read at")
    end_time: datetime | None = Field(None, description="time of the last value in the lists (default: now)")

    @field_validator("prediction_horizon")
    @classmethod
    def _horizon(cls, value: str) -> str:
        seconds = parse_duration(value)
        if seconds > MAX_HORIZON_SECONDS:
            raise ValueError(f"{value!r} is longer than the maximum of 7 days")
        return value

    @field_validator("step")
    @classmethod
    def _step(cls, value: str | None) -> str | None:
        if value is not None and not 0 < parse_duration(value) <= MAX_HORIZON_SECONDS:
            raise ValueError(f"{value!r} must be longer than 0 and at most 7 days")
        return value

    @property
    def step_s(self) -> int | None:
        return parse_duration(self.step) if self.step is not None else None

    @field_validator("end_time")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return value
        if value.tzinfo is None:
            raise ValueError("must carry a time zone, e.g. 2026-01-05T12:00:00Z")
        if value > datetime.now(UTC) + MAX_CLOCK_SKEW:
            raise ValueError("lies more than a day after the server's clock")
        if value < EARLIEST_END_TIME:  # its calendar inputs overflowed before 1677: a 500 for the whole batch
            raise ValueError(f"lies before {EARLIEST_END_TIME:%Y-%m-%d}")
        return value


class PowerPoint(BaseModel):
    timestamp: datetime
    predicted_power: float = Field(description="median forecast, W")
    lower: float = Field(description="lower end of the prediction interval, W")
    upper: float = Field(description="upper end of the prediction interval, W")
    confidence: float = Field(ge=0, le=1, description="probability that the actual power lies within "
                                                          "±confidence_tolerance of predicted_power (calibrated on "
                                                          "held-out data)")


class PowerPredictionResponse(BaseModel):
    workload_id: str
    node_id: str | None = None
    predictions: list[PowerPoint]
    total_predicted_power: float = Field(
        description="the workload's total power (summed over its nodes when it has several), averaged over the "
                    "horizon, W")
    peak_predicted_power: float = Field(description="highest predicted_power over the horizon (the workload's "
                                                    "total), W")
    predicted_energy_kwh: float = Field(description="energy over the horizon: predicted_power times the step, summed "
                                                    "over the horizon, kWh")
    model_version: str
    step_seconds: int
    interval_coverage: float = Field(description="nominal coverage of [lower, upper]")
    confidence_tolerance: float | None = Field(None, description="the band each confidence is for: the actual "
                                                                "within this fraction of predicted_power (the "
                                                                "model's models.power_predictor.confidence_tolerance; "
                                                                "null for a model saved before it was recorded)")
    window_coverage: float = Field(description="share of the model's input window that was real history (not padded "
                                               "in front, not held over a gap in stored telemetry)")
    padded_steps: int = Field(description="leading window steps filled by repeating the earliest power value (or "
                                          "estimate)")
    store_filled_steps: int = Field(0, description="leading window steps taken from the node's stored telemetry: a "
                                                   "power_watts list shorter than the model's window, with a node_id "
                                                   "the store knows")
    history_source: Literal["request", "store", "features_only"] = Field(
        "request", description="where the input window's power came from: the request's power_watts (request), "
                               "stored telemetry (store), or estimated from the request's other features "
                               "(features_only; intervals calibrated for that mode)")
    estimated_from: list[str] | None = Field(None, description="features_only: the features the power history was "
                                                               "estimated from; any other the request gave is not "
                                                               "used (the model learned power from none of them)")
    trained_on_synthetic_data: bool = Field(
        False, description="the answering model was trained on generated (synthetic) telemetry, not measured: its "
                           "numbers demonstrate the service, they are not a measured forecast")
    outside_training_range: list[str] = Field(
        [], description='inputs beyond the range the model trained on (["power_watts"]: the window\'s power lies '
                        "beyond the training power's range by more than a tenth of it): an extrapolation, its "
                        "interval widened by the window's peak over the training peak (at most tenfold), centred "
                        "on the forecast and reaching the window's last value on both sides, its confidence at most "
                        "the lowest seen in calibration (until the node's outcomes correct both online)")
    online_calibration_points: int = Field(
        0, description="history_source store: how many outcomes of earlier forecasts (leads scored on stored power: "
                       "the answering replica's forecasts of this model version's nodes, this node's among them once "
                       "the replica follows it) "
                       "corrected the intervals and confidence online; 0: the held-out calibration alone")
    data_age_seconds: float | None = Field(None, description="age of the newest stored sample used (the oldest "
                                                           "such age over a workload's nodes)")
    stale: bool = Field(False, description="the stored telemetry is older than telemetry.stale_after")
    nodes: list[str] | None = Field(None, description="the workload's nodes (config `workloads`) whose forecasts "
                                                      "were summed; absent for one node")


class CostPredictionRequest(CostQuery):
    """A resource request to price before it runs."""


class CostPredictionResponse(CostEstimate):
    """Predicted cost with its breakdown and interval."""


class PowerBatchItem(_Body):
    type: Literal["power"]
    request: PowerPredictionRequest


class CostBatchItem(_Body):
    type: Literal["cost"]
    request: CostPredictionRequest


BatchItem = Annotated[PowerBatchItem | CostBatchItem, Field(discriminator="type")]
BatchState = Literal["pending", "running", "done", "failed"]


class BatchRequest(_Body):
    items: list[BatchItem] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


class BatchItemResult(BaseModel):
    index: int
    status: Literal["ok", "error"]
    result: dict[str, Any] | None = None
    error: str | None = None


class BatchStatus(BaseModel):
    batch_id: str
    status: BatchState
    created_at: datetime
    updated_at: datetime
    items: int
    completed: int
    results: list[BatchItemResult] = Field([], description="per item, in item order: those from results_offset on "
                                                            "(every one unless the read asked for a page)")
    results_offset: int = Field(0, description="the item index of the first result shown")
    next_offset: int | None = Field(None, description="the item index of the first result not shown, when later "
                                                      "results exist (beyond the read's limit, or the 32 MiB one "
                                                      "answer holds): read on with ?offset= it")
    error: str | None = None


class ModelVersionPublic(BaseModel):
    version: int
    created_at: datetime
    active: bool
    metrics: dict[str, Any]
    data_span: dict[str, Any] | None = None


class ModelPublic(BaseModel):
    model_id: str
    model_type: str
    active_version: int | None = Field(description="the ACTIVE pointer's version (what retraining compares with "
                                                   "and serving follows without a pin)")
    served_version: int | None = Field(None, description="the version served: the one the power app is pinned to "
                                                         "(`user_config.model_version`), else the active one")
    versions: list[ModelVersionPublic]
    step_seconds: int | None = Field(None, description="power models: the served version's step")
    horizon_seconds: int | None = Field(None, description="power models: how far the served version forecasts; "
                                                          "a forecast goes to the finest step covering it")
    sequence_length: int | None = Field(None, description="power models: the served version's input window, steps")
    trained_on_synthetic_data: bool = Field(False, description="the served version was trained on generated data")


class ModelsResponse(BaseModel):
    models: list[ModelPublic]


class ModelLiveAccuracy(BaseModel):
    """The scaling controller's forecasts of the model scored against the power measured since."""

    window_s: int = Field(description="the rolling window the scores cover, seconds")
    hit_tolerance: float = Field(description="a hit: the actual within this fraction of the point forecast")
    pending_forecasts: int = Field(description="the controller's forecasts (of every model) waiting for their actuals")
    evicted_forecasts: int = Field(description="the controller's forecasts dropped unscored since it started, because "
                                               "auto_scaling.live_accuracy.max_pending_forecasts were waiting (their "
                                               "longest leads are missing from the scores)")
    versions: list[VersionLiveAccuracy] = Field(description="per served version: pooled, and per node")


class ModelMetricsResponse(BaseModel):
    model_id: str
    version: int
    model_type: str
    held_out: dict[str, Any] = Field(description="metrics measured on data the model did not train on")
    served_version: str | None = Field(None, description="version the answering replica serves")
    inference_latency_ms: dict[str, float | int] = Field(description="live model-call latency percentiles")
    live: ModelLiveAccuracy | None = Field(None, description="live forecast accuracy; null: `live_reason` says why")
    live_reason: str | None = None


class RetrainRequest(_Body):
    model_id: str | None = Field(
        None, pattern=MODEL_ID_PATTERN, description="a power model the service serves (args.power_model_id, the "
        "default, or another of predictor.resolutions; trains on telemetry) or the cost model (args.cost_model_id; "
        "on past jobs)")
    source: Literal["csv", "store", "catalog"] = Field(
        "csv", description='"csv": the file `data` names (default: the configured one); "store": the telemetry store '
                           '(power); "catalog": jobs generated from the price catalog (cost, for demos)')
    data: str | None = Field(None, min_length=1, max_length=MAX_PATH_CHARS,
                             description="inside the server's args.retrain.data_dir (relative to it, or absolute): "
                                         "a canonical telemetry CSV (power) or a CSV of past jobs (cost)")
    since: str | None = Field(None, max_length=MAX_TEXT_CHARS,
                              description='with "source": "store": how much history to read (default 14d, or 4 of the '
                                          "model's windows where that is longer)")
    prediction_horizon: str | None = Field(None, max_length=MAX_TEXT_CHARS, description="power only")
    epochs: int | None = Field(None, ge=1, le=1000, strict=True, description="power only")

    @field_validator("prediction_horizon", "since")
    @classmethod
    def _duration(cls, value: str | None, info: ValidationInfo) -> str | None:
        longest = MAX_HORIZON_SECONDS if info.field_name == "prediction_horizon" else MAX_RETRAIN_HISTORY_SECONDS
        if value is not None and parse_duration(value) > longest:
            raise ValueError(f"{value!r} is longer than the maximum of {format_duration(longest)}")
        if info.field_name == "since" and value is not None and parse_duration(value) < MIN_RETRAIN_HISTORY_SECONDS:
            raise ValueError(f"{value!r} is shorter than the minimum of {format_duration(MIN_RETRAIN_HISTORY_SECONDS)}")
        return value


JobState = Literal["pending", "running", "succeeded", "failed"]


class RetrainJob(AttemptOutcome):
    """One retraining attempt, started by the API or the scheduler (its outcome's fields once it succeeded)."""

    job_id: str
    status: JobState
    model_id: str
    created_at: datetime
    updated_at: datetime
    trigger: Trigger = Field("api", description='"api": a POST; "interval": the scheduler '
                                                '(predictor.model_update_interval); "degradation": the active '
                                                "version's live error past its held-out error times the factor; "
                                                '"cli": a train_lstm or train_gbm command line')
    source: Literal["csv", "store", "catalog"] | None = None
    data: str | None = Field(None, description="what it trains on: a file's name, the store's span, generated jobs")


class RetrainJobsResponse(BaseModel):
    jobs: list[RetrainJob] = Field(description="newest first")


class TelemetryNode(BaseModel):
    node_id: str
    timestamp: datetime = Field(description="time of the newest power reading")
    power_watts: float
    age_seconds: float
    stale: bool


class TelemetryNodesResponse(BaseModel):
    nodes: list[TelemetryNode]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class ScalingPoliciesResponse(BaseModel):
    policies: list[ScalingPolicy]
    invalid: list[InvalidStoredPolicy] = Field(
        [], description="stored policies that no longer validate: every tick skips them; replace or delete each")


class ScalingEventsResponse(BaseModel):
    events: list[ScalingEvent] = Field(description="newest first")
    next_before_id: int | None = Field(None, description="more events match: pass it as before_id for the next page")
