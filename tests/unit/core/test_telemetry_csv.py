"""Unit tests for the telemetry CSV loader and validator (core.telemetry_csv)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.telemetry_csv import (
    CANONICAL_COLUMNS,
    DEFAULT_SERIES,
    NUMERIC_FEATURES,
    TelemetryDataError,
    load_telemetry_csv,
    validate_telemetry,
)
from tests.paths import TEST_DATA

HEADER = "timestamp,node_id,power_watts"


def write_csv(tmp_path: Path, lines: list[str], name: str = "telemetry.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def load_lines(tmp_path: Path, lines: list[str]) -> pd.DataFrame:
    return load_telemetry_csv(write_csv(tmp_path, lines))


def load_error(tmp_path: Path, lines: list[str]) -> tuple[Path, str]:
    path = write_csv(tmp_path, lines)
    with pytest.raises(TelemetryDataError) as caught:
        load_telemetry_csv(path)
    return path, str(caught.value)


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text).tz_convert("UTC") if pd.Timestamp(text).tzinfo else pd.Timestamp(text, tz="UTC")


# --- happy paths ------------------------------------------------------------------------------------------------


def test_iso_timestamps_and_output_schema(tmp_path: Path) -> None:
    frame = load_lines(tmp_path, [
        "timestamp,node_id,power_watts,cpu_utilization,memory_usage,gpu_utilization,npu_utilization,"
        "temperature,workload_type",
        "2026-01-05T00:00:00Z,n1,100.5,10,20,30,40,50,Training",
        "2026-01-05T00:01:00Z,n1,200,,,,,, ",
    ])
    assert tuple(frame.columns) == CANONICAL_COLUMNS
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]" or str(frame["timestamp"].dt.tz) == "UTC"
    assert list(frame["timestamp"]) == [utc("2026-01-05T00:00:00Z"), utc("2026-01-05T00:01:00Z")]
    assert frame["power_watts"].tolist() == [100.5, 200.0]
    first = frame.iloc[0]
    assert [first[c] for c in NUMERIC_FEATURES] == [10.0, 20.0, 30.0, 40.0, 50.0]
    assert first["workload_type"] == "training"  # normalized to lower case
    second = frame.iloc[1]
    assert all(np.isnan(second[c]) for c in NUMERIC_FEATURES)  # blank optional values are unknown
    assert pd.isna(second["workload_type"])  # blank (even whitespace) workload is unknown
    for column in ("power_watts", *NUMERIC_FEATURES):
        assert frame[column].dtype == np.float64, column


def test_unix_seconds_timestamps(tmp_path: Path) -> None:
    frame = load_lines(tmp_path, [
        HEADER,
        "1767571200,n1,1",  # 2026-01-05T00:00:00Z
        "1767571260.5,n1,2",  # fractional seconds
    ])
    assert list(frame["timestamp"]) == [utc("2026-01-05T00:00:00Z"), utc("2026-01-05T00:01:00.5Z")]


def test_mixed_unix_and_iso_in_one_file(tmp_path: Path) -> None:
    frame = load_lines(tmp_path, [HEADER, "2026-01-05T00:01:00Z,n1,2", "1767571200,n1,1"])
    assert list(frame["timestamp"]) == [utc("2026-01-05T00:00:00Z"), utc("2026-01-05T00:01:00Z")]
    assert frame["power_watts"].tolist() == [1.0, 2.0]


def test_offsets_are_converted_to_utc(tmp_path: Path) -> None:
    frame = load_lines(tmp_path, [
        HEADER,
        "2026-01-05T09:00:00+09:00,n1,1",  # = 00:00Z
        "2026-01-04T19:01:00-05:00,n1,2",  # = 00:01Z
        "2026-01-05T00:02:00,n1,3",  # no offset: taken as UTC
    ])
    assert list(frame["timestamp"]) == [utc("2026-01-05T00:00:00Z"), utc("2026-01-05T00:01:00Z"),
                                        utc("2026-01-05T00:02:00Z")]
    assert frame["power_watts"].tolist() == [1.0, 2.0, 3.0]
    assert str(frame["timestamp"].dt.tz) == "UTC"


def test_missing_node_id_column_gives_one_default_series(tmp_path: Path) -> None:
    frame = load_lines(tmp_path, ["timestamp,power_watts", "2026-01-05T00:00:00Z,5", "2026-01-05T00:01:00Z,6"])
    assert frame["node_id"].tolist() == [DEFAULT_SERIES, DEFAULT_SERIES]


def test_blank_node_id_falls_back_to_default(tmp_path: Path) -> None:
    frame = load_lines(tmp_path, [HEADER, "2026-01-05T00:00:00Z,,5", "2026-01-05T00:00:00Z, a ,6"])
    assert sorted(frame["node_id"]) == ["a", DEFAULT_SERIES]  # whitespace stripped


def test_missing_optional_columns_are_nan(tmp_path: Path) -> None:
    frame = load_lines(tmp_path, ["timestamp,power_watts,temperature", "2026-01-05T00:00:00Z,5,40"])
    assert tuple(frame.columns) == CANONICAL_COLUMNS
    assert frame["temperature"].tolist() == [40.0]
    for column in ("cpu_utilization", "memory_usage", "gpu_utilization", "npu_utilization"):
        assert frame[column].isna().all(), column
        assert frame[column].dtype == np.float64
    assert frame["workload_type"].isna().all()


def test_extra_columns_are_dropped(tmp_path: Path) -> None:
    frame = load_lines(tmp_path, [
        "hostname,timestamp,power_watts,rack,node_id",
        "h1,2026-01-05T00:00:00Z,5,r7,n1",
    ])
    assert tuple(frame.columns) == CANONICAL_COLUMNS
    assert "hostname" not in frame.columns and "rack" not in frame.columns
    assert frame.iloc[0]["node_id"] == "n1" and frame.iloc[0]["power_watts"] == 5.0


def test_rows_of_one_node_and_instant_are_averaged_and_logged(tmp_path: Path, caplog) -> None:
    """As samples of one bin are when resampled; keeping one of them silently threw the others away."""
    frame = load_lines(tmp_path, [
        "timestamp,node_id,power_watts,cpu_utilization,workload_type",
        "2026-01-05T00:00:00Z,n1,10,,",
        "2026-01-05T00:01:00Z,n1,11,5,idle",
        "2026-01-05T00:00:00Z,n1,99,40,train",  # same node and time as line 2
        "2026-01-05T01:00:00+01:00,n1,100,60,infer",  # the same instant, written with an offset
        "2026-01-05T00:00:00Z,n2,20,1,idle",  # same time, other node: its own row
    ])
    assert len(frame) == 3
    n1 = frame[frame["node_id"] == "n1"]
    assert n1["power_watts"].tolist() == [(10 + 99 + 100) / 3, 11.0]
    assert n1["cpu_utilization"].tolist() == [50.0, 5.0]  # the mean of what is known
    assert n1["workload_type"].tolist() == ["train", "idle"]  # the first known
    assert frame[frame["node_id"] == "n2"]["power_watts"].tolist() == [20.0]
    assert not frame.duplicated(["node_id", "timestamp"]).any()
    assert frame.index.tolist() == [0, 1, 2]
    [record] = [r for r in caplog.records if r.name == "core.telemetry_csv"]
    assert "3 rows share a node and time" in record.getMessage() and "first at line 2" in record.getMessage()
    assert "1 instants with different power" in record.getMessage()


def test_unsorted_input_is_sorted_by_node_then_time(tmp_path: Path) -> None:
    frame = load_lines(tmp_path, [
        HEADER,
        "2026-01-05T00:02:00Z,b,3",
        "2026-01-05T00:01:00Z,a,2",
        "2026-01-05T00:00:00Z,b,1",
        "2026-01-05T00:00:00Z,a,0",
    ])
    assert frame["node_id"].tolist() == ["a", "a", "b", "b"]
    assert frame["power_watts"].tolist() == [0.0, 2.0, 1.0, 3.0]
    for _, rows in frame.groupby("node_id"):
        assert rows["timestamp"].is_monotonic_increasing
    assert frame.index.tolist() == [0, 1, 2, 3]


def test_whitespace_around_numbers_is_tolerated(tmp_path: Path) -> None:
    frame = load_lines(tmp_path, [
        "timestamp,power_watts,cpu_utilization,temperature",
        "2026-01-05T00:00:00Z, 12.5 ,  , 40 ",  # padded numbers; a whitespace-only optional value is unknown
    ])
    assert frame["power_watts"].tolist() == [12.5]
    assert np.isnan(frame["cpu_utilization"].iloc[0])
    assert frame["temperature"].tolist() == [40.0]


def test_boundary_values_are_accepted(tmp_path: Path) -> None:
    frame = load_lines(tmp_path, [
        "timestamp,power_watts,cpu_utilization,gpu_utilization,temperature",
        "2026-01-05T00:00:00Z,0,0,100,-50",
        "2026-01-05T00:01:00Z,1e3,100.0,0.0,150",
    ])
    assert frame["power_watts"].tolist() == [0.0, 1000.0]
    assert frame["cpu_utilization"].tolist() == [0.0, 100.0]


def test_validate_frame_with_native_types() -> None:
    raw = pd.DataFrame({
        "timestamp": [1767571260, 1767571200],
        "power_watts": [2.0, 1.0],
        "cpu_utilization": [np.nan, 50.0],
    })
    frame = validate_telemetry(raw)
    assert frame["power_watts"].tolist() == [1.0, 2.0]
    assert frame["cpu_utilization"].iloc[0] == 50.0 and np.isnan(frame["cpu_utilization"].iloc[1])
    assert frame["timestamp"].iloc[0] == utc("2026-01-05T00:00:00Z")


def test_the_shipped_sample_loads() -> None:
    sample = TEST_DATA / "upm_sample.csv"
    frame = load_telemetry_csv(sample)
    assert set(frame["node_id"]) == {"hybrid_1", "radiance_1", "sysbench_2"}
    assert (frame["power_watts"] >= 0).all()
    assert not frame.duplicated(["node_id", "timestamp"]).any()


# --- refusals: each names the file, the line and the column -----------------------------------------------------


def test_missing_power_column(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, ["timestamp,node_id,watts", "2026-01-05T00:00:00Z,n1,5"])
    assert str(path) in message
    assert "power_watts" in message and "missing" in message


def test_missing_timestamp_column(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, ["time,power_watts", "2026-01-05T00:00:00Z,5"])
    assert str(path) in message and "timestamp" in message and "missing" in message


def test_unparsable_timestamp_names_csv_line(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, [
        HEADER,
        "2026-01-05T00:00:00Z,n1,1",  # line 2
        "2026-01-05T00:01:00Z,n1,2",  # line 3
        "not-a-time,n1,3",  # line 4
    ])
    assert str(path) in message
    assert "line 4" in message
    assert "timestamp" in message and "not-a-time" in message
    assert "line 2" not in message and "line 3" not in message


def test_out_of_range_date_is_refused(tmp_path: Path) -> None:
    _, message = load_error(tmp_path, [HEADER, "2026-13-45T00:00:00Z,n1,1"])
    assert "line 2" in message and "timestamp" in message


@pytest.mark.parametrize("value, why", [
    ("1767571200000", "milliseconds?"),  # 2026-01-05 in milliseconds: was a traceback naming no line
    ("-1000000000000", "milliseconds?"),
    ("1000", "milliseconds?"),  # 1970: every step from there to the data would be a bin to resample
    ("9999-01-01T00:00:00Z", "outside the years 2000..2099"),
    ("0001-01-01", "outside the years 2000..2099"),
])
def test_implausible_times_are_refused_naming_the_line(tmp_path: Path, value: str, why: str) -> None:
    _, message = load_error(tmp_path, [HEADER, "2026-01-05T00:00:00Z,n1,1", f"{value},n1,2"])
    assert "line 3" in message and "timestamp" in message and why in message and value in message


def test_a_compact_iso_date_is_a_date_not_seconds(tmp_path: Path) -> None:
    """20260105 was read as Unix seconds: 1970-08-23."""
    frame = load_lines(tmp_path, [HEADER, "20260105,n1,1"])
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2026-01-05", tz="UTC")


def test_empty_fields_after_the_last_column_are_ignored(tmp_path: Path) -> None:
    """A trailing comma on every data row (some exports write one) made pandas take the first column as the
    index: every column shifted by one, and the loader failed with a traceback."""
    frame = load_lines(tmp_path, [HEADER, "2026-01-05T00:00:00Z,n1,1,", "2026-01-05T00:01:00Z,n1,2,"])
    assert frame["power_watts"].tolist() == [1.0, 2.0] and frame["node_id"].tolist() == ["n1", "n1"]


def test_a_value_beyond_the_header_is_refused_naming_the_line(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, [HEADER, "2026-01-05T00:00:00Z,n1,1", "2026-01-05T00:01:00Z,n1,2,7"])
    assert str(path) in message and "line(s) 3:" in message and "beyond the header's 3 columns" in message


def test_header_names_are_stripped_and_must_be_unique(tmp_path: Path) -> None:
    frame = load_lines(tmp_path, [" timestamp , node_id , power_watts ", "2026-01-05T00:00:00Z,n1,1"])
    assert frame["power_watts"].tolist() == [1.0]
    _, message = load_error(tmp_path, ["timestamp,power_watts,power_watts", "2026-01-05T00:00:00Z,1,2"])
    assert "line 1" in message and "power_watts more than once" in message


def test_negative_watts(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, [HEADER, "2026-01-05T00:00:00Z,n1,1", "2026-01-05T00:01:00Z,n1,-3"])
    assert str(path) in message
    assert "line 3" in message and "power_watts" in message and "negative" in message
    assert "-3" in message and "np.float64" not in message  # the value is shown plainly


def test_non_numeric_value(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, [
        "timestamp,power_watts,temperature",
        "2026-01-05T00:00:00Z,1,40",
        "2026-01-05T00:01:00Z,2,warm",
    ])
    assert str(path) in message
    assert "line 3" in message and "temperature" in message and "'warm'" in message


@pytest.mark.parametrize("value", ["abc", "inf", "-inf", "1,5"])
def test_non_finite_or_non_numeric_target(tmp_path: Path, value: str) -> None:
    cell = f'"{value}"' if "," in value else value
    _, message = load_error(tmp_path, [HEADER, "2026-01-05T00:00:00Z,n1,1", f"2026-01-05T00:01:00Z,n1,{cell}"])
    assert "line 3" in message and "power_watts" in message and "finite" in message


@pytest.mark.parametrize("column", ["cpu_utilization", "memory_usage", "gpu_utilization", "npu_utilization"])
def test_percent_over_100(tmp_path: Path, column: str) -> None:
    path, message = load_error(tmp_path, [
        f"timestamp,power_watts,{column}",
        "2026-01-05T00:00:00Z,1,100",
        "2026-01-05T00:01:00Z,1,100.5",
    ])
    assert str(path) in message
    assert "line 3" in message and column in message and "line 2" not in message


def test_negative_percent_and_absurd_temperature(tmp_path: Path) -> None:
    _, message = load_error(tmp_path, ["timestamp,power_watts,cpu_utilization", "2026-01-05T00:00:00Z,1,-1"])
    assert "line 2" in message and "cpu_utilization" in message
    _, message = load_error(tmp_path, ["timestamp,power_watts,temperature", "2026-01-05T00:00:00Z,1,151"])
    assert "line 2" in message and "temperature" in message


@pytest.mark.parametrize("blank", ["", "  ", "nan", "NaN"])
def test_blank_target(tmp_path: Path, blank: str) -> None:
    path, message = load_error(tmp_path, [
        HEADER,
        "2026-01-05T00:00:00Z,n1,1",
        "2026-01-05T00:01:00Z,n1,2",
        f"2026-01-05T00:02:00Z,n1,{blank}",
    ])
    assert str(path) in message
    assert "line 4" in message and "power_watts" in message and "empty" in message


def test_many_bad_rows_are_summarized(tmp_path: Path) -> None:
    lines = [HEADER] + [f"2026-01-05T00:{m:02d}:00Z,n1,-{m + 1}" for m in range(8)]
    _, message = load_error(tmp_path, lines)
    assert "line 2" in message and "line 6" in message  # the first five are shown
    assert "line 7" not in message
    assert "3 more" in message


def test_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    """The reported line is the physical line of the file, even after a blank line."""
    _, message = load_error(tmp_path, [
        HEADER,
        "2026-01-05T00:00:00Z,n1,1",  # line 2
        "",  # line 3
        "2026-01-05T00:01:00Z,n1,-3",  # line 4
    ])
    assert "line 4" in message, message


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("", encoding="utf-8")
    with pytest.raises(TelemetryDataError) as caught:
        load_telemetry_csv(path)
    assert str(path) in str(caught.value)


def test_header_only_file(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, [HEADER])
    assert str(path) in message and "no rows" in message


def test_nonexistent_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.csv"
    with pytest.raises(TelemetryDataError) as caught:
        load_telemetry_csv(path)
    assert str(path) in str(caught.value) and "no such file" in str(caught.value)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(TelemetryDataError, match="a folder, not a CSV file"):
        load_telemetry_csv(tmp_path)


def test_is_a_value_error() -> None:
    assert issubclass(TelemetryDataError, ValueError)


def test_validate_frame_uses_source_and_first_line() -> None:
    raw = pd.DataFrame({"timestamp": ["2026-01-05T00:00:00Z", "bad"], "power_watts": ["1", "2"]})
    with pytest.raises(TelemetryDataError) as caught:
        validate_telemetry(raw, source="request", first_line=1)
    assert str(caught.value).startswith("request:") and "line 2" in str(caught.value)
    with pytest.raises(TelemetryDataError, match="no rows"):
        validate_telemetry(pd.DataFrame({"timestamp": [], "power_watts": []}))


def test_a_trace_of_relative_times_loads_when_undated(tmp_path: Path) -> None:
    """A replay counts only relative times: a trace shifted to start at 0 (1970) is its legitimate input."""
    path = write_csv(tmp_path, [HEADER, "0,n1,1", "60,n1,2"])
    with pytest.raises(TelemetryDataError, match="milliseconds"):
        load_telemetry_csv(path)
    frame = load_telemetry_csv(path, dated=False)
    assert frame["timestamp"].tolist() == [pd.Timestamp(0, tz="UTC"), pd.Timestamp(60, unit="s", tz="UTC")]
    later = write_csv(tmp_path, [HEADER, "10000000,n1,1"], name="day-116.csv")  # 8 digits: seconds here, not a date
    assert load_telemetry_csv(later, dated=False)["timestamp"].tolist() == [pd.Timestamp(10_000_000, unit="s",
                                                                                          tz="UTC")]


def test_a_trailing_comma_on_a_later_row_only_is_trimmed(tmp_path: Path) -> None:
    frame = load_lines(tmp_path, [HEADER, "2026-01-05T00:00:00Z,n1,1", "2026-01-05T00:01:00Z,n1,2,"])
    assert frame["power_watts"].tolist() == [1.0, 2.0]


def test_blank_lines_before_the_header_keep_the_line_numbers(tmp_path: Path) -> None:
    """pandas took the first blank line for the header: the file had no columns."""
    _, message = load_error(tmp_path, ["", "", HEADER, "2026-01-05T00:00:00Z,n1,1", "2026-01-05T00:01:00Z,n1,-2"])
    assert "negative watts: line 5:" in message


def test_regression_node_ids_a_telemetry_sample_refuses_are_refused_with_their_lines(tmp_path: Path) -> None:
    """A replayed row with such an id raised in every round of the replay and stopped it for good."""
    long = "n" * 254
    lines = [HEADER, "2026-01-05T00:00:00Z,ok,5", "2026-01-05T00:00:00Z,b\\x,6", f"2026-01-05T00:00:00Z,{long},7"]
    assert sorted(load_lines(tmp_path, lines)["node_id"]) == ["b\\x", long, "ok"]  # a training file may hold any
    with pytest.raises(TelemetryDataError) as caught:
        load_telemetry_csv(write_csv(tmp_path, lines), as_samples=True)
    message = str(caught.value)
    assert message.endswith("node_id must be at most 253 characters, without a control character or a backslash: "
                            "line 3: node_id='b\\\\x'; line 4: node_id='" + "n" * 59 + "... (254 characters)")
    fits = load_telemetry_csv(write_csv(tmp_path, [HEADER, f"2026-01-05T00:00:00Z,{long[:253]},5"]), as_samples=True)
    assert fits["node_id"].tolist() == [long[:253]]


@pytest.mark.parametrize("extra", [",", ",1"])
def test_a_huge_field_in_a_row_longer_than_the_header_is_a_clear_error(tmp_path: Path, extra: str) -> None:
    """Regression (review): the check for values beyond the header ran into the csv module's field size limit and
    ended train_lstm, preprocess and evaluate with a traceback (`_csv.Error`)."""
    path, message = load_error(tmp_path, [HEADER, f"2026-01-05T00:00:00Z,{'n' * 140_000},1{extra}"])
    assert str(path) in message and "line 2" in message and "field larger than field limit" in message
