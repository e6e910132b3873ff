"""prepare(): series too short for one window are refused, or left out when training from a store; the training
windows of a final refit; the gap limit the pipeline records."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from core.telemetry_csv import validate_telemetry
from training.power.dataset import prepare
from training.power.windows import NotEnoughData, Role, TooMuchData

ARGS = {"step_s": 60, "max_gap_s": 300, "features": ("cpu_utilization",), "sequence_length": 10, "horizon": 2,
        "train_fraction": 0.8}


def frame(lengths: dict[str, int]) -> pd.DataFrame:
    start = pd.Timestamp("2026-01-01", tz="UTC")
    rows = [{"timestamp": start + pd.Timedelta(minutes=i), "node_id": node, "power_watts": 100.0 + i % 7,
             "cpu_utilization": 50.0} for node, n in lengths.items() for i in range(n)]
    return validate_telemetry(pd.DataFrame(rows))


def test_a_short_series_is_refused_by_name():
    with pytest.raises(ValueError, match="'new-node' \\(3 steps\\)"):
        prepare(frame({"old-node": 200, "new-node": 3}), **ARGS)


def test_skip_short_leaves_it_out_and_keeps_the_rest(caplog):
    prepared = prepare(frame({"old-node": 200, "new-node": 3}), **ARGS, skip_short=True)
    assert {s.node_id for s in prepared.segments} == {"old-node"}
    assert "new-node" in caplog.text


def test_skip_short_still_refuses_when_nothing_is_long_enough():
    with pytest.raises(ValueError, match="'a' \\(3 steps\\), 'b' \\(4 steps\\)"):
        prepare(frame({"a": 3, "b": 4}), **ARGS, skip_short=True)


def test_the_pipeline_records_the_longest_gap_training_filled():
    """Serving holds a missing reading as long as training filled one (training.power.stored_history)."""
    assert prepare(frame({"a": 200}), **ARGS).pipeline.max_gap_s == 300
    assert prepare(frame({"a": 200}), **{**ARGS, "max_gap_s": 30}).pipeline.max_gap_s == 60  # at least a step


def test_the_prepared_data_says_how_it_was_split_and_keeps_it_through_unseen_by():
    """The recency ages (training.power.recency) count to one end for all series where the cut was one time."""
    assert prepare(frame({"a": 200}), **ARGS).split == "series"
    in_time = prepare(frame({"a": 200, "b": 200}), **ARGS, split="time")
    assert in_time.split == "time"
    seen_more = in_time.unseen_by(in_time.data_span())  # a span: the roles are rebuilt
    assert seen_more is not in_time and seen_more.split == "time"


def scored_targets(windows) -> set[tuple[int, int]]:
    """(segment, step) of every target the windows score."""
    rows, leads = np.nonzero(windows.mask)
    return set(zip(windows.segment_index[rows].tolist(), (windows.origin_index[rows] + leads + 1).tolist(),
                   strict=True))


def test_the_training_windows_score_every_fit_and_calib_target_and_no_test_one():
    prepared = prepare(frame({"a": 200, "b": 120}), **ARGS)
    fit, calib, test = (prepared.windows(role) for role in Role)
    both = prepared.training_windows()
    assert scored_targets(both) == scored_targets(fit) | scored_targets(calib)
    assert not scored_targets(both) & scored_targets(test)
    assert both.mask.sum() == fit.mask.sum() + calib.mask.sum()  # every (origin, lead) once


def test_more_windows_times_leads_than_a_training_takes_is_refused_before_any_window(monkeypatch):
    """Regression: only nodes × bins were bounded, so a 7-day horizon at 1 minute on 14 days of a node passed every
    check and built about 3.4 GB of targets per node (the API's retraining runs beside the Serve replicas)."""
    monkeypatch.setenv("KCLOUD_MAX_STORE_ROWS", "100")  # 6,000 target values at most
    args = {**ARGS, "horizon": 40}
    prepare(frame({"a": 160}), **args)  # 150 windows × 40 leads = 6,000
    monkeypatch.setenv("KCLOUD_MAX_STORE_ROWS", "99")
    with pytest.raises(TooMuchData, match="150 windows × a 40-step horizon at a 60s step is 6,000 target values"):
        prepare(frame({"a": 160}), **args)
    monkeypatch.delenv("KCLOUD_MAX_STORE_ROWS")
    prepare(frame({"a": 160}), **args)  # the default limit


def test_with_one_cut_in_time_a_model_saw_every_series_up_to_its_span_s_end():
    """Regression: a retraining from the store cut per series, and the champion was taken to have seen only the
    series it named, each up to its own end: a node that joined late trained on times the others were scored at,
    and a champion was scored at times it had learnt from the other nodes."""
    def later(frame_: pd.DataFrame, minutes: int) -> pd.DataFrame:
        return frame_.assign(timestamp=frame_["timestamp"] + pd.Timedelta(minutes=minutes))

    data = pd.concat([frame({"old": 200}), later(frame({"late": 60}), 140)], ignore_index=True)
    in_time = prepare(data, **ARGS, split="time")
    parts = list(zip(in_time.segments, in_time.roles, strict=True))
    cut = min(segment.times[roles == Role.TEST][0] for segment, roles in parts if (roles == Role.TEST).any())
    for segment, roles in zip(in_time.segments, in_time.roles, strict=True):  # no training step after the cut
        assert (segment.times[roles != Role.TEST] < cut).all()
    # a champion trained on "old" alone, up to minute 190 (after the cut): with one cut it saw minute 190 of "late"
    champion_span = prepare(frame({"old": 191}), **{**ARGS, "train_fraction": 0.999}).data_span()
    assert champion_span.end > cut
    assert "late" not in champion_span.series
    late = next(i for i, s in enumerate(in_time.segments) if s.node_id == "late")
    unseen = in_time.unseen_by(champion_span).roles[late]
    late_times = in_time.segments[late].times
    assert not ((unseen == Role.TEST) & (late_times <= champion_span.end)).any()
    assert ((unseen == Role.TEST) & (late_times > champion_span.end)).any()
    per_series = prepare(data, **ARGS)  # per series, "late" trains on times at which "old" is scored
    old = next(i for i, s in enumerate(per_series.segments) if s.node_id == "old")
    old_scored_from = per_series.segments[old].times[per_series.roles[old] == Role.TEST][0]
    assert (per_series.segments[late].times[per_series.roles[late] != Role.TEST] >= old_scored_from).any()


def test_too_few_calibration_points_are_refused_before_any_training():
    """Regression: the check before training asked only for one window of each role, so a training part with fewer
    scored calibration leads than the intervals need passed it and failed once Ray Train had run (16 of 30 here)."""
    prepared = prepare(frame({"n": 100}), **{**ARGS, "sequence_length": 60, "horizon": 1})
    assert len(prepared.windows(Role.FIT)) and prepared.windows(Role.CALIB).points == 16
    with pytest.raises(NotEnoughData, match=r"^16 calibration points: .* intervals at a coverage of 0.8 \(at least "
                                            r"30\); pass a smaller --sequence-length"):
        prepared.require_training_windows(0.8, 0.8)
    prepared.require_training_windows(0.8, None)  # nothing calibrated on it (a registered model's backtest)
    longer = prepare(frame({"n": 300}), **{**ARGS, "sequence_length": 60, "horizon": 1})
    longer.require_training_windows(0.8, 0.8)
    with pytest.raises(NotEnoughData, match=r"\(at least 99\)"):  # 0.99 needs 99 scores for a bound that is one
        longer.require_training_windows(0.8, 0.99)


def test_too_few_training_rows_for_the_features_only_estimator_are_refused_before_any_training():
    """Regression (review): 40 rows with a 2-step window and 30 leads passed every check (27 training windows, 207
    calibration points), trained in full, then failed with "the estimator has no regression without features"."""
    prepared = prepare(frame({"n": 40}), **{**ARGS, "sequence_length": 2, "horizon": 30, "train_fraction": 0.9})
    assert len(prepared.windows(Role.FIT)) and prepared.windows(Role.CALIB).points >= 30
    with pytest.raises(NotEnoughData, match=r"^\d+ training rows: .* features-only estimator on \(at least 30\)"):
        prepared.require_training_windows(0.9, 0.8)


def test_a_tune_trial_of_a_shorter_window_is_scored_on_the_longest_window_s_points():
    """A series broken by a gap in its calibration tail: a 4-step window has origins early in the segment after the
    gap that a 10-step one has not. Trials were chosen on validation MAEs over those different points."""
    rows = frame({"a": 200})
    rows = rows[(rows.index < 170) | (rows.index >= 178)]  # an 8-minute gap, past max_gap, inside the last 20 %
    longest = prepare(rows, **{**ARGS, "train_fraction": 1.0})
    shorter = dataclasses.replace(longest, sequence_length=4)
    common = dataclasses.replace(shorter, scored_from_length=longest.sequence_length)

    def origins(prepared, role):
        windows = prepared.windows(role)
        return set(zip(windows.segment_index.tolist(), windows.origin_index.tolist(), strict=True))

    assert origins(shorter, Role.CALIB) > origins(longest, Role.CALIB)  # more, early in the segment after the gap
    assert origins(common, Role.CALIB) == origins(longest, Role.CALIB)
    assert origins(common, Role.FIT) == origins(shorter, Role.FIT)  # a trial trains on all its own windows
