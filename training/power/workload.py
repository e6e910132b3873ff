"""A forecast from stored telemetry: one node's, or a workload's summed over its nodes (no Ray, no HTTP)."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from core.forecasts import PowerForecast
from training.power.stored_history import NoStoredTelemetry


class WorkloadTelemetryMissing(NoStoredTelemetry):
    """A node of a configured workload has no recent stored telemetry (the data is missing, not the id)."""


class StoredForecast(BaseModel):
    """A forecast from the newest stored windows, with how old their newest power reading is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    forecast: PowerForecast
    age_s: float  # of the oldest node's newest power reading
    stale: bool  # age_s beyond the configured telemetry.stale_after


def sum_forecasts(forecasts: Sequence[PowerForecast]) -> PowerForecast:
    """A workload's forecast from its nodes' forecasts, lead by lead.

    Point, lower and upper are summed: the summed bounds hold whenever every node's do. That is exact for
    nodes whose errors move together and wider than needed for independent ones; it is not a formal
    coverage guarantee for the sum. The peak bounds are summed the same way (the sum of the nodes' peaks is at
    least the peak of their sum), or dropped when a node has none. Confidence is the lowest node's, window
    coverage the lowest, padding the largest, the online calibration's points the fewest; an input beyond the
    training range at any node is one for the workload. The nodes' forecasts must be of one model version (the
    replica forecasts a request's nodes with the version it chose for it): ValueError otherwise.
    """
    versions = {f.model_version for f in forecasts}
    if len(versions) > 1:
        raise ValueError(f"a workload's nodes were forecast by different model versions: {sorted(versions)}")
    first = forecasts[0]
    if len(forecasts) == 1:
        return first

    def total(name: str) -> tuple[float, ...]:
        return tuple(round(sum(values), 2) for values in zip(*(getattr(f, name) for f in forecasts), strict=True))

    return first.model_copy(update={
        "point": total("point"), "lower": total("lower"), "upper": total("upper"),
        "peak_upper": total("peak_upper") if all(f.peak_upper is not None for f in forecasts) else None,
        "confidence": tuple(min(values) for values in zip(*(f.confidence for f in forecasts), strict=True)),
        "window_coverage": min(f.window_coverage for f in forecasts),
        "padded_steps": max(f.padded_steps for f in forecasts),
        "online_calibration_points": min(f.online_calibration_points for f in forecasts),
        "outside_training_range": tuple(sorted({name for f in forecasts for name in f.outside_training_range})),
        "blend_experts": None,  # a node's own, to learn from; not of a sum
    })
