"""Live forecast accuracy: the controller's forecasts scored against the power the store records afterwards.

`LiveLedger` is pure (no Ray, no store). It keeps the forecasts the controller made (one per node, model version and
origin: policies sharing a node forecast it once) until the telemetry of each lead's bin is complete, then scores
each lead against the measured power of that bin (`score`). A scored lead is one *point*: its absolute error,
whether the actual lay inside the calibrated [lower, upper] (interval coverage), whether it lay within the model's
confidence band of the point forecast (a hit, the event whose probability `confidence` states, as
training/power/calibration.py defines it; `hit_tolerance` for a forecast that does not say its band), its confidence
and the interval's nominal coverage. Points are summed per (model version, node) in time buckets of 1/60 of the
rolling `window`, so memory stays bounded whatever the rate; buckets older than the window, and forecasts whose
leads can no longer land in it, expire. At most `max_pending_forecasts` forecasts wait (the oldest go first, counted
in `evicted_forecasts`). A newer forecast from an origin already kept (the next tick's, with more of the last input
bin) updates the leads still waiting: the points scored are those of the forecasts the policies acted on last.

A node's forecasts are not trusted (`collapse`) when its live coverage over at least `min_points` points, scored
against at least `min_bins` distinct measured bins (the overlapping forecasts of one tick after another score each bin
up to once per lead, so the points alone overstate the evidence), is below the nominal coverage minus
`coverage_margin`; the controller then decides on measured power. A node that fell back stays there until the same
evidence shows coverage back above the nominal minus half the margin (no flapping at the threshold); a new model
version starts trusted. A lead whose point, bounds or confidence is not finite is not scored.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from autoscaler.settings import LiveAccuracyConfig
from core.durations import format_duration
from core.forecasts import PowerForecast

BUCKETS = 60  # time buckets per window
Key = tuple[str, str, datetime]  # a pending forecast: node, model version, origin (its first lead's bin)
logger = logging.getLogger(__name__)


class LiveScore(BaseModel):
    """Scores over the rolling window of forecast points whose actual power is known (None: no points)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    points: int = Field(ge=0, description="scored (forecast, lead) pairs")
    bins: int = Field(0, ge=0, description="distinct measured bins the points were scored against")
    mae: float | None = Field(None, description="mean absolute error, watts")
    coverage: float | None = Field(None, description="share of actuals inside the calibrated interval")
    nominal_coverage: float | None = Field(None, description="the coverage the interval promises")
    hit_rate: float | None = Field(None, description="share of actuals within the tolerance of the point forecast")
    mean_confidence: float | None = Field(None, description="mean stated confidence (a calibrated model's hit rate)")


class NodeLiveAccuracy(LiveScore):
    node_id: str
    fallback: str | None = Field(None, description="why decisions on this node use measured power, else null")


class VersionLiveAccuracy(LiveScore):
    model_version: str = Field(description="as served, e.g. power_lstm/3")
    points_by_lead: dict[int, int] = Field({}, description="points per lead (1: a step ahead): the controller "
                                                           "scores only the leads its policies look at")
    nodes: list[NodeLiveAccuracy]


class LiveAccuracyReport(BaseModel):
    """Every model version's live scores, per node, over the window ending `at`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at: datetime
    window_s: int
    hit_tolerance: float
    pending_forecasts: int = Field(description="forecasts waiting for their actuals")
    evicted_forecasts: int = Field(0, description="forecasts dropped unscored since the controller started, because "
                                                  "max_pending_forecasts were waiting (their longest leads are "
                                                  "missing from the scores)")
    served_version: str | None = Field(None, description="the version the controller forecast with last")
    versions: list[VersionLiveAccuracy] = []


@dataclass
class Sums:
    """Running sums of scored points."""

    points: int = 0
    abs_error: float = 0.0
    inside: int = 0
    hits: int = 0
    confidence: float = 0.0
    nominal: float = 0.0
    by_lead: dict[int, int] = field(default_factory=dict)  # lead (1 = the first step ahead) -> points
    bins: set[float] = field(default_factory=set)  # the measured bins scored (their start, epoch seconds)

    def add(self, other: Sums) -> None:
        self.points += other.points
        self.abs_error += other.abs_error
        self.inside += other.inside
        self.hits += other.hits
        self.confidence += other.confidence
        self.nominal += other.nominal
        for lead, points in other.by_lead.items():
            self.by_lead[lead] = self.by_lead.get(lead, 0) + points
        self.bins |= other.bins

    def score(self) -> dict[str, float | int | None]:
        n = self.points
        if not n:
            return {"points": 0}
        return {"points": n, "bins": len(self.bins), "mae": round(self.abs_error / n, 3),
                "coverage": round(self.inside / n, 4), "nominal_coverage": round(self.nominal / n, 4),
                "hit_rate": round(self.hits / n, 4), "mean_confidence": round(self.confidence / n, 4)}


@dataclass
class Lead:
    at: datetime  # the start of the lead's bin (PowerForecast.timestamps)
    point: float
    lower: float
    upper: float
    confidence: float


@dataclass
class Pending:
    """A forecast's leads not scored yet, oldest first."""

    node: str
    version: str
    step_s: int
    nominal: float
    tolerance: float  # a hit: the actual within this fraction of the point (the model's confidence band)
    leads: list[Lead] = field(default_factory=list)
    last: datetime | None = None  # the latest lead ever recorded
    done: datetime | None = None  # the latest lead taken off (scored, or dropped without an actual)

    def merge(self, forecast: PowerForecast) -> None:
        """Take a forecast from this origin: a lead it gives replaces the one waiting for the same bin (the newer
        forecast is the one the policies act on), a lead beyond the others is added, a lead already taken off
        is not scored twice."""
        waiting = {lead.at: lead for lead in self.leads}
        for at, point, lower, upper, confidence in zip(forecast.timestamps, forecast.point, forecast.lower,
                                                       forecast.upper, forecast.confidence, strict=True):
            if (self.done is None or at > self.done) and all(map(math.isfinite, (point, lower, upper, confidence))):
                waiting[at] = Lead(at, point, lower, upper, confidence)
        self.leads = [waiting[at] for at in sorted(waiting)]
        if self.leads and (self.last is None or self.leads[-1].at > self.last):
            self.last = self.leads[-1].at


@dataclass(frozen=True)
class ActualsRead:
    """The store read one node's matured leads need: [start, end) at `step_s`, complete up to `through`."""

    node: str
    step_s: int
    start: datetime
    end: datetime


class LiveLedger:
    """The forecasts awaiting their actuals and the scores of those that matured (not thread-safe)."""

    def __init__(self, config: LiveAccuracyConfig | None = None):
        self.config = config or LiveAccuracyConfig()
        self.bucket_s = max(self.config.window // BUCKETS, 1)
        self.pending: OrderedDict[Key, Pending] = OrderedDict()
        self.by_series: dict[tuple[str, int], dict[Key, None]] = {}  # (node, step) -> its pending keys, in order
        self.scores: dict[tuple[str, str], dict[int, Sums]] = {}
        self.served_version: str | None = None
        self.evicted = 0  # forecasts dropped unscored because `max_pending_forecasts` were waiting
        self.fallen: dict[tuple[str, str], datetime] = {}  # (version, node) -> since when it is not trusted

    def record(self, node: str, forecast: PowerForecast) -> None:
        """Keep a forecast until its leads can be scored (per node, version and origin: a newer forecast from the
        same origin updates the leads still waiting)."""
        if not forecast.timestamps:
            return
        self.served_version = forecast.model_version
        key = (node, forecast.model_version, forecast.timestamps[0])
        entry = self.pending.get(key)
        if entry is not None:
            entry.merge(forecast)
        else:
            entry = Pending(node, forecast.model_version, forecast.step_s, forecast.interval_coverage,
                            forecast.confidence_tolerance or self.config.hit_tolerance)
            entry.merge(forecast)  # raises (a forecast whose lists differ in length) before anything is kept
            self.pending[key] = entry
            self.by_series.setdefault((node, forecast.step_s), {})[key] = None
        while len(self.pending) > self.config.max_pending_forecasts:
            if not self.evicted:
                logger.warning("live accuracy: more than %d forecasts await their actuals; the oldest go unscored "
                               "(raise auto_scaling.live_accuracy.max_pending_forecasts to about nodes x leads)",
                               self.config.max_pending_forecasts)
            self.evicted += 1
            self._forget(next(iter(self.pending)))

    def due(self, latest: Mapping[str, datetime]) -> list[ActualsRead]:
        """The reads that score every lead whose bin is complete: per node and step, from its oldest such lead
        to the end of its newest (`latest`: each node's newest stored reading)."""
        spans: dict[tuple[str, int], tuple[datetime, datetime]] = {}
        for entry in self.pending.values():
            newest = latest.get(entry.node)
            if newest is None:
                continue
            step = timedelta(seconds=entry.step_s)
            matured = [lead.at for lead in entry.leads if lead.at + step <= newest]
            if matured:
                start, end = spans.get((entry.node, entry.step_s), (matured[0], matured[-1] + step))
                spans[(entry.node, entry.step_s)] = (min(start, matured[0]), max(end, matured[-1] + step))
        return [ActualsRead(node, step_s, start, end) for (node, step_s), (start, end) in sorted(spans.items())]

    def score(self, read: ActualsRead, actuals: Mapping[datetime, float]) -> int:
        """Score the node's leads at `read.step_s` whose bins end by `read.end` against `actuals` (bin start ->
        measured watts); a bin without a measurement is dropped unscored. Returns how many points were scored."""
        step, scored = timedelta(seconds=read.step_s), 0
        for key in list(self.by_series.get((read.node, read.step_s), ())):
            entry = self.pending[key]
            buckets = self.scores.setdefault((entry.version, entry.node), {})
            waiting = []
            for lead in entry.leads:
                if lead.at + step > read.end:
                    waiting.append(lead)
                    continue
                entry.done = lead.at if entry.done is None else max(entry.done, lead.at)
                actual = actuals.get(lead.at)
                if actual is None or not math.isfinite(actual):
                    continue
                error = abs(actual - lead.point)
                inside, hit = lead.lower <= actual <= lead.upper, error <= entry.tolerance * abs(lead.point)
                number = round((lead.at - key[2]).total_seconds() / read.step_s) + 1  # key[2]: lead 1's bin
                buckets.setdefault(self._bucket(lead.at), Sums()).add(
                    Sums(1, error, int(inside), int(hit), lead.confidence, entry.nominal, {number: 1},
                         {lead.at.timestamp()}))
                scored += 1
            entry.leads = waiting
            if not waiting:
                self._forget(key)
        return scored

    def expire(self, now: datetime) -> None:
        """Forget buckets that left the window and forecasts whose leads all lie before it."""
        start = now - timedelta(seconds=self.config.window)
        oldest = self._bucket(start)
        for key in list(self.scores):
            buckets = self.scores[key]
            for index in [i for i in buckets if i < oldest]:
                del buckets[index]
            if not buckets:
                del self.scores[key]
        for key in [k for k, e in self.pending.items() if e.last is None or e.last < start]:
            self._forget(key)
        if self.served_version is not None:  # (after a restart: once a forecast says which version is served)
            self.fallen = {key: since for key, since in self.fallen.items()
                           if key[0] == self.served_version or key in self.scores}

    def drop(self, node: str, step_s: int) -> None:
        """Forget the node's forecasts at `step_s` unscored."""
        for key in list(self.by_series.get((node, step_s), ())):
            self._forget(key)

    def _forget(self, key: Key) -> None:
        entry = self.pending.pop(key)
        series = self.by_series[(entry.node, entry.step_s)]
        del series[key]
        if not series:
            del self.by_series[(entry.node, entry.step_s)]

    def node_sums(self, version: str, node: str, now: datetime) -> Sums:
        """The node's points of `version` over the window ending `now`."""
        total, oldest = Sums(), self._bucket(now - timedelta(seconds=self.config.window))
        for index, sums in self.scores.get((version, node), {}).items():
            if index >= oldest:
                total.add(sums)
        return total

    def collapse(self, version: str, node: str, now: datetime) -> str | None:
        """Why the node's forecasts of `version` are not to be trusted now, or None; records a fall or a recovery."""
        reason = self.verdict(version, node, now)
        if reason is None:
            self.fallen.pop((version, node), None)
        else:
            self.fallen.setdefault((version, node), now)
        return reason

    def verdict(self, version: str, node: str, now: datetime) -> str | None:
        """`collapse`'s answer without recording it."""
        config = self.config
        if not config.fallback:
            return None
        sums = self.node_sums(version, node, now)
        enough = sums.points >= config.min_points and len(sums.bins) >= config.min_bins
        coverage = sums.inside / sums.points if sums.points else 0.0
        nominal = sums.nominal / sums.points if sums.points else 0.0
        evidence = (f"live interval coverage {coverage:.0%} over {sums.points} points ({len(sums.bins)} measured "
                    f"bins) in the last {format_duration(config.window)} for node {node}")
        since = self.fallen.get((version, node))
        if since is not None:
            recovery = nominal - config.coverage_margin / 2
            if enough and coverage >= recovery - 1e-9:
                return None
            fell = f"not trusted since {since.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
            if not enough:
                return (f"{evidence}: {fell}, too few points to trust it again (needs {config.min_points} points "
                        f"over {config.min_bins} bins, {version})")
            return (f"{evidence} < {recovery:.0%} (nominal {nominal:.0%} - half the margin, to trust it again; "
                    f"{fell}, {version})")
        threshold = nominal - config.coverage_margin
        if not enough or coverage >= threshold - 1e-9:  # at the threshold (float rounding aside) the forecast stays
            return None
        return (f"{evidence} < {threshold:.0%} (nominal {nominal:.0%} - margin {config.coverage_margin:.0%}, "
                f"{version})")

    def report(self, now: datetime) -> LiveAccuracyReport:
        """Every version's scores with points in the window, per node, nodes and versions sorted."""
        versions = []
        for version in sorted({v for v, _ in self.scores}):
            total, nodes = Sums(), []
            for node in sorted(n for v, n in self.scores if v == version):
                sums = self.node_sums(version, node, now)
                if sums.points:
                    total.add(sums)
                    nodes.append(NodeLiveAccuracy(node_id=node, fallback=self.verdict(version, node, now),
                                                  **sums.score()))
            if nodes:
                versions.append(VersionLiveAccuracy(model_version=version, nodes=nodes,
                                                    points_by_lead=dict(sorted(total.by_lead.items())),
                                                    **total.score()))
        return LiveAccuracyReport(at=now.astimezone(UTC), window_s=self.config.window,
                                  hit_tolerance=self.config.hit_tolerance, pending_forecasts=len(self.pending),
                                  evicted_forecasts=self.evicted,
                                  served_version=self.served_version, versions=versions)

    def _bucket(self, at: datetime) -> int:
        return int(at.timestamp() // self.bucket_s)
