"""A node's recent telemetry from the store as a forecaster input (used by the API and the controller), and a
client's short history completed from it (`fill_from_store`).

The window ends at the node's newest stored sample, covers the model's sequence length at its step, and is
sample-and-hold filled over gaps (never from later samples), so a forecast from stored telemetry sees what
a forecast from a client's history list would. A feature other than power is held for at most the model's
`max_gap` (`FeaturePipeline.max_gap_s`; for a model saved without it, the default: 5 steps, at least 5 minutes),
as training filled it; after that it is missing (NaN, which the model reads as missing, as in training), so a
feature whose source stopped is not read as fresh.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from core.forecasts import PowerHistory, last_value_time
from core.stores.base import NodeLatest, TelemetryStore
from core.telemetry_csv import NUMERIC_FEATURES
from training.settings import default_max_gap


class NoStoredTelemetry(LookupError):
    """The store has no recent power readings for the node; the message says which."""


class UnknownNode(NoStoredTelemetry):
    """The store has never seen the node."""


class PowerStopped(NoStoredTelemetry):
    """The store knows the node, but has had no power reading from it for longer than `latest` looks back."""


@dataclass(frozen=True)
class StoredHistory:
    history: PowerHistory
    age_s: float  # seconds since the newest power reading in the window
    newest: datetime  # that reading's time (or, were the last bin empty, the start of the newest bin with power)
    measured: tuple[bool, ...] = ()  # per power bin of the history: measured (False: held over a gap); (): unknown


def stored_history(store: TelemetryStore, node_id: str, *, step_s: int, sequence_length: int, horizon_s: int,
                   workload_type: str | None = None, now: datetime | None = None,
                   latest: NodeLatest | None = None, until: datetime | None = None,
                   tell_stopped: bool = False, max_gap_s: int | None = None) -> StoredHistory:
    """The forecaster input for `node_id` ending at its newest stored sample (`latest`, read when not given), or at
    the bin of `until` when that is earlier (the nodes of a workload, summed lead by lead, end at one bin).
    `tell_stopped`: tell a known node whose power stopped from an unknown one (one more store read, on that error
    path only: the API, which answers them differently). `max_gap_s`: how long training held a missing feature
    (None: `training.settings.default_max_gap`).

    Raises:
        UnknownNode: nothing stored for the node (or no recent power, without `tell_stopped`).
        PowerStopped: with `tell_stopped`, a known node without recent power.
        NoStoredTelemetry: no power in its latest window.
        StoreUnavailable: the store could not be read.
    """
    if latest is None:
        found = store.latest(node_id)
        if not found:
            if tell_stopped and node_id in store.nodes():  # a failure there is the store's: not an unknown node
                raise PowerStopped(f"no recent power telemetry stored for node {node_id!r} (its power readings "
                                   "stopped)")
            raise UnknownNode(f"no telemetry stored for node {node_id!r}")
        latest = found[0]
    current = now or datetime.now(UTC)
    newest_time = min(latest.timestamp, current)  # a node whose clock runs ahead has not reported the future
    newest_time = min(newest_time, until) if until is not None else newest_time
    newest = newest_time.timestamp()
    end = datetime.fromtimestamp(newest - newest % step_s + step_s, UTC)
    window = store.window(node_id, end - timedelta(seconds=step_s * sequence_length), end, step_s)
    history, measured, newest_bin = _window_history(window, node_id, step_s=step_s, horizon_s=horizon_s,
                                                    workload_type=workload_type, max_gap_s=max_gap_s)
    # the newest reading is `latest` (or `until`), in the window's last bin; were that bin empty, the newest bin
    # with power starts no later than its reading (an age that errs old, never fresh)
    newest_reading = newest_time if newest_bin == history.end_time else newest_bin
    return StoredHistory(history, max(0.0, (current - newest_reading).total_seconds()), newest_reading, measured)


def past_windows(store: TelemetryStore, node_id: str, current: StoredHistory, *, sequence_length: int, count: int,
                 since: datetime, max_gap_s: int | None = None, horizon_s: int | None = None) -> list[StoredHistory]:
    """The node's windows that ended at each of the `count` bins before `current`'s newest, oldest first, as
    `stored_history` would have read them just as that bin closed: those whose newest bin starts at or after `since`
    (none: no store read; else one), and that hold power. Each asks for `horizon_s` (default: `current`'s).

    Raises:
        StoreUnavailable: the store could not be read.
    """
    history = current.history
    step_s, last = history.step_s, history.end_time
    if step_s is None or last is None:
        return []
    step = timedelta(seconds=step_s)
    first = last - step * min(count, (last - since) // step)  # the oldest window's newest bin
    if first >= last:
        return []
    window = store.window(node_id, first - step * (sequence_length - 1), last, step_s)
    windows = []
    for stop in range(sequence_length, len(window) + 1):
        part = window.iloc[stop - sequence_length:stop]
        try:
            past, measured, newest_bin = _window_history(part, node_id, step_s=step_s,
                                                         horizon_s=horizon_s or history.horizon_s,
                                                         workload_type=history.workload_type, max_gap_s=max_gap_s)
        except NoStoredTelemetry:
            continue
        age = (past.end_time + step - newest_bin).total_seconds()
        windows.append(StoredHistory(past, age, newest_bin, measured))
    return windows


def _window_history(window: pd.DataFrame, node_id: str, *, step_s: int, horizon_s: int, workload_type: str | None,
                    max_gap_s: int | None) -> tuple[PowerHistory, tuple[bool, ...], datetime]:
    """A store window's forecaster input: the history (from its first power reading after the last gap longer than
    `max_gap`, where training splits a series; held over the shorter gaps), which of its power bins were measured,
    and the start of its newest bin with power. Raises NoStoredTelemetry without power."""
    power = window["power_watts"].to_numpy(dtype=float)
    observed = np.flatnonzero(~np.isnan(power))
    if observed.size == 0:
        raise NoStoredTelemetry(f"no recent power telemetry stored for node {node_id!r}")
    hold_steps = (max_gap_s or default_max_gap(step_s)) // step_s
    outages = np.flatnonzero(np.diff(observed) - 1 > hold_steps)  # a level held across one was never trained on
    first = observed[outages[-1] + 1] if outages.size else observed[0]
    numeric = {}
    for name in NUMERIC_FEATURES:
        values = window[name].to_numpy(dtype=float)[first:]
        seen = np.flatnonzero(~np.isnan(values))
        if seen.size:  # from its first reading on: a shorter list, missing before it like a client's
            numeric[name] = tuple(_hold(values[seen[0]:], hold_steps).tolist())
    times = window["timestamp"]
    history = PowerHistory(power_watts=tuple(_hold(power[first:]).tolist()), numeric=numeric,
                           workload_type=workload_type, end_time=times.iloc[-1].to_pydatetime(), horizon_s=horizon_s,
                           step_s=step_s, filled_steps=int(np.isnan(power[first:]).sum()))
    return history, tuple((~np.isnan(power[first:])).tolist()), times.iloc[observed[-1]].to_pydatetime()


def fill_from_store(store: TelemetryStore, node_id: str, history: PowerHistory, *, step_s: int, sequence_length: int,
                    max_gap_s: int | None = None) -> tuple[PowerHistory, int]:
    """A client's power history shorter than the model's window, completed at the front with the node's stored
    telemetry: the power list, and each feature list the client gave, get the stored steps before their own first
    value, from the node's first stored power reading in the window on (held over gaps as in `stored_history`).
    Only stored power that reaches the client's first value within the model's `max_gap` is taken (a node whose
    readings stopped long before is not held up to the client's values), and only after the last gap longer than
    that (where training splits a series). Lists the client did not give stay
    absent. Returns the history and how many power steps came from the store (0: it was long enough, or nothing
    stored reaches it).

    Raises:
        StoreUnavailable: the store could not be read.
    """
    given = len(history.power_watts)
    if not 0 < given < sequence_length:
        return history, 0
    end_time = last_value_time(history, step_s)
    last = end_time.timestamp()
    window_end = datetime.fromtimestamp(last - last % step_s + step_s, UTC)  # just after the bin of the last value
    window = store.window(node_id, window_end - timedelta(seconds=step_s * sequence_length), window_end, step_s)
    power = window["power_watts"].to_numpy(dtype=float)[:sequence_length - given]
    observed = np.flatnonzero(~np.isnan(power))
    hold_steps = (max_gap_s or default_max_gap(step_s)) // step_s
    if observed.size == 0 or power.size - 1 - observed[-1] > hold_steps:
        return history, 0
    splits = np.flatnonzero(np.diff(observed) - 1 > hold_steps)  # gaps training would have split the series at
    first = observed[splits[-1] + 1] if splits.size else observed[0]
    prefix = power[first:]
    numeric = {}
    for name, values in history.numeric.items():
        stored = window[name].to_numpy(dtype=float)[first:max(first, sequence_length - len(values))]
        numeric[name] = (*_hold(stored, hold_steps).tolist(), *values) if len(values) < sequence_length else values
    filled = history.model_copy(update={
        "power_watts": (*_hold(prefix).tolist(), *history.power_watts), "numeric": numeric, "end_time": end_time,
        "filled_steps": history.filled_steps + int(np.isnan(prefix).sum())})
    return filled, int(prefix.size)


def _hold(values: np.ndarray, limit: int | None = None) -> np.ndarray:
    """Sample and hold: each NaN takes the last value before it, for at most `limit` steps (None: any number);
    leading NaNs, and those past the limit, stay NaN."""
    steps = np.arange(values.size)
    last = np.maximum.accumulate(np.where(np.isnan(values), 0, steps))
    held = values[last]
    if limit is not None:
        held = np.where(steps - last <= limit, held, np.nan)
    return held
