"""Read and validate the canonical telemetry CSV (docs/architecture.md, contracts).

The loader is strict about what it cannot repair (no target column, unparsable times, negative watts,
percentages out of range) and lenient about what it can (missing optional columns, extra columns,
unsorted rows, several rows of one node and time: averaged, as samples of one bin are, and logged). Every refusal
names the file, the line and the reason.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from core.csv_text import CsvShapeError, read_text_csv
from core.telemetry import ID_PATTERN, MAX_ID_CHARS

MAX_TRACE_WATTS = 1e7  # 10 MW: above any node or workload; larger is a unit or sentinel error
TARGET = "power_watts"
PERCENT_FEATURES = ("cpu_utilization", "memory_usage", "gpu_utilization", "npu_utilization")
NUMERIC_FEATURES = (*PERCENT_FEATURES, "temperature")
CATEGORICAL_FEATURES = ("workload_type",)
OPTIONAL_FEATURES = (*NUMERIC_FEATURES, *CATEGORICAL_FEATURES)
CANONICAL_COLUMNS = ("timestamp", "node_id", TARGET, *OPTIONAL_FEATURES)
DEFAULT_SERIES = "default"
_MAX_REPORTED = 5
_TEMPERATURE_RANGE = (-50.0, 150.0)
# Times outside these years are a unit error (milliseconds read as seconds, a compact date read as seconds) or a
# sentinel; they would also make every step between them and the real data a bin to resample
DATED = (pd.Timestamp("2000-01-01", tz="UTC"), pd.Timestamp("2100-01-01", tz="UTC"))
# What a trace of relative times (a replay's, starting at 0) may hold: what pandas' nanosecond times can
ANY_TIME = (pd.Timestamp("1678-01-01", tz="UTC"), pd.Timestamp("2262-01-01", tz="UTC"))

logger = logging.getLogger(__name__)


class TelemetryDataError(ValueError):
    """A telemetry file or frame that cannot be used; the message says where and why."""


def load_telemetry_csv(path: str | Path, *, dated: bool = True, as_samples: bool = False) -> pd.DataFrame:
    """Load a canonical telemetry CSV into a validated frame (see `validate_telemetry`); `dated=False` for a trace
    whose times only count relative to each other (a replay), which may start at 0; `as_samples` for rows that
    become telemetry samples (a replay): their node ids must be ones a sample takes."""
    path = Path(path)
    if not path.is_file():
        raise TelemetryDataError(f"{path}: {'a folder, not a CSV file' if path.is_dir() else 'no such file'}")
    try:
        raw = read_text_csv(path)
    except CsvShapeError as exc:
        raise TelemetryDataError(str(exc)) from exc
    blank = (raw.fillna("").astype(str).apply(lambda column: column.str.strip()) == "").all(axis=1)
    return validate_telemetry(raw[~blank], source=str(path), first_line=2, dated=dated, as_samples=as_samples)


def validate_telemetry(raw: pd.DataFrame, *, source: str = "<frame>", first_line: int = 1,
                       dated: bool = True, as_samples: bool = False) -> pd.DataFrame:
    """Check and normalize a frame in the canonical schema.

    Args:
        raw: rows with at least `timestamp` and `power_watts`; values may be strings.
        source: name used in error messages (a file path, "request", ...).
        first_line: line number of the row labelled 0 in the index, for messages (2 for a CSV with a
            header); the index keeps counting lines when blank rows were dropped.
        dated: times must lie in 2000..2099 (else a unit error such as milliseconds, or a sentinel); False takes
            any time pandas can hold (a replay's relative times).
        as_samples: the rows become telemetry samples (a replay): node ids must be ones a sample takes (no control
            character or backslash, at most 253 characters); a training file may hold any.

    Returns:
        A frame with every canonical column, sorted by node and time, one row per (node, timestamp) (rows
        sharing one are averaged, their first known workload kept): `timestamp` as UTC datetimes, numeric
        features as float (NaN where unknown), `node_id` and `workload_type` as strings (`workload_type` NaN where
        unknown). Extra columns are dropped.
    """
    missing = [c for c in ("timestamp", TARGET) if c not in raw.columns]
    if missing:
        raise TelemetryDataError(f"{source}: required column(s) {', '.join(missing)} missing")
    if raw.empty:
        raise TelemetryDataError(f"{source}: no rows")
    lines = pd.Series(np.asarray(raw.index) + first_line, index=raw.index)
    frame = pd.DataFrame(index=raw.index)
    frame["timestamp"] = _parse_timestamps(raw["timestamp"], lines, source, DATED if dated else ANY_TIME)
    node = raw["node_id"].astype(str).str.strip() if "node_id" in raw.columns else None
    frame["node_id"] = node.where(node != "", DEFAULT_SERIES) if node is not None else DEFAULT_SERIES
    if node is not None and as_samples:  # the ids a telemetry sample takes (a replayed row would fail there)
        ids = frame["node_id"]
        _refuse(~ids.str.fullmatch(ID_PATTERN.strip("^$")) | (ids.str.len() > MAX_ID_CHARS), lines, ids, source,
                "node_id", f"must be at most {MAX_ID_CHARS} characters, without a control character or a backslash")
    frame[TARGET] = _parse_numbers(raw[TARGET], TARGET, lines, source, required=True)
    _check_range(frame[TARGET], TARGET, lines, source, low=0.0, high=None, why="negative watts")
    _check_range(frame[TARGET], TARGET, lines, source, low=-np.inf, high=MAX_TRACE_WATTS,
                 why="above 10 MW (a unit or sentinel error)")
    for column in NUMERIC_FEATURES:
        values = raw[column] if column in raw.columns else pd.Series(np.nan, index=raw.index)
        frame[column] = _parse_numbers(values, column, lines, source, required=False)
        low, high = (0.0, 100.0) if column in PERCENT_FEATURES else _TEMPERATURE_RANGE
        _check_range(frame[column], column, lines, source, low=low, high=high, why=f"outside {low:g}..{high:g}")
    if "workload_type" in raw.columns:
        workload = raw["workload_type"].astype(str).str.strip().str.lower()
        frame["workload_type"] = workload.where(workload != "", np.nan)
    else:
        frame["workload_type"] = np.nan
    frame = _merge_same_instant(frame.sort_values(["node_id", "timestamp"], kind="stable"), lines, source)
    return frame.reset_index(drop=True)[list(CANONICAL_COLUMNS)]


def _merge_same_instant(frame: pd.DataFrame, lines: pd.Series, source: str) -> pd.DataFrame:
    """One row per (node, timestamp): rows sharing one (an export written twice, sub-second samples rounded to the
    second) become their mean, as samples of one bin do when resampled, and the first known workload; logged with
    the first such line, since two different values of one instant may also mean two sources writing one node."""
    shared = frame.duplicated(["node_id", "timestamp"], keep=False)
    if not shared.any():
        return frame
    rows = frame[shared]
    merged = rows.groupby(["node_id", "timestamp"], sort=False).agg(
        {TARGET: "mean", **dict.fromkeys(NUMERIC_FEATURES, "mean"), **dict.fromkeys(CATEGORICAL_FEATURES, "first")}
    ).reset_index()
    differing = rows.groupby(["node_id", "timestamp"], sort=False)[TARGET].nunique().gt(1).sum()
    logger.warning("%s: %d rows share a node and time with another row (first at line %d; %d instants with different "
                   "power): each instant's rows were averaged", source, len(rows), int(lines[rows.index].min()),
                   differing)
    return pd.concat([frame[~shared], merged]).sort_values(["node_id", "timestamp"], kind="stable")


def _parse_timestamps(values: pd.Series, lines: pd.Series, source: str,
                      bounds: tuple[pd.Timestamp, pd.Timestamp]) -> pd.Series:
    earliest, latest = bounds
    years = f"{earliest.year}..{latest.year - 1}"
    text = values.astype(str).str.strip()
    as_number = pd.to_numeric(text, errors="coerce")
    numeric = as_number.notna()
    if bounds == DATED:  # 20240101 is a compact ISO date, not seconds (which would be 1970); relative seconds are
        numeric &= ~text.str.fullmatch(r"\d{8}")  # 8 digits from day 116 on
    seconds = as_number.where(numeric)
    _refuse(numeric & ~seconds.between(earliest.timestamp(), latest.timestamp(), inclusive="left"), lines, text,
            source, "timestamp", f"as Unix seconds outside {years} (milliseconds?)")
    parsed = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    if numeric.any():
        parsed[numeric] = pd.to_datetime(seconds[numeric], unit="s", utc=True)
    if (~numeric).any():
        written = pd.to_datetime(text[~numeric], utc=True, errors="coerce", format="ISO8601")
        _refuse(written.notna() & ((written < earliest) | (written >= latest)), lines, text, source, "timestamp",
                f"outside the years {years}")
        parsed[~numeric] = written
    _refuse(parsed.isna(), lines, text, source, "timestamp", "not an ISO 8601 time or Unix seconds")
    return parsed


def _parse_numbers(values: pd.Series, column: str, lines: pd.Series, source: str, *, required: bool) -> pd.Series:
    text = values if pd.api.types.is_numeric_dtype(values) else values.astype(str).str.strip()
    blank = text.isna() | (text.astype(str) == "") | (text.astype(str).str.lower() == "nan")
    numbers = pd.to_numeric(text.where(~blank), errors="coerce").astype(float)
    bad = ~blank & (numbers.isna() | ~np.isfinite(numbers.fillna(0.0)))
    _refuse(bad, lines, text, source, column, "not a finite number")
    if required:
        _refuse(blank, lines, text, source, column, "empty, but the target is required on every row")
    return numbers


def _check_range(values: pd.Series, column: str, lines: pd.Series, source: str, *,
                 low: float, high: float | None, why: str) -> None:
    bad = values < low
    if high is not None:
        bad |= values > high
    _refuse(bad.fillna(False), lines, values.astype(str), source, column, why)


def _clipped(value: object, limit: int = 60) -> str:
    """A value as an error shows it: its repr, a long one cut (a 10,000-character id is not worth repeating)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(str(value))} characters)"


def _refuse(bad: pd.Series, lines: pd.Series, values: pd.Series, source: str, column: str, why: str) -> None:
    if not bad.any():
        return
    shown = [f"line {lines[i]}: {column}={_clipped(values[i])}" for i in bad[bad].index[:_MAX_REPORTED]]
    more = int(bad.sum()) - len(shown)
    suffix = f" (and {more} more)" if more > 0 else ""
    raise TelemetryDataError(f"{source}: {column} {why}: " + "; ".join(shown) + suffix)
