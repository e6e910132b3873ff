"""Calendar inputs (training.power.calendar): cyclic encodings, when they are used, and that training and
inference (a client's history list, stored telemetry) compute the very same columns."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import torch

from core.forecasts import PowerHistory
from core.stores.sqlite import SqliteStore
from core.stores.window import replay_samples
from core.telemetry_csv import validate_telemetry
from training.power import calendar as cal
from training.power.features import FeaturePipeline, resample
from training.power.fit import build_model
from training.power.forecaster import Architecture, PowerForecaster
from training.power.inference import history_segment
from training.power.stored_history import stored_history

MONDAY = pd.Timestamp("2026-01-05T00:00:00Z")
STEP = 600


def encoding(*stamps: str, calendar=("time_of_day", "day_of_week")) -> np.ndarray:
    return np.column_stack(cal.encode(pd.DatetimeIndex([pd.Timestamp(s) for s in stamps]), calendar))


def test_time_of_day_is_a_point_on_the_unit_circle() -> None:
    out = encoding("2026-01-05T00:00:00Z", "2026-01-05T06:00:00Z", "2026-01-05T12:00:00Z", "2026-01-05T18:00:00Z",
                   calendar=("time_of_day",))
    np.testing.assert_allclose(out, [[0, 1], [1, 0], [0, -1], [-1, 0]], atol=1e-12)


def test_encodings_are_continuous_across_midnight_and_the_week_end() -> None:
    before, after = encoding("2026-01-11T23:50:00Z", "2026-01-12T00:00:00Z")  # Sunday 23:50, Monday 00:00
    np.testing.assert_allclose((before ** 2).reshape(2, 2).sum(axis=1), 1.0)
    assert np.abs(before - after).max() < 0.05  # ten minutes apart, close on both circles
    np.testing.assert_allclose(after, [0, 1, 0, 1], atol=1e-12)  # Monday 00:00 UTC starts the week


def test_day_of_week_repeats_weekly_and_separates_days() -> None:
    monday, tuesday, next_monday = encoding("2026-01-05T09:00:00Z", "2026-01-06T09:00:00Z", "2026-01-12T09:00:00Z")
    np.testing.assert_allclose(monday, next_monday, atol=1e-9)
    np.testing.assert_allclose(monday[:2], tuesday[:2], atol=1e-9)  # same time of day
    assert np.abs(monday[2:] - tuesday[2:]).max() > 0.5  # another day of the week


def test_naive_times_are_utc() -> None:
    aware = cal.encode(pd.DatetimeIndex([MONDAY + pd.Timedelta(hours=7)]), ("time_of_day",))
    naive = cal.encode(pd.DatetimeIndex([pd.Timestamp("2026-01-05T07:00:00")]), ("time_of_day",))
    np.testing.assert_allclose(aware, naive)


def test_shift_rotates_to_the_later_time() -> None:
    times = pd.date_range(MONDAY, periods=50, freq="37min")
    for name in ("time_of_day", "day_of_week"):
        sin, cos = cal.encode(times, (name,))
        later_sin, later_cos = cal.encode(times + pd.Timedelta(seconds=5 * STEP), (name,))
        shifted = cal.shift(sin, cos, np.full(len(times), 5 * STEP), name)
        np.testing.assert_allclose(shifted, (later_sin, later_cos), atol=1e-9)


@pytest.mark.parametrize(("days", "expected"), [(0.5, ()), (1.9, ()), (2.0, ("time_of_day",)),
                                                (13.0, ("time_of_day",)), (14.0, ("time_of_day", "day_of_week"))])
def test_cycles_are_used_once_the_data_covers_them_twice(days: float, expected: tuple[str, ...]) -> None:
    assert cal.covered_cycles([3600.0, days * 86400]) == expected


def frame(days: int, node: str = "n") -> pd.DataFrame:
    times = pd.date_range(MONDAY, periods=days * 86400 // STEP, freq=f"{STEP}s")
    hours = times.hour.to_numpy()
    rng = np.random.default_rng(0)
    return validate_telemetry(pd.DataFrame({
        "timestamp": times, "node_id": node,
        "power_watts": 100 + 50 * (hours == 14) + rng.normal(0, 1, len(times)),
        "cpu_utilization": rng.uniform(0, 100, len(times)),
    }))


def test_pipeline_picks_the_calendar_from_the_training_span() -> None:
    short = FeaturePipeline.fit(resample(frame(1), STEP, STEP), ("cpu_utilization",), STEP)
    assert short.calendar == () and short.feature_names[-1] == "cpu_utilization_missing"
    long = FeaturePipeline.fit(resample(frame(3), STEP, STEP), ("cpu_utilization",), STEP)
    assert long.calendar == ("time_of_day",)
    assert long.feature_names[-2:] == ["time_of_day_sin", "time_of_day_cos"]
    assert long.spec_hash != short.spec_hash
    forced = FeaturePipeline.fit(resample(frame(1), STEP, STEP), ("cpu_utilization",), STEP,
                                 calendar=("day_of_week",))
    assert forced.feature_names[-2:] == ["day_of_week_sin", "day_of_week_cos"]


def test_a_pipeline_saved_before_calendar_inputs_loads_with_its_old_layout() -> None:
    pipeline = FeaturePipeline.fit(resample(frame(1), STEP, STEP), ("cpu_utilization",), STEP)
    old = pipeline.model_dump(mode="json")
    del old["calendar"]
    loaded = FeaturePipeline.model_validate(old)
    assert loaded.calendar == () and loaded.feature_names == ["power", "power_change", "cpu_utilization",
                                                               "cpu_utilization_missing"]
    assert loaded.spec_hash == pipeline.spec_hash


def test_a_forecaster_with_the_per_lead_calendar_head_round_trips_and_older_ones_keep_their_layout(tmp_path) -> None:
    pipeline = FeaturePipeline.fit(resample(frame(15), STEP, STEP), (), STEP)
    assert pipeline.calendar == ("time_of_day", "day_of_week")
    (sin_at, cos_at, radians), _ = pipeline.target_calendar
    assert (sin_at, cos_at) == (2, 3) and radians == pytest.approx(2 * np.pi * STEP / 86400)
    torch.manual_seed(0)
    architecture = Architecture(n_features=len(pipeline.feature_names), sequence_length=4, horizon=3, hidden_size=8,
                                num_layers=1, dropout=0.0, target_calendar=pipeline.target_calendar)
    model = build_model(architecture.n_features, 3, 8, 1, 0.0, pipeline.target_calendar)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.5)
    forecaster = PowerForecaster(model.state_dict(), architecture, pipeline)
    forecaster.save(tmp_path / "new")
    inputs = np.random.default_rng(0).normal(size=(5, 4, architecture.n_features)).astype(np.float32)
    np.testing.assert_allclose(PowerForecaster.load(tmp_path / "new").raw_quantiles(inputs, np.zeros(5)),
                               forecaster.raw_quantiles(inputs, np.zeros(5)), rtol=1e-6)
    saved_before = architecture.model_dump(mode="json")
    del saved_before["target_calendar"], saved_before["relative_power"]
    older = Architecture.model_validate(saved_before)
    assert older.target_calendar == () and older.relative_power is False  # the old head and input, as saved


def test_history_lists_give_the_training_columns() -> None:
    (segment,) = resample(frame(3), STEP, STEP)
    pipeline = FeaturePipeline.fit([segment], ("cpu_utilization",), STEP)
    length = 36
    end = 200  # the window's last step
    history = PowerHistory(power_watts=tuple(segment.power[end - length + 1:end + 1]),
                           numeric={"cpu_utilization": tuple(segment.numeric["cpu_utilization"][end - length + 1:
                                                                                                 end + 1])},
                           end_time=segment.times[end].to_pydatetime(), horizon_s=3600)
    request, padded = history_segment(history, length, STEP)
    assert padded == 0
    served, trained = pipeline.transform(request), pipeline.transform(segment)[end - length + 1:end + 1]
    assert_same_inputs(served, trained, pipeline)
    # regression: an end_time inside the step was read as the last value's own time, so the calendar inputs and the
    # forecast's times were off by up to a step from what training (a step's value at its start) had taught
    inside = history.model_copy(update={"end_time": history.end_time + timedelta(seconds=STEP - 1)})
    late, _ = history_segment(inside, length, STEP)
    assert late.times[-1] == request.times[-1] == segment.times[end]
    np.testing.assert_array_equal(pipeline.transform(late), served)


def test_a_feature_list_shorter_than_the_window_is_missing_before_it_as_in_training() -> None:
    """Regression: a short feature list was padded with its first value, read as measured; training reads a column
    that starts late as missing (its flag set), so the model saw inputs it never trained on."""
    (segment,) = resample(frame(3), STEP, STEP)
    length, end, given = 36, 200, 26
    late = segment.numeric["cpu_utilization"].copy()
    late[:end - given + 1] = np.nan  # the column starts `given` steps before the window's end
    trained_on = replace(segment, numeric={**segment.numeric, "cpu_utilization": late})
    pipeline = FeaturePipeline.fit([trained_on], ("cpu_utilization",), STEP)  # a flag training set
    history = PowerHistory(power_watts=tuple(segment.power[end - length + 1:end + 1]),
                           numeric={"cpu_utilization": tuple(late[end - given + 1:end + 1])},
                           end_time=segment.times[end].to_pydatetime(), horizon_s=3600)
    request, _ = history_segment(history, length, STEP)
    served, trained = pipeline.transform(request), pipeline.transform(trained_on)[end - length + 1:end + 1]
    missing = pipeline.feature_names.index("cpu_utilization_missing")
    assert served[:length - given, missing].tolist() == [1.0] * (length - given) and served[-1, missing] == 0.0
    assert_same_inputs(served, trained, pipeline)


def assert_same_inputs(served: np.ndarray, trained: np.ndarray, pipeline: FeaturePipeline) -> None:
    """Equal, except the first step's power change (a window does not know the value before it)."""
    assert pipeline.calendar and served.shape == trained.shape
    calendar = slice(len(pipeline.feature_names) - 2 * len(pipeline.calendar), None)
    np.testing.assert_allclose(served[:, calendar], trained[:, calendar], atol=1e-6)
    np.testing.assert_allclose(served[1:], trained[1:], atol=1e-5)


def test_stored_telemetry_gives_the_training_columns(tmp_path) -> None:
    telemetry = frame(3)
    store = SqliteStore(tmp_path, synchronous="OFF")
    samples = []
    for _, row in telemetry.iterrows():
        samples += replay_samples(row["timestamp"].to_pydatetime(), "n", row.to_dict())
    store.write(samples)
    (segment,) = resample(telemetry, STEP, STEP)
    pipeline = FeaturePipeline.fit([segment], ("cpu_utilization",), STEP)
    length = 36
    stored = stored_history(store, "n", step_s=STEP, sequence_length=length, horizon_s=3600,
                            now=segment.times[-1].to_pydatetime() + timedelta(minutes=5))
    request, padded = history_segment(stored.history, length, STEP)
    assert padded == 0 and request.times[-1] == segment.times[-1]
    assert_same_inputs(pipeline.transform(request), pipeline.transform(segment)[-length:], pipeline)
