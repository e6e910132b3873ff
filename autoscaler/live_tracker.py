"""The controller's side of live accuracy: it records each tick's forecasts, scores those whose actuals arrived and
says which nodes' forecasts have stopped being trusted (the maths: autoscaler/live_accuracy.py).

Actuals come from the telemetry store, read once per tick per node (and model step) over the span of that node's
matured leads only (leads whose bin ended before the node's newest reading), so the reads stay bounded by the
window and the horizon. A failed read is logged and its leads wait for the next tick. Thread-safe: the actor's
tick thread records and scores while its API calls read the report.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime

import pandas as pd

from autoscaler.live_accuracy import LiveAccuracyReport, LiveLedger
from autoscaler.read_order import FailedLast
from autoscaler.settings import LiveAccuracyConfig
from core.forecasts import PowerForecast
from core.stores.base import NodeLatest, StoreUnavailable, TelemetryStore
from core.stores.window import judged_window

logger = logging.getLogger(__name__)


class LiveTracker:
    """A `LiveLedger` fed by the controller's forecasts and the store's readings."""

    def __init__(self, store: TelemetryStore, config: LiveAccuracyConfig | None = None):
        self.store = store
        self.ledger = LiveLedger(config)
        self._lock = threading.Lock()
        self._failed = FailedLast()  # nodes whose actuals the store failed to give at the last try

    def record(self, nodes: Sequence[str], results: Sequence[PowerForecast | Exception]) -> None:
        """One policy's forecasts, one per node (failed ones are skipped); never raises."""
        with self._lock:
            for node, result in zip(nodes, results, strict=True):
                if isinstance(result, PowerForecast):
                    try:
                        self.ledger.record(node, result)
                    except Exception:  # noqa: BLE001 - bookkeeping never stops a tick; this forecast goes unscored
                        logger.exception("scaling controller: forecast of node %s not kept for scoring", node)

    def score(self, latest: Mapping[str, NodeLatest], now: datetime) -> int:
        """Score every lead whose bin is complete (`latest`: each node's newest reading); never raises.
        Returns how many points were scored. A store that fails a read (StoreUnavailable: down, or past its timeout)
        is read no more this tick: each further read would cost the tick its timeout again, before any decision.
        The nodes it failed on are read last at the next tick (autoscaler.read_order), so one node the store always
        fails never keeps the others unscored."""
        with self._lock:
            self.ledger.expire(now)
            reads = self.ledger.due({node: found.timestamp for node, found in latest.items()})
        self._failed.retain({read.node for read in reads})
        reads = self._failed.ordered(reads, lambda read: (read.node,))
        scored = 0
        for read in reads:
            try:
                frame = judged_window(self.store, read.node, read.start, read.end, read.step_s)
                actuals = {pd.Timestamp(at).to_pydatetime(): float(watts)
                           for at, watts in zip(frame["timestamp"], frame["power_watts"], strict=True)}
            except Exception as exc:  # noqa: BLE001 - scoring never stops a tick; the leads wait for the next one
                logger.warning("scaling controller: actuals of node %s unreadable, scoring later: %s", read.node, exc)
                self._failed.failed(read.node)
                if isinstance(exc, StoreUnavailable):
                    break
                continue
            self._failed.read(read.node)
            with self._lock:
                try:
                    scored += self.ledger.score(read, actuals)
                except Exception:  # noqa: BLE001 - as above; the leads are dropped so that they cannot fail again
                    logger.exception("scaling controller: forecasts of node %s not scored", read.node)
                    self.ledger.drop(read.node, read.step_s)
        return scored

    def collapses(self, nodes: Sequence[str], results: Sequence[PowerForecast | Exception],
                  now: datetime) -> list[str | None]:
        """Per forecast, why it must not be acted on (its node's live coverage collapsed), or None (a failed one
        too). Every node is judged, so each one's fall and recovery is noted when it happens."""
        with self._lock:
            return [self.ledger.collapse(result.model_version, node, now) if isinstance(result, PowerForecast)
                    else None for node, result in zip(nodes, results, strict=True)]

    def fallen(self) -> dict[tuple[str, str], datetime]:
        """(model version, node) -> since when its forecasts are not trusted."""
        with self._lock:
            return dict(self.ledger.fallen)

    def restore(self, fallen: Mapping[tuple[str, str], datetime], under_own: bool = False) -> None:
        """Distrust again what a controller before this one did (its state file's `fallen`), instead of what this
        one did, or (`under_own`: read late) besides it."""
        with self._lock:
            self.ledger.fallen = {**fallen, **self.ledger.fallen} if under_own else dict(fallen)

    def report(self, now: datetime) -> LiveAccuracyReport:
        with self._lock:
            return self.ledger.report(now)
