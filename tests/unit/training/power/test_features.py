"""Unit tests for resampling, the feature pipeline and supervised windows (training.power)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from core.telemetry_csv import validate_telemetry
from tests.unit.training.power.segments import START, STEP, make_segment
from training.power.features import OTHER_WORKLOAD, POWER_CHANGE_COLUMN, FeaturePipeline, Segment, resample
from training.power.windows import Role, Windows, assign_roles, build_windows, describe_splits
from training.settings import default_max_gap

T0 = int(START.timestamp())  # the segments' midnight, a multiple of every step used here


def telemetry(node: str, seconds, power, **columns) -> pd.DataFrame:
    """Validated telemetry of one node: samples at T0 + seconds."""
    seconds = np.asarray(seconds)
    raw = pd.DataFrame({"timestamp": T0 + seconds, "node_id": node, "power_watts": np.asarray(power, float)})
    for name, values in columns.items():
        raw[name] = values
    return validate_telemetry(raw)


def regular(node: str, bins, power, step: int = STEP, **columns) -> pd.DataFrame:
    """One sample at the start of each listed bin."""
    return telemetry(node, np.asarray(bins) * step, power, **columns)


# --- resample ---------------------------------------------------------------------------------------------------


def test_samples_are_averaged_into_step_bins() -> None:
    frame = telemetry(
        "n", [0, 20, 40, 60, 90, 150], [1, 2, 3, 10, 20, 7],
        cpu_utilization=[10, 20, 30, 50, np.nan, 1],
        workload_type=[None, "b", None, None, None, "c"],
    )
    (segment,) = resample(frame, STEP, 300)
    assert segment.power.tolist() == [2.0, 15.0, 7.0]
    assert segment.numeric["cpu_utilization"].tolist() == [20.0, 50.0, 1.0]  # NaN ignored in the mean
    assert np.isnan(segment.numeric["temperature"]).all()  # never observed
    assert segment.workload.tolist() == ["b", "b", "c"]  # last known kind in the bin, carried forward
    assert not segment.imputed.any()
    assert segment.start == pd.Timestamp(T0, unit="s", tz="UTC")
    assert segment.step_s == STEP and len(segment) == 3
    assert list(segment.times) == [pd.Timestamp(T0 + k * STEP, unit="s", tz="UTC") for k in range(3)]
    assert segment.end == segment.times[-1]


def test_workload_unknown_until_first_seen() -> None:
    (segment,) = resample(regular("n", [0, 1, 2], [1, 1, 1], workload_type=[None, "Serve", None]), STEP, 300)
    assert pd.isna(segment.workload[0])  # unknown (None or NaN)
    assert segment.workload[1:].tolist() == ["serve", "serve"]
    pipeline = FeaturePipeline.fit([segment], ["workload_type"], STEP)
    assert pipeline.workload_vocab == ("serve",)
    one_hot = pipeline.transform(segment)[:, 2:]
    assert one_hot.tolist() == [[0, 1], [1, 0], [1, 0]]  # unknown -> "<other>"


def test_start_is_the_bin_start() -> None:
    (segment,) = resample(telemetry("n", [75, 130], [1, 2]), STEP, 300)
    assert segment.start == pd.Timestamp(T0 + 60, unit="s", tz="UTC")
    assert segment.power.tolist() == [1.0, 2.0]


def test_short_gap_is_filled_forward_and_flagged() -> None:
    frame = regular("n", [0, 1, 4, 5], [10, 20, 50, 60], cpu_utilization=[1, 2, 5, 6],
                    workload_type=["x", "y", "z", "z"])
    (segment,) = resample(frame, STEP, 3 * STEP)
    np.testing.assert_allclose(segment.power, [10, 20, 20, 20, 50, 60])  # never from a later sample
    np.testing.assert_allclose(segment.numeric["cpu_utilization"], [1, 2, 2, 2, 5, 6])
    assert segment.imputed.tolist() == [False, False, True, True, False, False]
    assert segment.workload.tolist() == ["x", "y", "y", "y", "z", "z"]  # carried forward over the gap


def test_gap_of_exactly_max_gap_is_bridged_and_one_more_step_splits() -> None:
    max_gap = 3 * STEP
    (bridged,) = resample(regular("n", [0, 1, 5, 6], [1, 1, 5, 5]), STEP, max_gap)  # 3 missing bins
    assert len(bridged) == 7 and bridged.imputed.sum() == 3
    split = resample(regular("n", [0, 1, 6, 7], [1, 1, 5, 5]), STEP, max_gap)  # 4 missing bins
    assert [len(s) for s in split] == [2, 2]


def test_long_gap_splits_into_segments() -> None:
    frame = regular("n", [0, 1, 2, 30, 31, 32, 33], [1, 2, 3, 4, 5, 6, 7])
    first, second = resample(frame, STEP, 5 * STEP)
    assert first.power.tolist() == [1.0, 2.0, 3.0]
    assert second.power.tolist() == [4.0, 5.0, 6.0, 7.0]
    assert second.start == pd.Timestamp(T0 + 30 * STEP, unit="s", tz="UTC")
    assert not first.imputed.any() and not second.imputed.any()
    assert first.node_id == second.node_id == "n"


def test_segments_start_and_end_on_observed_bins() -> None:
    bins = [0, 2, 3, 20, 22, 40]
    segments = resample(regular("n", bins, np.arange(len(bins)) + 1.0), STEP, 2 * STEP)
    assert [len(s) for s in segments] == [4, 3, 1]
    for segment in segments:
        assert not segment.imputed[0] and not segment.imputed[-1]
        assert np.isfinite(segment.power).all()


def test_a_sample_decades_away_costs_no_bins_in_between() -> None:
    """Every bin from the first sample to the last was allocated before the split at gaps: one stray sample in 2090
    at a 1-second step asked for about 2 billion bins (a MemoryError, or the OOM killer)."""
    frame = telemetry("n", [0, 1, 2, 2_000_000_000], [1, 2, 3, 4])
    first, second = resample(frame, 1, 5)
    assert first.power.tolist() == [1.0, 2.0, 3.0] and second.power.tolist() == [4.0]
    assert second.start == pd.Timestamp(T0 + 2_000_000_000, unit="s", tz="UTC")


def test_nodes_are_resampled_separately() -> None:
    frame = pd.concat([
        regular("b", [0, 1, 2], [100, 100, 100]),
        regular("a", [1, 2, 3], [1, 2, 3]),
    ])
    segments = resample(frame, STEP, 300)
    assert [s.node_id for s in segments] == ["a", "b"]
    a, b = segments
    assert a.power.tolist() == [1.0, 2.0, 3.0] and b.power.tolist() == [100.0] * 3
    assert a.start == pd.Timestamp(T0 + STEP, unit="s", tz="UTC")
    assert b.start == pd.Timestamp(T0, unit="s", tz="UTC")


def test_segment_slice() -> None:
    segment = make_segment([1, 2, 3, 4], numeric={"cpu_utilization": [5, 6, 7, 8]}, workload=["a", "b", "c", "d"],
                           imputed=[False, True, False, False])
    part = segment.slice(1, 3)
    assert part.power.tolist() == [2.0, 3.0]
    assert part.numeric["cpu_utilization"].tolist() == [6.0, 7.0]
    assert part.workload.tolist() == ["b", "c"] and part.imputed.tolist() == [True, False]
    assert part.start == segment.start + pd.Timedelta(seconds=STEP)


# --- FeaturePipeline ---------------------------------------------------------------------------------------------

FEATURES = ("cpu_utilization", "temperature", "workload_type")


def training_segments() -> list[Segment]:
    return [
        make_segment([100, 200, 300], numeric={"cpu_utilization": [10, np.nan, 30], "temperature": [40, 40, 40]},
                     workload=["train", "infer", None]),
        make_segment([400, 500], node="m", numeric={"cpu_utilization": [50, 60]}, workload=["train", "train"]),
    ]


def test_fit_uses_only_the_given_segments() -> None:
    segments = training_segments()
    pipeline = FeaturePipeline.fit(segments, FEATURES, STEP)
    power = np.array([100, 200, 300, 400, 500.0])
    assert pipeline.power_mean == pytest.approx(power.mean())
    assert pipeline.power_std == pytest.approx(power.std())
    cpu = np.array([10, 30, 50, 60.0])  # NaN ignored
    assert pipeline.numeric_mean["cpu_utilization"] == pytest.approx(cpu.mean())
    assert pipeline.numeric_std["cpu_utilization"] == pytest.approx(cpu.std())
    assert pipeline.numeric_mean["temperature"] == pytest.approx(40.0)
    assert pipeline.numeric_std["temperature"] == 1.0  # constant: no division by zero
    assert pipeline.workload_vocab == ("infer", "train")
    assert set(pipeline.numeric_mean) == {"cpu_utilization", "temperature"}  # only the chosen features

    # scalers fitted on a training slice ignore what comes later
    later = make_segment([100, 200, 300, 10_000, 20_000], numeric={"cpu_utilization": [1, 2, 3, 99, 99]},
                         workload=["a", "a", "a", "zzz", "zzz"])
    head = FeaturePipeline.fit([later.slice(0, 3)], FEATURES, STEP)
    assert head.power_mean == pytest.approx(200.0)
    assert head.power_std == pytest.approx(np.std([100, 200, 300]))
    assert head.numeric_mean["cpu_utilization"] == pytest.approx(2.0)
    assert head.workload_vocab == ("a",)


def test_fit_with_a_never_observed_feature() -> None:
    pipeline = FeaturePipeline.fit([make_segment([1, 2, 3])], ["gpu_utilization"], STEP)
    assert pipeline.numeric_mean["gpu_utilization"] == 0.0 and pipeline.numeric_std["gpu_utilization"] == 1.0
    features = pipeline.transform(make_segment([1, 2, 3]))
    assert features[:, 2].tolist() == [0.0, 0.0, 0.0] and features[:, 3].tolist() == [1.0, 1.0, 1.0]


def test_feature_names_layout() -> None:
    pipeline = FeaturePipeline.fit(training_segments(), FEATURES, STEP)
    assert pipeline.feature_names == [
        "power", "power_change",
        "cpu_utilization", "cpu_utilization_missing",
        "temperature", "temperature_missing",
        "workload=infer", "workload=train", f"workload={OTHER_WORKLOAD}",
    ]
    bare = FeaturePipeline.fit(training_segments(), [], STEP)
    assert bare.feature_names == ["power", "power_change"]


def test_transform_values() -> None:
    pipeline = FeaturePipeline.fit(training_segments(), FEATURES, STEP)
    segment = make_segment([300, 350, 250, 250],
                           numeric={"cpu_utilization": [35, np.nan, 0, 100], "temperature": [np.nan, 41, 39, 40]},
                           workload=["train", "batch", None, "infer"])
    out = pipeline.transform(segment)
    names = pipeline.feature_names
    assert out.shape == (4, len(names)) and out.dtype == np.float32
    col = {name: out[:, i] for i, name in enumerate(names)}
    mean, std = pipeline.power_mean, pipeline.power_std
    np.testing.assert_allclose(col["power"], (np.array([300, 350, 250, 250]) - mean) / std, rtol=1e-6)
    np.testing.assert_allclose(col["power_change"], np.array([0, 50, -100, 0]) / std, rtol=1e-6)
    cpu_mean, cpu_std = pipeline.numeric_mean["cpu_utilization"], pipeline.numeric_std["cpu_utilization"]
    np.testing.assert_allclose(col["cpu_utilization"], [(35 - cpu_mean) / cpu_std, 0.0, (0 - cpu_mean) / cpu_std,
                                                        (100 - cpu_mean) / cpu_std], rtol=1e-6)
    assert col["cpu_utilization_missing"].tolist() == [0, 1, 0, 0]
    assert col["temperature"][0] == 0.0 and col["temperature_missing"].tolist() == [1, 0, 0, 0]
    np.testing.assert_allclose(col["temperature"][1:], [1.0, -1.0, 0.0])  # (x - 40) / 1
    assert col["workload=train"].tolist() == [1, 0, 0, 0]
    assert col["workload=infer"].tolist() == [0, 0, 0, 1]
    assert col[f"workload={OTHER_WORKLOAD}"].tolist() == [0, 1, 1, 0]  # unknown kind and no kind
    one_hot = out[:, names.index("workload=infer"):]
    assert one_hot.sum(axis=1).tolist() == [1, 1, 1, 1]
    assert np.isfinite(out).all()


def test_input_columns_training_never_set_stay_unset_when_served() -> None:
    """Regression: trained on rows that all had a temperature and a workload label, a stored window (no label) or a
    request without a temperature set the missing flag and the unlabelled column, whose LSTM weights never trained
    (an input always 0 gets no gradient): random weights took part in every such forecast."""
    labelled = [make_segment([100, 200, 300], numeric={"cpu_utilization": [10, np.nan, 30],
                                                       "temperature": [40, 41, 42]}, workload=["train"] * 3)]
    pipeline = FeaturePipeline.fit(labelled, FEATURES, STEP)
    assert pipeline.always_measured == ("temperature",) and pipeline.other_label_seen is False
    served = pipeline.transform(make_segment([300, 350], numeric={"cpu_utilization": [np.nan, 20]},
                                             workload=[None, "batch"]))
    col = {name: served[:, i] for i, name in enumerate(pipeline.feature_names)}
    assert col["temperature_missing"].tolist() == [0, 0] and col["temperature"].tolist() == [0, 0]  # the mean
    assert col["cpu_utilization_missing"].tolist() == [1, 0]  # missing in training too: its flag trained
    assert col[f"workload={OTHER_WORKLOAD}"].tolist() == [0, 0] and col["workload=train"].tolist() == [0, 0]
    # the refits train on the calibration rows too: a flag or label set there did train, and stays (review)
    calibration = make_segment([300, 310], numeric={"temperature": [np.nan, 40]}, workload=["train", "train"])
    refit = FeaturePipeline.fit(labelled, FEATURES, STEP, trained_on=[*labelled, calibration])
    assert refit.always_measured == () and refit.other_label_seen is False
    assert refit.numeric_mean == pipeline.numeric_mean  # the scalers are the FIT rows' still
    new_label = make_segment([300], numeric={"temperature": [40]}, workload=["batch"])  # a label FIT never had
    assert FeaturePipeline.fit(labelled, FEATURES, STEP, trained_on=[*labelled, new_label]).other_label_seen
    old = pipeline.model_copy(update={"always_measured": None, "other_label_seen": None})  # saved before: as before
    before = {name: old.transform(make_segment([300], workload=[None]))[:, i]
              for i, name in enumerate(old.feature_names)}
    assert before["temperature_missing"].tolist() == [1] and before[f"workload={OTHER_WORKLOAD}"].tolist() == [1]


@pytest.mark.parametrize("seed", range(20))
def test_the_rows_models_train_on_get_the_same_inputs_as_before_the_indicator_rule(seed: int) -> None:
    """Unsetting indicator columns training never set changes served inputs only, never a training row's."""
    rng = np.random.default_rng(seed)

    def random_segment(length: int) -> Segment:
        temperature = np.where(rng.random(length) < 0.1 * rng.integers(0, 2), np.nan, 40.0 + rng.random(length))
        labels = rng.choice(np.array(["train", "infer", "batch", None], dtype=object), size=length,
                            p=rng.dirichlet(np.ones(4)))
        return make_segment(rng.random(length) * 500, numeric={"temperature": temperature}, workload=labels)

    fit, calibration = [random_segment(12) for _ in range(2)], [random_segment(4) for _ in range(2)]
    pipeline = FeaturePipeline.fit(fit, FEATURES, STEP, trained_on=[*fit, *calibration])
    before = pipeline.model_copy(update={"always_measured": None, "other_label_seen": None})
    for segment in (*fit, *calibration):
        np.testing.assert_array_equal(pipeline.transform(segment), before.transform(segment))


def test_spec_hash_follows_the_layout_not_the_values() -> None:
    base = FeaturePipeline.fit(training_segments(), FEATURES, STEP)
    refit = FeaturePipeline.fit([make_segment([1, 2, 9000], numeric={"cpu_utilization": [1, 2, 3]},
                                              workload=["train", "infer", "infer"])], FEATURES, STEP)
    assert refit.power_mean != base.power_mean
    assert refit.spec_hash == base.spec_hash  # same layout, other fitted values
    assert base.model_copy(update={"power_std": 123.0}).spec_hash == base.spec_hash
    others = [
        FeaturePipeline.fit(training_segments(), ("cpu_utilization", "workload_type"), STEP),  # fewer features
        FeaturePipeline.fit(training_segments(), ("temperature", "cpu_utilization", "workload_type"), STEP),  # order
        FeaturePipeline.fit(training_segments(), FEATURES, 2 * STEP),  # other step
        base.model_copy(update={"workload_vocab": ("infer", "train", "serve")}),  # other vocabulary
    ]
    hashes = {base.spec_hash, *(p.spec_hash for p in others)}
    assert len(hashes) == 1 + len(others)
    assert len(base.spec_hash) == 16


def test_json_round_trip() -> None:
    pipeline = FeaturePipeline.fit(training_segments(), FEATURES, STEP)
    copy = FeaturePipeline.model_validate_json(pipeline.model_dump_json())
    assert copy == pipeline
    assert copy.spec_hash == pipeline.spec_hash and copy.feature_names == pipeline.feature_names
    segment = training_segments()[0]
    np.testing.assert_array_equal(copy.transform(segment), pipeline.transform(segment))


def test_json_with_unknown_field_is_refused() -> None:
    data = FeaturePipeline.fit(training_segments(), FEATURES, STEP).model_dump()
    data["surprise"] = 1
    with pytest.raises(ValidationError):
        FeaturePipeline.model_validate(data)


def test_unknown_feature_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="gpu_power"):
        FeaturePipeline.fit(training_segments(), ["cpu_utilization", "gpu_power"], STEP)
    with pytest.raises(ValueError, match="power_watts"):
        FeaturePipeline.fit(training_segments(), ["power_watts"], STEP)


# --- assign_roles ------------------------------------------------------------------------------------------------


def test_roles_in_time_order_with_proportions() -> None:
    (roles,) = assign_roles([make_segment(np.ones(100))], train_fraction=0.7, calib_fraction=0.2)
    assert roles.tolist() == [Role.FIT] * 56 + [Role.CALIB] * 14 + [Role.TEST] * 30


def test_roles_span_segments_of_one_series_and_each_series_separately() -> None:
    segments = [make_segment(np.ones(30), node="a"), make_segment(np.ones(70), node="a", start_step=100),
                make_segment(np.ones(10), node="b")]
    roles = assign_roles(segments, train_fraction=0.5, calib_fraction=0.2)
    joined = np.concatenate(roles[:2])  # series a: 100 steps -> 40 FIT, 10 CALIB, 50 TEST
    assert joined.tolist() == [Role.FIT] * 40 + [Role.CALIB] * 10 + [Role.TEST] * 50
    assert roles[0].tolist() == [Role.FIT] * 30
    assert roles[2].tolist() == [Role.FIT] * 4 + [Role.CALIB] * 1 + [Role.TEST] * 5  # series b: its own split
    for r in roles:
        assert (np.diff(r) >= 0).all()  # never back to an earlier role


def test_one_cut_in_time_trains_on_every_series_before_it_and_tests_every_one_after() -> None:
    """With a cut per series, a run recorded later trained the model that forecast an earlier run's last part."""
    early, late = make_segment(np.ones(50), node="a"), make_segment(np.ones(50), node="b", start_step=50)
    roles = assign_roles([early, late], train_fraction=0.8, calib_fraction=0.25, split="time")
    # 100 steps in all, in time: the first 80 train (the first 60 fit, the next 20 calibrate), the last 20 test
    assert roles[0].tolist() == [Role.FIT] * 50
    assert roles[1].tolist() == [Role.FIT] * 10 + [Role.CALIB] * 20 + [Role.TEST] * 20
    per_series = assign_roles([early, late], train_fraction=0.8, calib_fraction=0.25)
    assert (per_series[0] == Role.TEST).sum() == 10  # the per-series cut tests the early run before the late trains


def test_series_recorded_together_are_cut_in_time_as_each_would_be_alone() -> None:
    together = [make_segment(np.ones(100), node="a"), make_segment(np.ones(100), node="b")]
    in_time = assign_roles(together, train_fraction=0.8, calib_fraction=0.25, split="time")
    for roles, alone in zip(in_time, assign_roles(together, 0.8, 0.25), strict=True):
        assert roles.tolist() == alone.tolist() == [Role.FIT] * 60 + [Role.CALIB] * 20 + [Role.TEST] * 20
    for length, fraction in ((6048, 0.8), (97, 0.7), (50, 1.0)):  # one series: the same cut, rounding included
        segment = make_segment(np.ones(length))
        assert assign_roles([segment], fraction, 0.2, split="time")[0].tolist() == assign_roles(
            [segment], fraction, 0.2)[0].tolist()


def test_a_suite_table_says_how_its_cases_were_cut() -> None:
    assert describe_splits([("a", "series"), ("a", "series"), ("b", "series")]) == "split: series (every case)"
    assert describe_splits([("a", "time"), ("b", "series"), ("a", "time"), ("c", "time")]) == (
        "split: time for a, c; series for b")


def test_train_fraction_one_leaves_no_test() -> None:
    (roles,) = assign_roles([make_segment(np.ones(50))], train_fraction=1.0, calib_fraction=0.2)
    assert (roles == Role.FIT).sum() == 40 and (roles == Role.CALIB).sum() == 10 and (roles != Role.TEST).all()


# --- build_windows ----------------------------------------------------------------------------------------------


def ramp_pipeline(segments: list[Segment]) -> FeaturePipeline:
    return FeaturePipeline.fit(segments, ("cpu_utilization",), STEP)


def test_window_shapes_and_contents() -> None:
    power = np.arange(20, dtype=float) * 10 + 100
    segment = make_segment(power, numeric={"cpu_utilization": np.arange(20.0)})
    pipeline = ramp_pipeline([segment])
    roles = [np.full(20, Role.TEST, np.int8)]
    windows = build_windows([segment], roles, pipeline, role=Role.TEST, sequence_length=5, horizon=3)
    assert isinstance(windows, Windows)
    n_features = len(pipeline.feature_names)
    # origins 4..18 (the last step has no target)
    assert windows.origin_index.tolist() == list(range(4, 19))
    assert windows.inputs.shape == (15, 5, n_features) and windows.inputs.dtype == np.float32
    assert windows.targets.shape == windows.mask.shape == (15, 3) and len(windows) == 15
    features = pipeline.transform(segment)
    for n, origin in enumerate(windows.origin_index):
        # what a forecast of that window reads: the window transformed on its own, no step before its first
        own = pipeline.transform(segment.slice(origin - 4, origin + 1))
        np.testing.assert_array_equal(windows.inputs[n], own)
        np.testing.assert_array_equal(own[1:], features[origin - 3:origin + 1])
        assert own[0, POWER_CHANGE_COLUMN] == 0.0  # regression: training read the change from the step before
        assert origin == 4 or features[origin - 4, POWER_CHANGE_COLUMN] != 0.0
        assert windows.last_power[n] == power[origin]
        for h in range(3):
            if origin + 1 + h < 20:
                assert windows.targets[n, h] == power[origin + 1 + h]
                assert windows.mask[n, h]
            else:
                assert np.isnan(windows.targets[n, h]) and not windows.mask[n, h]  # past the segment's end
    # the last input step is the origin itself
    np.testing.assert_allclose(windows.inputs[:, -1, 0], pipeline.scale_power(windows.last_power), rtol=1e-6)
    assert windows.points == int(windows.mask.sum()) == 15 * 3 - 3
    assert set(windows.node_ids) == {"n"} and set(windows.segment_index) == {0}


def test_window_inputs_index_like_the_stacked_array_and_hold_each_row_once() -> None:
    """Two series, one of them in two segments: every index the training code uses gathers what the stacked
    [N, T, F] array would give, and the inputs keep each feature row once, not once per window."""
    segments = [make_segment(np.arange(12, dtype=float) * 7 + 50, node="a"),
                make_segment(np.arange(9, dtype=float) * 3 + 90, node="b")]
    segments.append(make_segment(np.arange(8, dtype=float) + 200, node="b", start_step=20))
    pipeline = ramp_pipeline(segments)
    roles = [np.full(len(s), Role.TEST, np.int8) for s in segments]
    windows = build_windows(segments, roles, pipeline, role=Role.TEST, sequence_length=4, horizon=2)
    def stacked_of(length: int) -> np.ndarray:  # each window transformed on its own, as a forecast reads it
        return np.stack([pipeline.transform(segments[s].slice(o + 1 - length, o + 1))
                         for s, o in zip(windows.segment_index, windows.origin_index, strict=True)])

    stacked = stacked_of(4)
    inputs = windows.inputs
    assert inputs.shape == stacked.shape and len(inputs) == len(stacked) == 8 + 5 + 4
    assert inputs.rows.shape[0] == sum(len(s) for s in segments)  # 29 rows for 17 windows of 4 steps
    picked = np.array([16, 0, 9, 9])
    rows = inputs.rows.copy()
    for key in (3, slice(2, 11), picked, (slice(None), -1), (slice(None), slice(None), 0), (picked, -1, slice(1, 3)),
                (slice(None), slice(-3, None)), (-1, slice(None), 1), (3, 0), (-1, -4, 1), (0, 0, slice(None)),
                (2, 0, 1), (slice(None), np.array([[0, 1], [2, 0]])),
                # array indexes paired up (or with an int), as numpy pairs them
                (np.array([2, 0]), np.array([0, 3])), (0, slice(None), np.array([1, 0])),
                (slice(None), np.array([0, 3]), np.array([1, 0])), (picked, slice(None), 1)):
        np.testing.assert_array_equal(inputs[key], stacked[key])
    np.testing.assert_array_equal(inputs.rows, rows)  # regression: one window's first step zeroed the shared row
    np.testing.assert_array_equal(np.asarray(inputs), stacked)
    np.testing.assert_array_equal(np.asarray(inputs.last_steps(2)), stacked_of(2))  # a shorter window's input
    with pytest.raises(IndexError):
        inputs[..., 0]


def test_mask_only_on_the_wanted_role() -> None:
    segment = make_segment(np.arange(30, dtype=float))
    (roles,) = assign_roles([segment], train_fraction=0.5, calib_fraction=0.2)  # FIT 0..11, CALIB 12..14, TEST 15..
    pipeline = ramp_pipeline([segment])
    for role in Role:
        windows = build_windows([segment], [roles], pipeline, role=role, sequence_length=4, horizon=5)
        assert len(windows) > 0
        target_steps = windows.origin_index[:, None] + np.arange(1, 6)[None, :]
        scored = target_steps[windows.mask]
        assert (roles[scored] == role).all(), role
        assert windows.mask.any(axis=1).all()  # every window has something to score
        # every (origin, lead) of that role inside the segment is scored exactly once per origin
        wanted = (target_steps < 30) & (roles[np.minimum(target_steps, 29)] == role)
        np.testing.assert_array_equal(windows.mask, wanted)
    fit = build_windows([segment], [roles], pipeline, role=Role.FIT, sequence_length=4, horizon=5)
    assert fit.origin_index.max() == 10  # an origin at 11 would only have CALIB targets
    test = build_windows([segment], [roles], pipeline, role=Role.TEST, sequence_length=4, horizon=5)
    assert test.origin_index.min() == 10  # inputs may reach back into earlier roles


def test_imputed_targets_are_never_scored() -> None:
    imputed = np.zeros(20, bool)
    imputed[[7, 8, 15]] = True
    segment = make_segment(np.arange(20, dtype=float), imputed=imputed)
    windows = build_windows([segment], [np.full(20, Role.FIT, np.int8)], ramp_pipeline([segment]),
                            role=Role.FIT, sequence_length=3, horizon=4)
    target_steps = windows.origin_index[:, None] + np.arange(1, 5)[None, :]
    assert not imputed[target_steps[windows.mask]].any()
    unscored_inside = (~windows.mask) & (target_steps < 20)
    assert set(target_steps[unscored_inside].tolist()) == {7, 8, 15}
    # an origin whose every target is imputed gives no window
    only_gap = make_segment(np.arange(6, dtype=float), imputed=[False, False, False, True, True, False])
    w = build_windows([only_gap], [np.full(6, Role.FIT, np.int8)], ramp_pipeline([only_gap]),
                      role=Role.FIT, sequence_length=3, horizon=2)
    assert w.origin_index.tolist() == [3, 4]


def test_windows_never_cross_segments() -> None:
    frame = pd.concat([
        regular("a", range(0, 12), np.arange(12) + 100.0),
        regular("a", range(40, 50), np.arange(10) + 500.0),  # after a long gap
        regular("a", range(80, 83), [9.0, 9.0, 9.0]),  # too short for one window
        regular("b", range(0, 15), np.arange(15) + 900.0),
    ])
    segments = resample(frame, STEP, 2 * STEP)
    assert [len(s) for s in segments] == [12, 10, 3, 15]
    roles = [np.full(len(s), Role.TEST, np.int8) for s in segments]
    pipeline = ramp_pipeline(segments)
    windows = build_windows(segments, roles, pipeline, role=Role.TEST, sequence_length=4, horizon=3)
    assert 2 not in set(windows.segment_index.tolist())
    for n in range(len(windows)):
        segment = segments[windows.segment_index[n]]
        origin = windows.origin_index[n]
        assert origin - 3 >= 0 and origin < len(segment) - 1
        assert windows.node_ids[n] == segment.node_id
        np.testing.assert_array_equal(windows.inputs[n], pipeline.transform(segment.slice(origin - 3, origin + 1)))
        scored = windows.targets[n][windows.mask[n]]
        assert np.isin(scored, segment.power).all()  # targets come from the window's own segment
        assert windows.last_power[n] == segment.power[origin]
    # windows per segment: len - sequence_length origins
    counts = np.bincount(windows.segment_index.astype(int), minlength=4).tolist()
    assert counts == [12 - 4, 10 - 4, 0, 15 - 4]


def test_no_windows_gives_empty_arrays_of_the_right_shape() -> None:
    segment = make_segment(np.arange(10, dtype=float))
    pipeline = ramp_pipeline([segment])
    windows = build_windows([segment], [np.full(10, Role.FIT, np.int8)], pipeline, role=Role.TEST,
                            sequence_length=4, horizon=3)
    assert len(windows) == 0 and windows.points == 0
    assert windows.inputs.shape == (0, 4, len(pipeline.feature_names))
    assert windows.targets.shape == (0, 3) and windows.mask.shape == (0, 3)
    short = build_windows([segment.slice(0, 4)], [np.full(4, Role.FIT, np.int8)], pipeline, role=Role.FIT,
                          sequence_length=4, horizon=3)
    assert len(short) == 0


@pytest.mark.parametrize("changed", ["power_watts", "cpu_utilization"])
def test_window_inputs_do_not_see_the_future(changed: str) -> None:
    """No input or origin value may depend on data after the origin (serving never has it).

    Changing the first value after a short gap must not change any window whose origin is before it.
    """
    bins = [0, 1, 2, 3, 4, 5, 7, 8, 9, 10]  # bin 6 has no sample at all
    results = []
    for late in (10.0, 90.0):
        power = [10.0] * 10
        cpu = [10.0, 10.0, 10.0, 10.0, 10.0, np.nan, 10.0, 10.0, 10.0, 10.0]  # bin 5: power but no cpu
        if changed == "power_watts":
            power[6] = late  # bin 7
        else:
            cpu[6] = late
        (segment,) = resample(regular("n", bins, power, cpu_utilization=cpu), STEP, 3 * STEP)
        fixed = make_segment([0.0, 20.0], numeric={"cpu_utilization": [0.0, 20.0]})
        pipeline = FeaturePipeline.fit([fixed], ("cpu_utilization",), STEP)  # same scalers for both runs
        results.append(build_windows([segment], [np.full(len(segment), Role.FIT, np.int8)], pipeline,
                                     role=Role.FIT, sequence_length=3, horizon=2))
    a, b = results
    assert a.origin_index.tolist() == b.origin_index.tolist()
    before = a.origin_index < 7  # origins before the changed sample (bin 7)
    assert before.sum() == 5
    np.testing.assert_array_equal(a.inputs[before], b.inputs[before])
    np.testing.assert_array_equal(a.last_power[before], b.last_power[before])


def test_a_model_is_served_over_its_own_gap_or_its_step_s_default_when_it_kept_none():
    """What a comparison or a backtest of a registered model fills its windows over, as the service does: a model
    saved before the gap was kept (None) was served over its step's default, not a challenger's or a config's."""
    segment = make_segment([100.0, 110.0, 120.0])
    kept = FeaturePipeline.fit([segment], [], STEP, max_gap_s=7200)
    assert kept.served_max_gap_s == 7200
    assert kept.model_copy(update={"max_gap_s": None}).served_max_gap_s == default_max_gap(STEP)
    assert FeaturePipeline.fit([segment], [], 600, max_gap_s=60).served_max_gap_s == 600  # at least a step
