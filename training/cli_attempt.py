"""A training command line's run (`train_lstm`, `train_gbm`), locked and recorded like the API's jobs and the
scheduler's attempts.

The run takes the model's retrain lock (training/retrain_lock.py) in the service's `state_path` (`--state-path`)
before it trains, holds it to its end, and publishes and activates only while it holds it (HeldRegistry). Its record
(trigger "cli", core/records.py) is listed by `GET /api/v1/models/retrain` like any attempt and refreshed every
`HEARTBEAT_S`; a run whose process died frees the model once silent for `SILENT_AFTER_S`, and is failed by the
API's listing or the model's next command-line run. A model another attempt holds is refused (ModelBusy), naming
that attempt, before anything is trained.

Once `train` has returned, its version is registered and the run has succeeded, whatever comes after (only a verdict
given first, failing it as stopped, stands in its record): should its outcome fail (`outcome(result)` raising), or
Ctrl-C / SIGTERM come from then on (as its heartbeat stops, its outcome is read or its end recorded), the record
names the version without its scores, and the interruption still ends the process; a record that cannot be written,
or a lock that cannot be freed, is a warning (a lock left by a finished run is taken over by the next attempt at
once, one left by a run still recorded as running once that run is silent). What `train` raises fails the run; an
activation that cannot be written does not (the version stays registered, decision "activation_failed").
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.records import RecordNotFound, RecordStore
from core.registry import ModelRegistry, ModelUnreadable
from core.stores.base import StoreUnavailable
from training.retrain_attempt import (
    AttemptOutcome,
    Result,
    end_attempt,
    free_model,
    heartbeat,
    public_message,
    recorded_outcome,
    registered_outcome,
)
from training.retrain_data import JobRecordsData, TrainingData
from training.retrain_lock import SILENT_AFTER_S, HeldRegistry, ModelBusy, RetrainLocks, RetrainRunning, silent

logger = logging.getLogger(__name__)

CLI_TRIGGER = "cli"
CLI_STOPPED = (f"stopped: its command line gave no sign of life for {SILENT_AFTER_S // 60} min (its process died or "
               "was killed); run it again")
_EXPECTED = (ValueError, LookupError, OSError, StoreUnavailable)  # what a command line reports (Flux errors too)
_WHO = {"api": "started by POST /api/v1/models/retrain", "interval": "started by the retrain scheduler",
        "degradation": "started by the retrain scheduler for the active version's live error"}


@dataclass(frozen=True)
class CliRun:
    """What a command line retrains, on what, and where the service keeps its retrain locks and records."""

    tool: str  # train_lstm, train_gbm
    model_id: str
    data: TrainingData | JobRecordsData  # what it trains on, as its record names it
    state_path: str  # the service's args.state_path: the lock and the record are in its retrain/ folder
    registry: ModelRegistry
    keep_versions: int | None = None  # after a success, the versions left (ModelRegistry.prune); None: all

    def run(self, train: Callable[[ModelRegistry], Result], outcome: Callable[[Result], AttemptOutcome]) -> Result:
        """`train(held)` as a recorded attempt holding the model's retrain lock: `held` is the registry publishing
        and activating only while the run holds the model. The record ends with the error, or, once `train`
        returned, succeeded with `outcome(result)` (recorded_outcome; without the scores when stopped from then
        on); the lock is freed (free_model), whatever happens.

        Raises:
            ModelBusy: another attempt holds the model (nothing is recorded).
            OSError: the records or the lock cannot be read or written when the run starts.
            AttemptStopped: the run lost the model (silent too long, taken over); the registry is left as it is.
            Whatever `train` raises, once recorded; KeyboardInterrupt or SystemExit (SIGTERM) when stopped.
        """
        # no retention: a command line does not know the service's (args.retrain.retention); the service expires them
        records = RecordStore(self.state_path, "retrain")
        locks = RetrainLocks(records)
        job_id = self._take(records, locks)
        try:
            with _terminate_as_exit():
                return self._run(locks, job_id, train, outcome)
        finally:
            free_model(locks, self.model_id, job_id)

    def _take(self, records: RecordStore, locks: RetrainLocks) -> str:
        """Record the run and take the model's lock; the run's id. Raises ModelBusy naming the holder."""
        fail_stopped_runs(records, locks, self.model_id)
        record = records.create({"status": "running", "model_id": self.model_id, "trigger": CLI_TRIGGER,
                                 "source": self.data.source, "data": self.data.describe(),
                                 "owner": f"{self.tool}, pid {os.getpid()} on {socket.gethostname()}"})
        try:
            locks.acquire(self.model_id, record["id"])
        except RetrainRunning as busy:
            records.delete(record["id"])
            raise ModelBusy(busy_message(records, self.model_id, busy.job_id)) from None
        except OSError:
            records.delete(record["id"])
            raise
        return record["id"]

    def _run(self, locks: RetrainLocks, job_id: str, train: Callable[[ModelRegistry], Result],
             outcome: Callable[[Result], AttemptOutcome]) -> Result:
        result: Result | None = None  # train's, once it returned: its version is registered, the run succeeded
        try:
            with heartbeat(locks, self.model_id, job_id):
                result = train(HeldRegistry(self.registry, locks, self.model_id, job_id))
                self._prune()
            _succeed(locks, self.model_id, job_id, recorded_outcome(self.tool, result, outcome))
        except BaseException as exc:  # incl. Ctrl-C: the record says how the run ended, then the error goes on
            if result is None:
                _end(locks, self.model_id, job_id, status="failed", message=self._failure(exc))
            else:  # stopped once registered (its heartbeat stopping, its outcome read, its end recorded): a success
                _succeed(locks, self.model_id, job_id, registered_outcome(self.tool, result, "interrupted"))
            raise
        return result

    def _prune(self) -> None:
        """Delete the versions beyond `keep_versions` while the run still holds the model; a failure is a warning
        (the run stands; the next one prunes again)."""
        if self.keep_versions is None:
            return
        try:
            pruned = self.registry.prune(self.model_id, self.keep_versions)
        except (OSError, ModelUnreadable) as exc:
            logger.warning("%s: old versions of %s not pruned: %s", self.tool, self.model_id, exc)
            return
        if pruned:
            sys.stderr.write(f"{self.tool}: pruned {self.model_id} versions {pruned} (--keep-versions "
                             f"{self.keep_versions})\n")

    def _failure(self, exc: BaseException) -> str:
        """The run's error as its record shows it to anyone who can read the API."""
        if isinstance(exc, KeyboardInterrupt):
            return f"{self.tool}: interrupted"
        if isinstance(exc, SystemExit):
            return f"{self.tool}: terminated"
        if isinstance(exc, _EXPECTED):
            return f"{self.tool}: error: {public_message(str(exc), self.data, self.registry)}"
        return f"training failed: {type(exc).__name__}"


@contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """SIGTERM (`ray job stop`, a pod deleted) ends the run as SystemExit, so its record and lock are settled at once
    rather than left to go silent (only in the main thread, where Python delivers signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _succeed(locks: RetrainLocks, model_id: str, job_id: str, done: AttemptOutcome) -> None:
    """Record the run as succeeded with `done` (_end)."""
    _end(locks, model_id, job_id, status="succeeded", **done.model_dump(mode="json"))


def _end(locks: RetrainLocks, model_id: str, job_id: str, **fields: Any) -> None:
    """Record how the run ended, unless someone already gave a verdict on it (failed it as stopped); a record that
    cannot be written is a warning (the run then reads as running, and as stopped once silent)."""
    try:
        recorded = end_attempt(locks, model_id, job_id, **fields)
    except OSError as exc:
        logger.warning("retrain run %s: its end (%s: %s) was not recorded: %s; it reads as stopped once silent for "
                       "%d min", job_id, fields["status"], fields.get("message"), exc, SILENT_AFTER_S // 60)
        return
    if not recorded:
        logger.warning("retrain run %s: no longer holds %s; its record is left as it is", job_id, model_id)


def busy_message(records: RecordStore, model_id: str, job_id: str) -> str:
    """Who holds the model, in words: the holding attempt's id, who started it and when."""
    try:
        holder = records.get(job_id)
    except (RecordNotFound, OSError):
        holder = {}
    trigger = holder.get("trigger", "api" if holder else None)  # records from before triggers are the API's
    who = holder.get("owner") if trigger == CLI_TRIGGER else _WHO.get(trigger or "")
    facts = ", ".join(fact for fact in (who, _since(holder.get("created_at"))) if fact)
    return (f"{model_id} is being retrained by job {job_id}{f' ({facts})' if facts else ''}; wait until it ends "
            f"(GET /api/v1/models/retrain/{job_id}), then run this again")


def _since(created_at: Any) -> str | None:
    try:
        return f"since {datetime.fromisoformat(created_at):%Y-%m-%d %H:%M:%S %Z}".rstrip()
    except (TypeError, ValueError):
        return None


def fail_stopped_runs(records: RecordStore, locks: RetrainLocks, model_id: str) -> int:
    """Fail the command-line runs of `model_id` whose process died (silent: training.retrain_lock) and free their
    model; how many."""
    now = records.clock()
    stopped = [record["id"] for record in records.unfinished()
               if record.get("model_id") == model_id and record.get("trigger") == CLI_TRIGGER and silent(record, now)]
    return locks.fail_each(model_id, stopped, CLI_STOPPED, lambda fresh: silent(fresh, now))
