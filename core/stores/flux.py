"""Flux for the InfluxDB backend: query text builders and an annotated-CSV result parser. Pure code.

Points are written as measurement `telemetry`, tags node_id/source/device_id, one field per reading
(see core.stores.influx). The builders return queries whose results the parser turns into frames
the window rule (core.stores.window) consumes:

- `window_query`: per series, `aggregateWindow(every: step, fn: mean, timeSrc: "_start")` then `pivot`
  on `_field`, so each row is one device's bin means, labelled by the bin start (bins aligned to the
  epoch, as in the embedded store).
- `latest_query`: each series' last power reading within a look-back.
- `nodes_query`: the distinct `node_id` tag values.

Annotated CSV (https://docs.influxdata.com/influxdb/v2/reference/syntax/annotated-csv/): `#datatype`,
`#group` and `#default` annotation rows, a header row, records; an empty line starts a table with a new
schema; an `error,reference` table reports a failed query.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pandas as pd

from core.stores.base import StoreUnavailable

MEASUREMENT = "telemetry"
TAGS = ("node_id", "source", "device_id")
WINDOW_FIELDS = ("power_watts", "utilization", "memory_usage", "temperature")


class FluxQueryError(StoreUnavailable):
    """InfluxDB reported an error table instead of results (mid-stream too): the store could not answer the read."""

    def __init__(self, message: str, reference: str = "") -> None:
        super().__init__(f"Flux query failed: {message}" + (f" (reference {reference})" if reference else ""))
        self.reference = reference


def flux_string(value: str) -> str:
    """A Flux string literal holding `value` exactly (escapes `\\`, `"`, `${` and control characters)."""
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
               .replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t"))
    return f'"{escaped}"'


def flux_time(moment: datetime) -> str:
    """An RFC 3339 time literal in UTC (microsecond precision)."""
    if moment.tzinfo is None:
        raise ValueError(f"{moment!r} must carry a time zone (UTC)")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _source(bucket: str, start: str, stop: str | None = None) -> str:
    stop_arg = f", stop: {stop}" if stop else ""
    return f"from(bucket: {flux_string(bucket)})\n  |> range(start: {start}{stop_arg})\n"


def _any_of(column: str, values: tuple[str, ...]) -> str:
    return " or ".join(f"r.{column} == {flux_string(v)}" for v in values)


def window_query(bucket: str, node_id: str, start: datetime, end: datetime, step_s: int) -> str:
    """One node's per-device bin means in [start, end): columns _time, source, device_id, WINDOW_FIELDS."""
    keep = ", ".join(flux_string(c) for c in ("_time", "source", "device_id", *WINDOW_FIELDS))
    return (
        _source(bucket, flux_time(start), flux_time(end))
        + f"  |> filter(fn: (r) => r._measurement == {flux_string(MEASUREMENT)}"
        + f" and r.node_id == {flux_string(node_id)})\n"
        + f"  |> filter(fn: (r) => {_any_of('_field', WINDOW_FIELDS)})\n"
        + f'  |> aggregateWindow(every: {int(step_s)}s, fn: mean, createEmpty: false, timeSrc: "_start")\n'
        + '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
        + f"  |> keep(columns: [{keep}])\n"
    )


def latest_query(bucket: str, node_id: str | None = None, lookback_s: int = 3600) -> str:
    """The last power reading of every series (of one node) in the look-back: _time, _value and the tags."""
    node = f" and r.node_id == {flux_string(node_id)}" if node_id is not None else ""
    keep = ", ".join(flux_string(c) for c in ("_time", "_value", *TAGS))
    return (
        _source(bucket, f"-{int(lookback_s)}s")
        + f"  |> filter(fn: (r) => r._measurement == {flux_string(MEASUREMENT)}"
        + f' and r._field == "power_watts"{node})\n'
        + "  |> last()\n"
        + f"  |> keep(columns: [{keep}])\n"
    )


def nodes_query(bucket: str, lookback_s: int) -> str:
    """Distinct node ids seen in the look-back, in `_value`."""
    return (
        'import "influxdata/influxdb/schema"\n\n'
        f"schema.tagValues(bucket: {flux_string(bucket)}, tag: \"node_id\",\n"
        f"  predicate: (r) => r._measurement == {flux_string(MEASUREMENT)}, start: -{int(lookback_s)}s)\n"
    )


def parse_annotated_csv(text: str) -> pd.DataFrame:
    """All tables of an annotated-CSV response as one frame (columns unioned, typed by `#datatype`).

    Raises:
        FluxQueryError: when the response is an error table.
    """
    frames = [_typed(block) for block in _blocks(text)]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True, sort=False) if len(frames) > 1 else frames[0]


def _blocks(text: str) -> list[dict]:
    """Split into tables: {"annotations": {name: [values]}, "header": [...], "rows": [[...]]}."""
    blocks: list[dict] = []
    current: dict = {"annotations": {}, "header": None, "rows": []}
    for row in csv.reader(io.StringIO(text)):
        if not row or all(cell == "" for cell in row):
            if current["header"] is not None:
                blocks.append(current)
            current = {"annotations": {}, "header": None, "rows": []}
        elif row[0].startswith("#"):
            current["annotations"][row[0][1:]] = row[1:]
        elif current["header"] is None:
            current["header"] = row
        else:
            current["rows"].append(row)
    if current["header"] is not None:
        blocks.append(current)
    return blocks


def _typed(block: dict) -> pd.DataFrame:
    header, rows, notes = block["header"], block["rows"], block["annotations"]
    offset = 1 if header and header[0] == "" else 0  # the annotation column, present when annotated
    columns = header[offset:]
    if columns[:2] == ["error", "reference"]:
        first = rows[0][offset:] if rows else ["unknown error", ""]
        raise FluxQueryError(first[0], first[1] if len(first) > 1 else "")
    values = [r[offset:offset + len(columns)] for r in rows]
    frame = pd.DataFrame(values, columns=columns, dtype=object)
    types = notes.get("datatype", [])
    defaults = notes.get("default", [])
    for index, name in enumerate(columns):
        default = defaults[index] if index < len(defaults) else ""
        column = frame[name].where(frame[name] != "", default if default != "" else None)
        kind = types[index] if index < len(types) else "string"
        frame[name] = _convert(column, kind)
    return frame


def _convert(column: pd.Series, kind: str) -> pd.Series:
    if kind in ("double", "long", "unsignedLong"):
        numbers = pd.to_numeric(column, errors="coerce")
        return numbers.astype(float) if kind == "double" or numbers.isna().any() else numbers.astype("int64")
    if kind == "boolean":
        return column.map({"true": True, "false": False})
    if kind.startswith("dateTime"):
        return pd.to_datetime(column, utc=True, format="ISO8601")
    return column
