"""Scheduled retraining of the power forecasters: every interval, and early when the champion degrades.

`RetrainScheduler` is the body of the scheduler actor (training/power/scheduler_actor.py) without Ray. Each
`step` looks at what is due: the interval (`predictor.model_update_interval`, or the app's override) since
the last attempt, or else the champion's live error past `degradation_factor` times its held-out MAE. A due
attempt trains on the telemetry store's last `since_s` seconds through `retrain_power`, which promotes the new
version only if its MAE is no higher than the champion's on the same recent held-out data, and is recorded like an
API job (training/retrain_attempt.py), so `GET /api/v1/models/retrain` lists both. The model's retrain lock is shared
with the API: while another attempt holds it, nothing starts and the next step tries again.

The interval counts from the end of the last attempt (from its start when a kill interrupted it). The schedule
survives restarts: it is kept in `<state_path>/retrain_scheduler.json`, so a restarted scheduler retrains at
once only when an attempt is due; the first attempt comes one interval after the scheduler first started (the
store fills meanwhile). An attempt a kill interrupted is failed by `recover` once its record is silent.

A `RetrainScheduler` keeps one model's schedule. The actor runs one per power model served: the default model on
the settings' interval and span, every other resolution of `predictor.resolutions` on its own (`ModelSchedule.of`),
one attempt at a time.

Live accuracy is an input (`LiveAccuracySource`): the degradation trigger acts once something measures the
served version's live error and reports it (the actor's `report_live_accuracy`); until then it never fires.
Each champion version gets at most one early retrain, so a challenger that cannot beat it does not loop.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.atomic_files import atomic_write_json
from core.records import RecordStore
from core.registry import ModelRegistry
from core.registry_metadata import ModelId, ModelNotFoundError
from core.settings import ConfigError
from training.power.retrain_spec import ModelOverrides, RetrainSpec, retrained_shape
from training.power.scaling import TrainScaling
from training.retrain_attempt import (
    KEEP_VERSIONS,
    RETRAIN_RETENTION_S,
    Trigger,
    forget_old_attempts,
    public_message,
    run_attempt,
)
from training.retrain_data import TrainingData, training_span_s
from training.retrain_lock import RetrainLocks, RetrainRunning, silent
from training.settings import Resolution, load_training_config

logger = logging.getLogger(__name__)
MIN_LIVE_SAMPLES = 30  # live errors over fewer forecast points are too noisy to act on
SCHEDULED: tuple[Trigger, ...] = ("interval", "degradation")
INTERRUPTED = "interrupted: the retrain scheduler stopped or restarted; the next due attempt retrains"
"""The verdict on a scheduled attempt whose scheduler stopped."""


OTHER_INTERVAL_STEPS = 24  # another resolution retrains at most once per this many of its steps (daily at 1 h)


class ModelSchedule(BaseModel):
    """Another power model the scheduler retrains (a served resolution other than the default), on its own clock."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model_id: ModelId
    interval_s: int = Field(gt=0)
    since_s: int = Field(gt=0)

    @classmethod
    def of(cls, resolution: Resolution, interval_s: int, since_s: int) -> ModelSchedule:
        """`resolution`'s schedule: the interval and span given, but at least OTHER_INTERVAL_STEPS of its steps
        between attempts (an hourly model gains one bin an hour), on at least `training_span_s` of telemetry."""
        return cls(model_id=resolution.model_id, interval_s=max(interval_s, OTHER_INTERVAL_STEPS * resolution.step),
                   since_s=training_span_s(resolution, since_s))


class SchedulerSettings(BaseModel):
    """What the scheduler retrains, how often, on what: `model_id` on `interval_s` and `since_s`, and each of `others`
    on its own."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    state_path: str = Field(description="attempt records under <state_path>/retrain, the schedule beside them")
    model_path: str = Field(description="the model registry")
    config_path: str | None = Field(None, description="service config (model settings, read at each attempt)")
    model_id: ModelId = "power_lstm"
    interval_s: int = Field(gt=0, description="time between scheduled attempts")
    since_s: int = Field(gt=0, description="recent telemetry each attempt trains on")
    degradation_factor: float | None = Field(1.5, gt=1, description="retrain early when the champion's live MAE "
                                                                     "exceeds this times its held-out MAE")
    check_s: float = Field(30.0, gt=0, description="how often to look at what is due")
    retention_s: int = Field(RETRAIN_RETENTION_S, gt=0, description="finished attempt records older than this "
                                                                     "are deleted")
    keep_versions: int = Field(KEEP_VERSIONS, ge=1, description="versions the registry keeps after an attempt "
                                                                 "(training.retrain_attempt.run_attempt)")
    scaling: TrainScaling = TrainScaling()
    others: tuple[ModelSchedule, ...] = Field((), description="the other power models retrained, each on its own "
                                                             "schedule")
    require_active: bool = Field(False, description="retrain only while a version is active (another resolution "
                                                    "is served only once one is: none is activated for it)")

    def fingerprint(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()

    def each(self) -> list[SchedulerSettings]:
        """One model's settings per model retrained, the default model's first."""
        own = self.model_copy(update={"others": ()})
        return [own, *(own.model_copy(update={**other.model_dump(), "require_active": True}) for other in self.others)]


class LiveAccuracy(BaseModel):
    """A served version's error on forecasts whose actual power is now known."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model_id: ModelId
    version: int = Field(ge=1)
    mae: float = Field(ge=0, allow_inf_nan=False, description="watts")
    samples: int = Field(ge=0, description="forecast points behind `mae`")
    points_by_lead: dict[int, int] = Field({}, description="those points per lead (1: a step ahead)")

    def held_out_equivalent(self, metrics: dict) -> float:
        """The version's held-out MAE over the same mix of leads as the live points (the controller scores only
        the leads its policies look at, and near leads err less); its overall held-out MAE when either side does
        not say per lead."""
        by_lead = metrics.get("mae_by_lead") or []
        weighted = [(points, by_lead[lead - 1]) for lead, points in self.points_by_lead.items()
                    if 1 <= lead <= len(by_lead) and by_lead[lead - 1] is not None]
        total = sum(points for points, _ in weighted)
        if not total:
            return float(metrics["mae"])
        return sum(points * mae for points, mae in weighted) / total


LiveAccuracySource = Callable[[str], LiveAccuracy | None]
"""The live accuracy of a model id's served version; None while unknown."""


def no_live_accuracy(_model_id: str) -> LiveAccuracy | None:
    return None


class ScheduleState(BaseModel):
    """What the schedule remembers across restarts."""

    model_config = ConfigDict(extra="forbid")

    started_at: datetime  # when the scheduler first ran for the model
    last_attempt_at: datetime | None = None
    early_retrain_of: int | None = None  # the champion version a degradation attempt was made for


def _now() -> datetime:
    return datetime.now(UTC)


class RetrainScheduler:
    """Decides when to retrain the power forecaster and runs the attempt (see module docstring)."""

    def __init__(self, settings: SchedulerSettings, *, live_accuracy: LiveAccuracySource = no_live_accuracy,
                 clock: Callable[[], datetime] = _now, owner: str | None = None,
                 on_hung: Callable[[], None] | None = None):
        """`owner`: who runs this scheduler (its actor's id), stamped on its records so that whoever stops it can
        fail the attempt it interrupted at once (`fail_interrupted`). `on_hung`: called once an attempt was failed
        as hung (training.retrain_attempt.heartbeat); the actor ends its process, which Ray restarts."""
        self.settings, self.live_accuracy, self.clock, self.owner = settings, live_accuracy, clock, owner
        self.on_hung = on_hung
        self.records = RecordStore(settings.state_path, "retrain", retention_s=settings.retention_s)
        self.locks = RetrainLocks(self.records)
        self.registry = ModelRegistry(settings.model_path)
        self.state_file = Path(settings.state_path) / "retrain_scheduler.json"
        self._unread = False  # the stored schedule could not be read: nothing is retrained (or written) until it is
        self._unreadable_active: str | None = None  # why the ACTIVE pointer could not be read, as last logged
        self.state = self._load_state()

    def next_due(self) -> datetime | None:
        """When the next interval attempt is due; None while the stored schedule cannot be read (nothing is due then,
        and a time made up from the clock would be a guess)."""
        if self._unread:
            return None
        return (self.state.last_attempt_at or self.state.started_at) + timedelta(seconds=self.settings.interval_s)

    def due(self) -> Trigger | None:
        """What is due now: "interval", "degradation", or nothing."""
        next_due = self.next_due()
        if next_due is None or not self._may_retrain():
            return None
        if self.clock() >= next_due:
            return "interval"
        return "degradation" if self._degraded() else None

    def step(self) -> dict | None:
        """Run the attempt that is due, if any; its final record (None: nothing due, the model is busy, or the stored
        schedule cannot be read just now)."""
        self.recover()
        if self._unread:
            self.state = self._load_state()
            if self._unread:
                return None
        trigger = self.due()
        return self.attempt(trigger) if trigger is not None else None

    def attempt(self, trigger: Trigger) -> dict | None:
        """Retrain now on the store's recent telemetry; the final record, or None when another attempt holds
        the model's lock (nothing is recorded then)."""
        settings = self.settings
        data = TrainingData(source="store", since_s=settings.since_s)
        forget_old_attempts(self.records)
        record = self.records.create({"status": "pending", "model_id": settings.model_id, "source": data.source,
                                      "trigger": trigger, "data": data.describe(),
                                      **({"owner": self.owner} if self.owner else {})})
        try:
            self.locks.acquire(settings.model_id, record["id"])
        except (RetrainRunning, OSError) as busy:  # another attempt, or a lock that cannot be read now
            self.records.delete(record["id"])
            logger.info("retrain scheduler: %s due, but %s", trigger, busy)
            return None
        try:
            champion = self.registry.active_version(settings.model_id)
            self._save_state(last_attempt_at=self.clock(),  # at the start too: a restart mid-attempt waits
                             early_retrain_of=champion if trigger == "degradation" else self.state.early_retrain_of)
            config = load_training_config(settings.config_path)
            overrides = ModelOverrides().keeping_shape(retrained_shape(self.registry, config, settings.model_id))
            spec = RetrainSpec(config=config, model_id=settings.model_id, overrides=overrides,
                               scaling=settings.scaling, skip_short=True, split="time", verbose=False)
        except Exception as exc:  # noqa: BLE001 - the attempt fails and frees the model, never left pending
            if isinstance(exc, ConfigError | OSError):  # the config became invalid; the registry cannot be read now
                logger.warning("retrain scheduler: attempt %s: %s", record["id"], exc)
                message = public_message(str(exc), data, self.registry)  # anyone who can read the API sees it
            else:  # e.g. a version's metadata this code cannot read: the log has the traceback
                logger.exception("retrain scheduler: attempt %s could not start", record["id"])
                message = f"could not start: {type(exc).__name__}"
            try:
                self.records.update(record["id"], status="failed", message=f"train_lstm: error: {message}")
            finally:
                self.locks.release(settings.model_id, record["id"])
        else:
            logger.info("retrain scheduler: %s attempt %s on the %s", trigger, record["id"], data.describe())
            run_attempt(self.records, record["id"], data, spec, self.registry, keep_versions=settings.keep_versions,
                        on_hung=self.on_hung)
        self._save_state(last_attempt_at=self.clock())  # the next interval counts from the attempt's end
        return self.records.get(record["id"])

    def _may_retrain(self) -> bool:
        """False for a model retrained only while a version is active (`require_active`) that has none now."""
        if not self.settings.require_active:
            return True
        try:
            active = self.registry.active_version(self.settings.model_id)
        except OSError as exc:  # the pointer cannot be read just now: the next check reads it again
            if str(exc) != self._unreadable_active:  # said once while it stays so, not at every check
                logger.warning("retrain scheduler: %s: %s", self.settings.model_id, exc)
                self._unreadable_active = str(exc)
            return False
        self._unreadable_active = None
        return active is not None

    def recover(self) -> int:
        """Fail the scheduled attempts a restart interrupted (silent ones) and free their locks; how many."""
        return fail_interrupted(self.records, self.settings.model_id)

    def _degraded(self) -> bool:
        factor = self.settings.degradation_factor
        live = self.live_accuracy(self.settings.model_id) if factor is not None else None
        if live is None or live.samples < MIN_LIVE_SAMPLES:
            return False
        champion = self.registry.active_version(self.settings.model_id)
        if champion is None or live.version != champion or self.state.early_retrain_of == champion:
            return False
        try:
            held_out = live.held_out_equivalent(self.registry.get(self.settings.model_id, champion)[1].metrics)
        except (ModelNotFoundError, KeyError, TypeError, ValueError):
            return False
        if live.mae <= factor * held_out:
            return False
        logger.info("retrain scheduler: %s version %d live MAE %.2f W > %.2f x held-out %.2f W (same leads)",
                    live.model_id, champion, live.mae, factor, held_out)
        return True

    def _load_state(self) -> ScheduleState:
        try:
            stored = _read_states(self.state_file).get(self.settings.model_id)
        except OSError as exc:  # a passing storage error must not put a fresh schedule over the stored one
            if not self._unread:  # once per outage, not at every check
                logger.error("retrain scheduler: the schedule in %s cannot be read (%s): nothing is retrained "
                             "until it can", self.state_file, exc)
            self._unread = True
            return ScheduleState(started_at=self.clock())
        if self._unread:
            logger.warning("retrain scheduler: the schedule in %s can be read again", self.state_file)
        self._unread = False
        if stored is not None:
            try:
                return ScheduleState.model_validate(stored)
            except ValidationError:
                logger.warning("retrain scheduler: unreadable schedule in %s: starting it afresh", self.state_file)
        state = ScheduleState(started_at=self.clock())
        self._write(state)
        return state

    def _save_state(self, **changes: object) -> None:
        self.state = self.state.model_copy(update=changes)
        self._write(self.state)

    def _write(self, state: ScheduleState) -> None:
        states = _read_states(self.state_file)
        states[self.settings.model_id] = state.model_dump(mode="json")
        atomic_write_json(self.state_file, states)


def _read_states(path: Path) -> dict[str, object]:
    """Every model's schedule in the file; {} when it is missing or not a schedule. Raises OSError when it cannot
    be read (a passing storage error is never taken for no schedule, which a write would then replace)."""
    try:
        states = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return states if isinstance(states, dict) else {}


def fail_interrupted(records: RecordStore, model_id: str, *, owner: str | None = None) -> int:
    """Fail the scheduled attempts of `model_id` whose process died (silent: training.retrain_lock), and those of
    `owner`, a scheduler known to be stopped, however recent; free their locks; how many. One still alive (another
    cluster's scheduler during an upgrade) is left running."""
    now = records.clock()

    def stopped(record: dict) -> bool:
        return silent(record, now) or (owner is not None and record.get("owner") == owner)

    interrupted = [record["id"] for record in records.unfinished()
                   if record.get("model_id") == model_id and record.get("trigger") in SCHEDULED and stopped(record)]
    return RetrainLocks(records).fail_each(model_id, interrupted, INTERRUPTED, stopped)
