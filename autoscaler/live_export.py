"""Where the controller's live accuracy goes after each tick: Ray gauges of the served version's scores per node
(core/metrics_catalog.py FORECAST_LIVE_*; per node only: Ray cannot delete a label set, so a version label would
leave a series per node behind at every activation), and each power model's served version's pooled error to the
retrain scheduler, whose degradation trigger compares it with the held-out MAE (training/power/scheduler.py)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from autoscaler.live_accuracy import LiveAccuracyReport
from core.actors import ActorUnavailable, NamedActor
from core.metrics_catalog import (
    FORECAST_LIVE_COVERAGE,
    FORECAST_LIVE_HIT_RATE,
    FORECAST_LIVE_MAE,
    FORECAST_LIVE_POINTS,
    create,
)
from training.power.scheduler import LiveAccuracy
from training.power.scheduler_actor import scheduler_client

logger = logging.getLogger(__name__)
REPORT_EVERY_S = 60.0  # at most one report to the scheduler per this many seconds


def served_accuracies(report: LiveAccuracyReport) -> list[LiveAccuracy]:
    """Each power model's pooled live error as the scheduler takes it, one per model id: the version the controller
    forecast with last, for its model; for every other model (another resolution), its newest version with points.
    Versions without points or not from the registry ("<model_id>/<version>") are left out."""
    found: dict[str, LiveAccuracy] = {}
    served_model = report.served_version.rpartition("/")[0] if report.served_version else None
    for scored in report.versions:
        model_id, _, version = scored.model_version.rpartition("/")
        if not model_id or not version.isdigit() or scored.mae is None:
            continue
        if model_id == served_model and scored.model_version != report.served_version:
            continue  # an older version of the served model, scored meanwhile: it says nothing of the served one
        if model_id not in found or int(version) > found[model_id].version:
            found[model_id] = LiveAccuracy(model_id=model_id, version=int(version), mae=scored.mae,
                                           samples=scored.points, points_by_lead=scored.points_by_lead)
    return list(found.values())


class LiveAccuracyExport:
    """Publishes a tick's live accuracy; never raises (metrics and the scheduler are optional)."""

    def __init__(self, scheduler: NamedActor | None = None, every_s: float = REPORT_EVERY_S,
                 clock: Callable[[], float] = time.monotonic):
        self.scheduler, self.every_s, self.clock = scheduler or scheduler_client(), every_s, clock
        fields = ((FORECAST_LIVE_MAE, "mae"), (FORECAST_LIVE_COVERAGE, "coverage"),
                  (FORECAST_LIVE_HIT_RATE, "hit_rate"), (FORECAST_LIVE_POINTS, "points"))
        self._gauges: list[tuple[Any, str]] = [(create(spec), name) for spec, name in fields]
        self._shown: set[str] = set()  # the nodes the gauges carry
        self._reported_at = -float("inf")

    def publish(self, report: LiveAccuracyReport) -> None:
        try:
            self._set_gauges(report)
            self._report(report)
        except Exception:  # noqa: BLE001 - exporting never fails a tick
            logger.exception("scaling controller: publishing live accuracy failed")

    def _set_gauges(self, report: LiveAccuracyReport) -> None:
        """The served version's scores of every node with points in the window; a node that had points before and
        has none now (no longer forecast, or a new version without points yet) shows 0 points and NaN scores, not
        its last values."""
        served = next((v for v in report.versions if v.model_version == report.served_version), None)
        shown: set[str] = set()
        for node in served.nodes if served is not None else []:
            shown.add(node.node_id)
            for gauge, name in self._gauges:
                value = getattr(node, name)
                if gauge is not None and value is not None:
                    gauge.set(value, tags={"node_id": node.node_id})
        for node_id in self._shown - shown:
            for gauge, name in self._gauges:
                if gauge is not None:
                    gauge.set(0 if name == "points" else math.nan, tags={"node_id": node_id})
        self._shown = shown

    def _report(self, report: LiveAccuracyReport) -> None:
        accuracies = served_accuracies(report)
        if not accuracies or self.clock() - self._reported_at < self.every_s:
            return
        try:
            for accuracy in accuracies:
                self.scheduler.call("report_live_accuracy", accuracy)
        except ActorUnavailable as exc:  # scheduled retraining is off: nobody to tell
            logger.debug("live accuracy not reported: %s", exc)
        self._reported_at = self.clock()
