"""The controller's measured idle draws (`power_based.measure_idle_power`): each node's idle draw read from the store's
telemetry as `python -m autoscaler.idle_draw` reads it, kept for a while, and the value a policy decides with.

A node is measured over the last `MEASURED_SPAN_S` at `MEASURED_STEP_S` bins (an idle bin is one whole bin with
nothing running), again after `REFRESH_S`, and at most `MAX_READS_PER_TICK` nodes a tick, so a large fleet's first
measurements spread over a few ticks instead of holding one up. A store that fails is asked again after `RETRY_S`;
the value measured before stays meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
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


@dataclass(frozen=True)
class _Measured:
    watts: float | None  # None: the node was not idle long enough in the span (or reports no utilization)
    at: datetime  # when it was measured, or last tried
    problem: str | None = None  # why the last try failed (the value before it stays)


class MeasuredIdleDraws:
    """Per node, its idle draw as last measured; per policy, the value to decide with and what its event says."""

    def __init__(self, store: TelemetryStore):
        self.store = store
        self._nodes: dict[str, _Measured] = {}

    def for_policy(self, policy: ScalingPolicy, nodes: Sequence[str], now: datetime,
                   reads_left: list[int]) -> tuple[float | None, str | None]:
        """The idle draw `policy` decides with on `nodes` (None: its configured `idle_power_watts` stands) and a note
        for its event (None: nothing to say). `reads_left` counts the store reads the tick still allows."""
        for node in nodes:
            if self._due(node, now) and reads_left[0] > 0:
                reads_left[0] -= 1
                self._measure(node, now)
        known = {node: self._nodes[node] for node in nodes if node in self._nodes}
        measured = {node: entry.watts for node, entry in known.items() if entry.watts is not None}
        failed = sorted(node for node, entry in known.items() if entry.problem is not None)
        standing = (f"idle_power_watts {policy.power_based.idle_power_watts:g} W stands"
                    if policy.power_based.idle_power_watts is not None else "every watt counts as load")
        if not measured:
            why = (f"reading their telemetry failed ({known[failed[0]].problem})" if failed
                   else "none was idle long enough in the last 7 days" if len(known) == len(nodes)
                   else "not measured yet")
            return None, f"no idle draw measured for the target's nodes: {why}; {standing}"
        lowest = min(measured.values())
        power = policy.power_based
        if lowest / power.max_power_budget * 100.0 >= power.scale_out_threshold:
            return None, (f"the idle draw measured, {lowest:g} W, is at or above the scale-out threshold's "
                          f"{power.max_power_budget * power.scale_out_threshold / 100.0:g} W: not used; {standing}")
        return lowest, None

    def _due(self, node: str, now: datetime) -> bool:
        entry = self._nodes.get(node)
        if entry is None:
            return True
        wait = RETRY_S if entry.problem is not None else REFRESH_S
        return now - entry.at >= timedelta(seconds=wait)

    def _measure(self, node: str, now: datetime) -> None:
        try:
            rows = self.store.window(node, now - timedelta(seconds=MEASURED_SPAN_S), now, MEASURED_STEP_S)
            watts = node_idle_draw(node, rows.dropna(subset=["power_watts"])).idle_watts if len(rows) else None
        except Exception as exc:  # noqa: BLE001 - the value before stays; the event says why
            logger.warning("scaling controller: measuring the idle draw of node %s failed: %s", node, error_text(exc))
            before = self._nodes.get(node)
            self._nodes[node] = _Measured(before.watts if before else None, now, error_text(exc))
            return
        self._nodes[node] = _Measured(watts, now)
