"""One retraining of a model at a time, whoever starts it (the API's jobs, the scheduler's attempts, the training
command lines: training/cli_attempt.py).

A lock file per model beside the retraining records (`<state_path>/retrain/<model_id>.lock`) holds the id of the
attempt that retrains the model. Taking and freeing a lock happen under an exclusive `flock` on one guard file, so
two processes can never both take a model. A lock is stale, and taken over, when its attempt has ended (its
record is finished or gone) or has stopped: a running attempt refreshes its record every `HEARTBEAT_S`
(training/retrain_attempt.py), and one silent for `SILENT_AFTER_S` died with its process (an OOM-killed worker, an
app restart).
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import Field

from core.atomic_files import atomic_write_with
from core.file_lock import open_guard, take_flock
from core.records import UNFINISHED, RecordNotFound, RecordStore, updated_at
from core.registry import ModelRegistry
from core.registry_metadata import ModelMetadata
from core.settings import Duration, EnvSettings

logger = logging.getLogger(__name__)
HEARTBEAT_S = 30
"""How often a running attempt refreshes its record's `updated_at`."""
SILENT_AFTER_S = 300
"""An unfinished attempt whose record has not changed for this long has stopped."""
MAX_ATTEMPT_S = 24 * 3600
"""An attempt still running after this long (`$KCLOUD_RETRAIN_MAX_DURATION`) is taken for hung (a distributed
training stuck in a collective, a driver waiting on a lost head): it is failed and its model freed, its heartbeat
stops, and the service ends the process that runs it (training.retrain_attempt.heartbeat)."""
GUARD_TIMEOUT_S = 10.0
"""How long a lock operation waits for another process's hold on the locks' flock (held for milliseconds)."""


class AttemptLimits(EnvSettings):
    """How long a retraining attempt may run before it is taken for hung."""

    max_duration: Duration = Field(MAX_ATTEMPT_S, ge=3600, alias="KCLOUD_RETRAIN_MAX_DURATION")


class RetrainRunning(RuntimeError):
    """The model is being retrained by another attempt."""

    def __init__(self, model_id: str, job_id: str):
        super().__init__(f"model {model_id!r} is being retrained by job {job_id}; wait until it ends "
                         f"(GET /api/v1/models/retrain/{job_id})")
        self.model_id, self.job_id = model_id, job_id

    def __reduce__(self):  # survives pickling across Ray workers
        return (RetrainRunning, (self.model_id, self.job_id))


class ModelBusy(RuntimeError):
    """A command line's retraining did not start: another attempt holds the model (the message names it)."""


def silent(record: dict[str, Any], now: datetime) -> bool:
    """Whether an unfinished attempt's record has gone without an update for `SILENT_AFTER_S` (its process died)."""
    updated = updated_at(record)
    return updated is None or now - updated > timedelta(seconds=SILENT_AFTER_S)


class RetrainLocks:
    """One lock file per model in the records' folder, holding the id of the attempt that retrains it."""

    def __init__(self, records: RecordStore):
        self.records = records

    def acquire(self, model_id: str, job_id: str) -> None:
        """Raises RetrainRunning naming the running attempt (a lock left by an ended or stopped one is taken over,
        and a stopped one's record failed), OSError when the lock or its holder's record cannot be read (never taken
        over on a passing error)."""
        with self._guard():
            holder = self._read_holder(model_id)
            if holder is not None and self.running(holder):
                raise RetrainRunning(model_id, holder)
            if holder is not None and self._unfinished(holder) is not None:  # silent: its process stopped
                self.records.update(holder, status="failed", message=f"stopped: no sign of life for "
                                    f"{SILENT_AFTER_S // 60} min; its model was taken over by attempt {job_id}")
            atomic_write_with(self._path(model_id), lambda tmp: tmp.write_text(job_id))

    def release(self, model_id: str, job_id: str) -> None:
        """Free the model if `job_id` holds it."""
        with self._guard():
            self._release(model_id, job_id)

    def fail(self, model_id: str, job_id: str, message: str,
             stopped: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        """Fail the attempt and free its model in one step under the guard, if its record, read again there, is
        unfinished and `stopped` says so still; the failed record, else None. So a verdict never lands on an attempt
        that has just finished (or written its heartbeat)."""
        with self._guard():
            record = self._unfinished(job_id)
            if record is None or not stopped(record):
                return None
            failed = self.records.update(job_id, status="failed", message=message)
            self._release(model_id, job_id)
            return failed

    def fail_each(self, model_id: str, job_ids: Iterable[str], message: str,
                  stopped: Callable[[dict[str, Any]], bool]) -> int:
        """`fail` each attempt; how many it failed. One whose record cannot be read or written just now is left for
        the next look (logged), and keeps none of the others from being failed."""
        failed = 0
        for job_id in job_ids:
            try:
                failed += self.fail(model_id, job_id, message, stopped) is not None
            except OSError as exc:  # unreadable or unwritable just now (RecordUnreadable, ENOSPC, the flock's wait)
                logger.warning("retrain attempt %s of %s not failed yet: %s", job_id, model_id, exc.strerror or exc)
        return failed

    def record_if_unfinished(self, job_id: str, **fields: Any) -> bool:
        """Update the attempt's record only while it is unfinished (under the guard, without reading the lock):
        an attempt whose lock cannot be read records its outcome unless someone has already given a verdict."""
        with self._guard():
            if self._unfinished(job_id) is None:
                return False
            self.records.update(job_id, **fields)
            return True

    def _unfinished(self, job_id: str) -> dict[str, Any] | None:
        """The attempt's record while it is unfinished, else None (also when there is none)."""
        try:
            record = self.records.get(job_id)
        except RecordNotFound:
            return None
        return record if record.get("status") in UNFINISHED else None

    def _release(self, model_id: str, job_id: str) -> None:
        if self.holder(model_id) == job_id:
            self._path(model_id).unlink(missing_ok=True)

    def holder(self, model_id: str) -> str | None:
        """The id of the attempt holding the model's lock, if any (None also when the lock cannot be read)."""
        try:
            return self._read_holder(model_id)
        except OSError:
            return None

    def _read_holder(self, model_id: str) -> str | None:
        """The holder; OSError when the lock cannot be read (other than not existing)."""
        try:
            return self._path(model_id).read_text().strip() or None
        except FileNotFoundError:
            return None

    def beat(self, model_id: str, job_id: str, **fields: Any) -> bool:
        """Update the attempt's record (its `updated_at` at least) only while it still holds the model and is
        unfinished; False when it does not (another process failed it as stopped, or took the model over): the
        attempt must not run on, nor undo that verdict."""
        with self._guard():
            if not self._holds(model_id, job_id):
                return False
            self.records.update(job_id, **fields)
            return True

    def holds(self, model_id: str, job_id: str) -> bool:
        """Whether the attempt `job_id` still holds the model and is unfinished (what `beat` checks)."""
        with self._guard():
            return self._holds(model_id, job_id)

    def _holds(self, model_id: str, job_id: str) -> bool:
        """Raises OSError when the lock cannot be read: a passing file-system error must not end an attempt's
        heartbeat, nor let it change the registry unchecked."""
        return self._read_holder(model_id) == job_id and self._unfinished(job_id) is not None

    def running(self, job_id: str) -> bool:
        """Whether the attempt `job_id` is still retraining: unfinished, and not silent."""
        record = self._unfinished(job_id)
        return record is not None and not silent(record, self.records.clock())

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """The exclusive flock every lock and verdict is taken under; OSError (ETIMEDOUT) when another process has
        held it for GUARD_TIMEOUT_S (one stopped while it held it, e.g. suspended with Ctrl-Z): a request thread
        never waits on it for good."""
        descriptor = open_guard(self.records.folder / ".locks")
        try:
            if not take_flock(descriptor, GUARD_TIMEOUT_S):
                raise OSError(errno.ETIMEDOUT, f"the retrain locks stayed held by another process for "
                                               f"{GUARD_TIMEOUT_S:g} s")
            yield
        finally:
            os.close(descriptor)  # closing releases the flock

    def _path(self, model_id: str) -> Path:
        return self.records.folder / f"{model_id}.lock"


class AttemptStopped(RuntimeError):
    """The attempt lost the model's lock (failed as stopped, or taken over): it must not change the registry."""


class HeldRegistry(ModelRegistry):
    """The registry as an attempt may change it: publishing and activating only while it still holds the model."""

    def __init__(self, registry: ModelRegistry, locks: RetrainLocks, model_id: str, job_id: str):
        super().__init__(registry.root, guard_timeout_s=registry.guard_timeout_s)
        self._still_held = lambda: locks.holds(model_id, job_id)
        self._what = f"retrain attempt {job_id} no longer holds {model_id}"

    def publish(self, *args: Any, **kwargs: Any) -> ModelMetadata:
        self._check()
        return super().publish(*args, **kwargs)

    def activate(self, model_id: str, version: int) -> None:
        self._check()
        super().activate(model_id, version)

    def promote(self, model_id: str, version: int, *, over: int | None) -> bool:
        self._check()
        return super().promote(model_id, version, over=over)

    def _check(self) -> None:
        if not self._still_held():
            raise AttemptStopped(f"{self._what} (failed as stopped, or taken over): the registry is left as it is")
