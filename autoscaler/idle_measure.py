"""The controller's measured idle draws (`power_based.measure_idle_power`): each node's idle draw read from the store's
telemetry as `python -m autoscaler.idle_draw` reads it, kept for a while, and the value a policy decides with.

A node is measured over the last `MEASURED_SPAN_S` at `MEASURED_STEP_S` bins (a bin is idle when its mean
utilization is), again after `REFRESH_S`. A tick reads at most `MAX_READS_PER_TICK` nodes and for at most
`READ_BUDGET_S`, so a large fleet's first measurements spread over a few ticks instead of holding one up; after a
failed read no node is read for `RETRY_S` (a store that fails answers slowly, and the tick must not wait on it node
after node). The value measured before stays meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from autoscaler.idle_draw import node_idle_draw
from autoscaler.schema import ScalingPolicy
from core.public_text import error_text
from core.stores.base import TelemetryStore

logger = logging.getLogger(__name__)

MEASURED_SPAN_S = 7 * 86400
MEASURED_STEP_S = 300
REFRESH_S = 6 * 3600
RETRY_S = 300
MAX_READS_PER_TICK = 8
READ_BUDGET_S = 2.0


@dataclass(frozen=True)
class _Measured:
    watts: float | None
    at: datetime  # when it was measured
    why_none: str = ""  # why `watts` is None: what the node's telemetry lacks


class MeasuredIdleDraws:
    """Per node, its idle draw as last measured; per policy, the value to decide with and what its event says."""

    def __init__(self, store: TelemetryStore, monotonic: Callable[[], float] = time.monotonic):
        self.store, self._monotonic = store, monotonic
        self._nodes: dict[str, _Measured] = {}
        self._paused_until: datetime | None = None  # no read before then: the last one failed
        self._problem: str | None = None  # why the last read failed
        self._reads_left, self._deadline = 0, 0.0

    def start_tick(self, nodes: Iterable[str]) -> None:
        """A new tick's read allowance; what is kept of nodes no policy measures any more is dropped."""
        keep = set(nodes)
        self._nodes = {node: entry for node, entry in self._nodes.items() if node in keep}
        self._reads_left, self._deadline = MAX_READS_PER_TICK, self._monotonic() + READ_BUDGET_S

    def for_policy(self, policy: ScalingPolicy, nodes: Sequence[str], now: datetime) -> tuple[float | None, str]:
        """The idle draw `policy` decides with on `nodes` (None: its configured `idle_power_watts` stands) and what
        its event says of it."""
        for node in nodes:
            if self._may_read(now) and self._due(node, now):
                self._measure(node, now)
        measured = {node: self._nodes[node].watts for node in nodes
                    if node in self._nodes and self._nodes[node].watts is not None}
        power = policy.power_based
        standing = (f"idle_power_watts {power.idle_power_watts:g} W stands" if power.idle_power_watts is not None
                    else "every watt counts as load")
        if not measured:
            return None, f"no idle draw measured for the target's nodes: {self._why_none(nodes)}; {standing}"
        node, lowest = min(measured.items(), key=lambda item: item[1])
        threshold = power.max_power_budget * power.scale_out_threshold / 100.0
        if lowest / power.max_power_budget * 100.0 >= power.scale_out_threshold:  # as the field's own check
            return None, (f"the idle draw measured on {node}, {lowest:g} W, is at or above the scale-out threshold's "
                          f"{threshold:g} W: not used; {standing}")
        floor = ("; at or above the scale-in threshold: these nodes never draw less, so power alone never consolidates "
                 "them" if 0 < power.scale_in_threshold <= lowest / power.max_power_budget * 100.0 else "")
        return lowest, (f"idle draw {lowest:g} W measured on {node} (the lowest of {len(measured)} node(s) "
                        f"measured){floor}")

    def _why_none(self, nodes: Sequence[str]) -> str:
        unmeasured = [node for node in nodes if node not in self._nodes]
        if unmeasured:
            failing = f" (reading telemetry failed: {self._problem})" if self._problem else ""
            return f"{len(unmeasured)} of {len(nodes)} not measured yet{failing}"
        reasons = sorted({self._nodes[node].why_none for node in nodes})
        return "; ".join(reasons)

    def _may_read(self, now: datetime) -> bool:
        if self._paused_until is not None and now < self._paused_until:
            return False
        return self._reads_left > 0 and self._monotonic() < self._deadline

    def _due(self, node: str, now: datetime) -> bool:
        entry = self._nodes.get(node)
        return entry is None or not entry.at <= now < entry.at + timedelta(seconds=REFRESH_S)  # a clock set back too

    def _measure(self, node: str, now: datetime) -> None:
        self._reads_left -= 1
        try:
            rows = self.store.window(node, now - timedelta(seconds=MEASURED_SPAN_S), now, MEASURED_STEP_S)
        except Exception as exc:  # noqa: BLE001 - the values before stay; the events say why
            self._problem = error_text(exc)
            self._paused_until = now + timedelta(seconds=RETRY_S)
            logger.warning("scaling controller: reading node %s's telemetry for its idle draw failed: %s", node,
                           self._problem)
            return
        self._problem, self._paused_until = None, None
        rows = rows.dropna(subset=["power_watts"])
        found = node_idle_draw(node, rows) if len(rows) else None
        if found is None:
            why = "no power readings in the last 7 days"
        elif found.basis == "none":
            why = "their telemetry reports no utilization"
        else:
            why = "none was idle for 10 five-minute bins in the last 7 days"
        self._nodes[node] = _Measured(found.idle_watts if found else None, now, why)
