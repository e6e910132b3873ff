"""ReplaySource: plays a canonical telemetry CSV as live samples, in real time or `speed` times faster.

Row times are shifted so the first row happens at the first `sample()` call; each call returns the rows whose
time has come since the previous call, stamped with the (sped-up) wall time at which they happened. With `loop`
the trace starts again one step after its last row; without it the source reports itself finished. With
`backfill`, the first calls first return one whole cycle of the trace as the recent past, ending when the live
replay begins: a fresh store then holds the history a forecast or a scheduled retrain needs. With both, cycles start
at whole multiples of the cycle's length since the epoch, the live replay catching up from the start of the current
one: a replay started again (`make run` again, a collector replaced) writes the very rows the one before wrote at
each time, never another part of the trace over them or between them. With `align_nodes`,
every node's series starts with the replay: runs recorded on different days (as in the shipped sample) play as
nodes that run together, instead of one node at a time.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from collectors.base import TelemetrySource
from core.stores.window import replay_samples
from core.telemetry import SourceKind, TelemetrySample
from core.telemetry_csv import TelemetryDataError, load_telemetry_csv

logger = logging.getLogger(__name__)


STORE_RESOLUTION_S = 0.001  # samples of a node, source and device are one per millisecond in a store


def _shortest_step(seconds: np.ndarray, nodes: list[str]) -> float:
    """The shortest time between two rows of one node (infinite when no node has two): rows of different nodes never
    share a store key."""
    rows = pd.DataFrame({"node": nodes, "at": seconds}).drop_duplicates().sort_values(["node", "at"])
    steps = rows.groupby("node")["at"].diff().dropna()
    return float(steps.min()) if len(steps) else math.inf


class ReplaySource(TelemetrySource):
    """A recorded trace replayed as this node's (or the trace's nodes') telemetry.

    Args:
        path: canonical telemetry CSV (docs/architecture.md, contracts).
        node_id: name for the trace's rows when it holds a single series (its own node ids are kept otherwise).
        speed: how many seconds of the trace pass per wall-clock second.
        loop: start again after the last row instead of finishing.
        clock: wall-clock seconds since the epoch (time.time); tests pass a fake.
        max_rows_per_call: cap on the rows one call returns (a very high speed cannot flood the caller).
        backfill: before the live replay, the trace's whole cycle as the past that ends at the first call.
        align_nodes: shift each node's series to start when the first one does (the cycle is the longest series).

    Each row becomes the replay samples of `core.stores.window.replay_samples` (device "node" with
    power, memory and temperature; devices "cpu"/"gpu"/"npu" with the matching utilization), so a store
    rebuilds the canonical row from them.
    """

    kind = SourceKind.REPLAY

    def __init__(self, path: str | Path, *, node_id: str | None = None, speed: float = 1.0, loop: bool = False,
                 clock: Callable[[], float] = time.time, max_rows_per_call: int = 100_000,
                 backfill: bool = False, align_nodes: bool = False) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.path = Path(path)
        self.label = f"replay ({self.path.name})"
        self.speed, self.loop, self._clock, self._cap = speed, loop, clock, max_rows_per_call
        self._error = ""
        self._start: float | None = None
        self._cursor, self._cycle, self._done = 0, 0, False
        self._backfill_cursor: int | None = 0 if backfill else None  # the next past row; None: done or off
        self._rows = 0
        try:
            frame = load_telemetry_csv(self.path, dated=False, as_samples=True)  # only relative times count
        except TelemetryDataError as exc:
            self._error = f"cannot replay {self.path}: {exc}"
            return
        if align_nodes:
            first = frame.groupby("node_id")["timestamp"].transform("min")
            frame = frame.assign(timestamp=frame["timestamp"] - first + frame["timestamp"].min())
        frame = frame.sort_values(["timestamp", "node_id"], kind="stable").reset_index(drop=True)
        nodes = frame["node_id"].astype(str).tolist()
        if node_id and len(set(nodes)) == 1:
            nodes = [node_id] * len(nodes)
        elif node_id:
            logger.info("%s holds %d series; keeping their node ids", self.path, len(set(nodes)))
        self._nodes = nodes
        seconds = (frame["timestamp"] - frame["timestamp"].iloc[0]).dt.total_seconds().to_numpy()
        self._offsets = seconds
        self._records = frame[["power_watts", "memory_usage", "temperature", "cpu_utilization",
                               "gpu_utilization", "npu_utilization"]].to_dict("records")
        self._rows = len(frame)
        steps = np.diff(np.unique(seconds))
        self._period = float(seconds[-1]) + (float(np.median(steps)) if steps.size else 1.0)
        shortest = _shortest_step(seconds, nodes)
        if shortest / speed < STORE_RESOLUTION_S:  # a store keys a node's samples by the millisecond
            most = math.floor(shortest / STORE_RESOLUTION_S * 1000) / 1000  # rounded down: itself allowed
            self._error = (f"cannot replay {self.path} at speed {speed:g}: its shortest step, {shortest:g} s, "
                           f"would take under a millisecond and rows would overwrite each other in the store; "
                           f"at most speed {most:g}")

    def available(self) -> tuple[bool, str]:
        if self._error:
            return False, self._error
        if self._done:
            return False, f"replay of {self.path} finished after {self._rows} rows"
        return True, ""

    def sample(self) -> list[TelemetrySample]:
        if self._error or self._done:
            return []
        now = self._clock()
        if self._start is None:
            self._start = self._first_start(now)
        if self._backfill_cursor is not None:
            return self._backfill()
        position = (now - self._start) * self.speed  # seconds into the trace
        samples: list[TelemetrySample] = []
        while len(samples) < self._cap:
            at = self._cycle * self._period + self._offsets[self._cursor]
            if at > position:
                break
            when = datetime.fromtimestamp(self._start + at / self.speed, UTC)
            samples.extend(replay_samples(when, self._nodes[self._cursor], self._records[self._cursor]))
            self._cursor += 1
            if self._cursor == self._rows:
                if not self.loop:
                    self._done = True
                    logger.info("replay of %s finished after %d rows", self.path, self._rows)
                    break
                self._cursor, self._cycle = 0, self._cycle + 1
        return samples

    def _first_start(self, now: float) -> float:
        """When the first cycle starts: now; looping with a backfill, at the last whole multiple of the cycle's
        length since the epoch (module docstring)."""
        if not (self.loop and self._backfill_cursor is not None):
            return now
        cycle_s = self._period / self.speed
        return math.floor(now / cycle_s) * cycle_s

    def _backfill(self) -> list[TelemetrySample]:
        """The next rows of the cycle laid out before the live start (one cycle earlier), up to the cap."""
        assert self._start is not None and self._backfill_cursor is not None
        samples: list[TelemetrySample] = []
        cursor = self._backfill_cursor
        while cursor < self._rows and len(samples) < self._cap:
            when = datetime.fromtimestamp(self._start + (self._offsets[cursor] - self._period) / self.speed, UTC)
            samples.extend(replay_samples(when, self._nodes[cursor], self._records[cursor]))
            cursor += 1
        self._backfill_cursor = cursor if cursor < self._rows else None
        if self._backfill_cursor is None:
            logger.info("replay of %s: %d rows backfilled as the past cycle", self.path, self._rows)
        return samples
