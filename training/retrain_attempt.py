"""One retraining attempt, run and recorded the same way whoever started it (the API, the scheduler; a training
command line records its run with training/cli_attempt.py).

The attempt's record (core/records.py, kind "retrain") goes pending -> running -> succeeded | failed; a succeeded
one holds the version it registered, the decision and its reason, the new version's held-out scores (`challenger`),
the active version's score on the very same held-out data (`champion`) and the data span. Once its retraining
(retrain_power, retrain_cost) has returned, the attempt has registered its version and succeeded, whatever fails
after (only a verdict given first, failing it as stopped, stands): should its scores not be read (the version's
metadata unreadable just now), its record names the version, the decision and the activation without them and says
so (`message`); stopped then (a Ray worker's SIGTERM as its heartbeat stops), it is recorded as succeeded before it
ends; a record that cannot be written, or a lock that cannot be released, is a logged warning. What the retraining
raises fails the attempt; an activation that cannot be written does not (retrain_power, retrain_cost: the version
stays registered, decision "activation_failed"). The model's retrain lock (training/retrain_lock.py) is released
when the attempt ends; one left behind is taken over by the next attempt, at once when the record has ended, else
once the record is silent. While it runs, its record is refreshed every `HEARTBEAT_S`, so an attempt whose process
died (or whose end could not be recorded) is known to have stopped; an attempt still running after
`$KCLOUD_RETRAIN_MAX_DURATION` (a day) is taken for hung: its record is failed, its model freed and its refreshing
stops, and the process running it for the service (a Ray task's worker, the scheduler actor) ends
(`end_hung_process`), which ends the training's Ray workers with it.
Finished records are kept `RETRAIN_RETENTION_S` (`args.retrain.retention`); after a success the registry keeps
`KEEP_VERSIONS` (`args.retrain.keep_versions`) newest versions of the model, the served one and the formerly served.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from core.public_text import without_addresses
from core.records import RecordStore
from core.registry import ModelRegistry, ModelUnreadable
from training.cost.catalog import default_catalog
from training.cost.retrain import CostIncomparable, CostIncumbent, CostRetrainResult, CostRetrainSpec, retrain_cost
from training.power.holdout import Incomparable, Incumbent
from training.power.retrain import retrain_power
from training.power.retrain_result import Decision, RetrainResult
from training.power.retrain_spec import RetrainSpec
from training.retrain_data import JobRecordsData, TrainingData
from training.retrain_lock import HEARTBEAT_S, AttemptLimits, AttemptStopped, HeldRegistry, RetrainLocks

logger = logging.getLogger(__name__)

RETRAIN_RETENTION_S = 90 * 86400
"""How long a finished attempt's record is kept by default (then deleted by the next attempt's start)."""
MAX_RETRAIN_RECORDS = 5_000
"""Finished attempt records kept at most, whatever the retention (a 5-minute schedule makes 26,000 in 90 days, each
read by every scheduler check and every listing): the oldest go first, at the next attempt's start."""


def forget_old_attempts(records: RecordStore) -> None:
    """What an attempt's start deletes: the finished records past the retention, and the oldest beyond
    MAX_RETRAIN_RECORDS."""
    records.expire()
    records.trim(MAX_RETRAIN_RECORDS)
KEEP_VERSIONS = 30
"""Versions of a model kept after each retraining attempt (args.retrain.keep_versions), besides the served one and
as many formerly served."""

Trigger = Literal["api", "interval", "degradation", "cli"]
"""Who started an attempt: a POST to the API, the scheduler's interval, the champion's live error, or a training
command line (`train_lstm`, `train_gbm`: training/cli_attempt.py)."""


class ChampionScore(BaseModel):
    """The version served when the attempt ran, scored on the new version's held-out data: the active one, or, when
    that cannot be loaded, the one replicas serve in its place (`unloadable_active_version` then names the active
    one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int
    mae: float | None = None  # its MAE there (None: not compared)
    challenger_mae: float | None = None  # the new version's MAE on the very same points
    not_compared: str | None = None  # why no fair comparison was possible
    unloadable_active_version: int | None = Field(
        None, description="the active version, when it could not be loaded: `version` is then the one replicas "
                          "serve in its place, the one scored (null: `version` is the active one)")


class AttemptOutcome(BaseModel):
    """What a succeeded attempt adds to its record (the API's `RetrainJob` shows these fields: None until then;
    a failed attempt has only its `message`)."""

    registered_version: int | None = None
    decision: Decision | None = Field(None, description="whether the new version went into service, and why")
    reason: str | None = None
    activated: bool | None = None
    challenger: dict[str, Any] | None = Field(None, description="the new version's held-out metrics")
    champion: ChampionScore | None = Field(None, description="the version served before (the active one, or the one "
                                                             "served in place of an active version that cannot be "
                                                             "loaded), scored on the same held-out data")
    data_span: dict[str, Any] | None = Field(None, description="what the registered version trained on (power: "
                                                               "start, end, series, rows; cost: rows)")
    message: str | None = None


class Registered(Protocol):
    """What a retraining's result says of the version it registered (RetrainResult, CostRetrainResult)."""

    @property
    def model_id(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def decision(self) -> Decision: ...

    @property
    def activated(self) -> bool: ...


Result = TypeVar("Result", bound=Registered)


def run_attempt(records: RecordStore, job_id: str, data: TrainingData | JobRecordsData,
                spec: RetrainSpec | CostRetrainSpec, registry: ModelRegistry, *,
                keep_versions: int | None = None, on_hung: Callable[[], None] | None = None) -> str:
    """Run the recorded attempt `job_id` (it holds the model's lock) and record its outcome; returns its status
    ("succeeded" once it registered its version, even when its record could not be written). After a success,
    `keep_versions` (None: keep all) prunes the model's versions (`ModelRegistry.prune`), so that a schedule's
    attempts do not fill the disk; the lock is released after that (free_model), so no next attempt scores a version
    the prune is removing. `on_hung`: called once the attempt was failed as hung (`heartbeat`), e.g.
    `end_hung_process`."""
    try:
        status = _run(records, job_id, data, spec, registry, on_hung)
        if status == "succeeded" and keep_versions is not None:
            try:
                registry.prune(spec.model_id, keep_versions)
            except (OSError, ModelUnreadable) as exc:  # the attempt stands; the next one prunes again
                logger.warning("retrain attempt %s: old versions of %s not pruned: %s", job_id, spec.model_id, exc)
    finally:
        free_model(RetrainLocks(records), spec.model_id, job_id)
    return status


HUNG_EXIT_STATUS = 75
"""The exit status of a process ended by `end_hung_process`."""


def end_hung_process() -> None:
    """End this process at once (its attempt was failed as hung): a training stuck in a collective or on a lost
    head cannot be interrupted otherwise. A Ray task's worker ends with its task (never retried) and the training's
    Ray workers with it; the scheduler actor is restarted by Ray and schedules again."""
    logger.error("retrain attempt taken for hung: ending this process (pid %d)", os.getpid())
    logging.shutdown()
    os._exit(HUNG_EXIT_STATUS)


@contextmanager
def heartbeat(locks: RetrainLocks, model_id: str, job_id: str, every_s: float = HEARTBEAT_S,
              max_s: float | None = None, on_hung: Callable[[], None] | None = None) -> Iterator[None]:
    """Refresh the record's `updated_at` every `every_s` while the block runs and the attempt still holds the model,
    so that it is known to be alive (training.retrain_lock.silent), for at most `max_s` (default
    `$KCLOUD_RETRAIN_MAX_DURATION`, a day): an attempt running longer is taken for hung, failed (unless a verdict came
    first) and its model freed for the next attempt (its HeldRegistry then refuses any change should it ever end);
    then `on_hung` is called. Stopped and joined before the block's outcome is recorded."""
    stop = threading.Event()
    if max_s is None:
        max_s = float(AttemptLimits.from_env().max_duration)
    until = time.monotonic() + max_s

    def beat() -> None:
        while not stop.wait(every_s):
            if time.monotonic() >= until:
                logger.error("retrain attempt %s of %s has run %.1f h: taken for hung, failed and its model freed",
                             job_id, model_id, max_s / 3600)
                _fail_hung(locks, model_id, job_id, max_s)
                if on_hung is not None:
                    on_hung()
                return
            try:
                if not locks.beat(model_id, job_id):
                    logger.warning("retrain attempt %s: no longer holds %s (failed as stopped, or taken over)",
                                   job_id, model_id)
                    return
            except OSError as exc:
                logger.warning("retrain attempt %s: heartbeat not written: %s", job_id, exc)

    thread = threading.Thread(target=beat, name=f"retrain-heartbeat-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _fail_hung(locks: RetrainLocks, model_id: str, job_id: str, max_s: float) -> None:
    message = (f"hung: still running after {max_s / 3600:.1f} h (KCLOUD_RETRAIN_MAX_DURATION); failed, and its model "
               "freed for the next attempt")
    try:
        locks.fail(model_id, job_id, message, lambda _record: True)
    except OSError as exc:  # it reads as stopped once silent: its heartbeat has stopped
        logger.warning("retrain attempt %s: not failed as hung (%s); it is once silent", job_id, exc)


def _run(records: RecordStore, job_id: str, data: TrainingData | JobRecordsData, spec: RetrainSpec | CostRetrainSpec,
         registry: ModelRegistry, on_hung: Callable[[], None] | None) -> str:
    locks = RetrainLocks(records)
    try:
        started = locks.beat(spec.model_id, job_id, status="running")
    except OSError as exc:
        logger.warning("retrain attempt %s: not started: the lock of %s cannot be read: %s", job_id, spec.model_id, exc)
        return _failed(locks, spec.model_id, job_id, "not started: the model's retrain lock could not be read; "
                                                     "submit again")
    if not started:  # e.g. a task Ray ran again after it was failed
        logger.warning("retrain attempt %s: not started: it no longer holds %s or has ended", job_id, spec.model_id)
        return "failed"
    tool = "train_gbm" if isinstance(spec, CostRetrainSpec) else "train_lstm"
    outcome: AttemptOutcome | None = None  # retrain's, once it returned: its version is registered, a success
    try:
        try:
            with heartbeat(locks, spec.model_id, job_id, on_hung=on_hung):
                outcome = retrain(data, spec, HeldRegistry(registry, locks, spec.model_id, job_id))
        except AttemptStopped as exc:  # its record already says why (whoever failed it wrote that)
            logger.warning("%s", exc)
            return "failed"
        except (ValueError, LookupError, OSError) as exc:  # bad data or config, too little data, unreadable model
            message = public_message(str(exc), data, registry)
            logger.warning("retrain attempt %s failed: %s", job_id, exc)
            return _failed(locks, spec.model_id, job_id, f"{tool}: error: {message}")
        except Exception as exc:  # noqa: BLE001 - e.g. a failed Ray Train run: the attempt fails, its cause logged
            logger.warning("retrain attempt %s failed", job_id, exc_info=True)
            return _failed(locks, spec.model_id, job_id, f"training failed: {type(exc).__name__}")
        return _succeeded(locks, spec.model_id, job_id, outcome)
    except BaseException as exc:  # stopped (a Ray worker's SIGTERM) once registered, as its heartbeat stopped or
        if outcome is not None and not isinstance(exc, Exception):  # before its success was recorded: a success
            _succeeded(locks, spec.model_id, job_id, outcome)
        raise


def _failed(locks: RetrainLocks, model_id: str, job_id: str, message: str) -> str:
    """Record the attempt as failed with `message`, unless a verdict came first; "failed". A record that cannot be
    written is logged: the attempt reads as stopped once silent, and the exception that failed it is not lost to
    one from the record store."""
    try:
        end_attempt(locks, model_id, job_id, status="failed", message=message)
    except (OSError, LookupError) as exc:
        logger.warning("retrain attempt %s failed (%s), and its record could not be written: %s", job_id, message, exc)
    return "failed"


def _succeeded(locks: RetrainLocks, model_id: str, job_id: str, outcome: AttemptOutcome) -> str:
    """Record the attempt as succeeded with `outcome`; its status ("failed" when a verdict came first)."""
    try:
        recorded = end_attempt(locks, model_id, job_id, status="succeeded", **outcome.model_dump(mode="json"))
    except OSError as exc:  # the version is registered all the same; the record reads as stopped once silent
        logger.warning("retrain attempt %s registered version %s, but its record could not be written: %s", job_id,
                       outcome.registered_version, exc)
        return "succeeded"
    if not recorded:
        logger.warning("retrain attempt %s registered version %s after it was failed as stopped; its record is left "
                       "as it is", job_id, outcome.registered_version)
        return "failed"
    return "succeeded"


def end_attempt(locks: RetrainLocks, model_id: str, job_id: str, **fields: Any) -> bool:
    """Record how the attempt ended, unless someone already gave a verdict on it (failed it as stopped, took the
    model over): False then. Raises OSError when the record cannot be written."""
    try:
        return locks.beat(model_id, job_id, **fields)
    except OSError as exc:  # the lock cannot be read just now: record the end unless a verdict came first
        logger.warning("retrain attempt %s: lock or record unreadable at the end (%s); recording its end unless a "
                       "verdict came first", job_id, exc)
        return locks.record_if_unfinished(job_id, **fields)


def free_model(locks: RetrainLocks, model_id: str, job_id: str) -> None:
    """Release the attempt's lock on the model. One that cannot be released (OSError) is logged and left: the next
    attempt takes it over, at once when this attempt's record has ended, else once it is silent."""
    try:
        locks.release(model_id, job_id)
    except OSError as exc:
        logger.warning("retrain attempt %s: its lock on %s was not released (%s); the next attempt takes it over",
                       job_id, model_id, exc)


def public_message(text: str, data: TrainingData | JobRecordsData, registry: ModelRegistry) -> str:
    """An error's text as a job record may show it to anyone who can read the API: one line, the data file by the
    name users know it by, the registry as MODEL_PATH, any other absolute path cut to its last part and any
    address (a store's URL) left out."""
    text = data.public(" ".join(text.splitlines()))
    for root in sorted({str(registry.root.resolve()), str(registry.root)}, key=len, reverse=True):
        text = text.replace(root, "MODEL_PATH")
    return without_addresses(text)


def retrain(data: TrainingData | JobRecordsData, spec: RetrainSpec | CostRetrainSpec,
            registry: ModelRegistry) -> AttemptOutcome:
    """Retrain the power forecaster (a RetrainSpec, on telemetry) or the cost model (a CostRetrainSpec, on job
    records); the outcome of the version registered (recorded_outcome). Raises what retrain_power / retrain_cost
    raise."""
    if isinstance(spec, CostRetrainSpec):
        if not isinstance(data, JobRecordsData):
            raise TypeError("the cost model trains on job records")
        catalog = spec.catalog or default_catalog()  # read once: the records and the model priced alike
        return recorded_outcome("train_gbm", retrain_cost(lambda: data.records(catalog),
                                                          spec.model_copy(update={"catalog": catalog}),
                                                          registry=registry), cost_outcome)
    if not isinstance(data, TrainingData):
        raise TypeError("the power forecaster trains on telemetry")
    return recorded_outcome("train_lstm", retrain_power(data.frames(), spec, registry=registry),
                            lambda result: power_outcome(result, registry, cli=False))


def recorded_outcome(tool: str, result: Result, outcome: Callable[[Result], AttemptOutcome]) -> AttemptOutcome:
    """`outcome(result)`; should that fail (e.g. the new version's metadata unreadable just now), the version
    `result` registered without its scores (registered_outcome, naming only the error's type), and a warning with
    the traceback: registered, it stays a success."""
    try:
        return outcome(result)
    except Exception as exc:  # noqa: BLE001 - the version is in the registry: not a failure
        logger.warning("%s: registered %s version %d, but its scores could not be recorded: %s: %s", tool,
                       result.model_id, result.version, type(exc).__name__, exc, exc_info=True)
        return registered_outcome(tool, result, type(exc).__name__)


def registered_outcome(tool: str, result: Registered, cause: str) -> AttemptOutcome:
    """The outcome of the version `result` registered, without its scores (`cause`: why they are missing)."""
    state = "activated" if result.activated else "NOT activated"
    return AttemptOutcome(registered_version=result.version, decision=result.decision, activated=result.activated,
                          message=f"{tool}: registered {result.model_id} version {result.version} ({state}); its "
                                  f"scores could not be recorded ({cause})")


def power_outcome(result: RetrainResult, registry: ModelRegistry, *, cli: bool = True) -> AttemptOutcome:
    """The record's view of a power retraining; the data span is the registered version's; `cli`: a `train_lstm`
    run's (else an API or scheduled attempt's, whose message names no command-line flag)."""
    span = registry.get(result.model_id, result.version)[1].data_span
    return AttemptOutcome(
        registered_version=result.version, decision=result.decision, reason=result.reason,
        activated=result.activated, challenger=result.metrics.model_dump(),
        champion=_champion(result.incumbent, result.incomparable),
        data_span=span.model_dump(mode="json") if span else None,
        message=" ".join(f"train_lstm: {line}" for line in result.summary_lines(cli=cli)))


def cost_outcome(result: CostRetrainResult) -> AttemptOutcome:
    """The record's view of a cost retraining; its data span is the number of job records and whether generated."""
    return AttemptOutcome(
        registered_version=result.version, decision=result.decision, reason=result.reason,
        activated=result.activated, challenger=result.metrics,
        champion=_champion(result.incumbent, result.incomparable),
        data_span={"rows": result.records, "synthetic": result.synthetic},
        message=" ".join(f"train_gbm: {line}" for line in result.summary_lines()))


def _champion(incumbent: Incumbent | CostIncumbent | None,
              incomparable: Incomparable | CostIncomparable | None) -> ChampionScore | None:
    if incumbent is not None and incumbent.scored_version is not None:  # the active one cannot be loaded
        return ChampionScore(version=incumbent.scored_version, mae=incumbent.mae,
                             challenger_mae=incumbent.challenger_mae, unloadable_active_version=incumbent.version)
    if incumbent is not None:
        return ChampionScore(version=incumbent.version, mae=incumbent.mae, challenger_mae=incumbent.challenger_mae)
    if incomparable is not None:
        return ChampionScore(version=incomparable.version, not_compared=incomparable.why)
    return None
