"""One retraining of a model at a time, whoever starts it (the API's jobs, the scheduler's attempts).

A lock file per model beside the retraining records (`<state_path>/retrain/<model_id>.lock`, created
atomically) holds the id of the attempt that retrains the model. A lock whose attempt has ended (its record
is finished or gone) is stale and taken over.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.records import UNFINISHED, RecordNotFound, RecordStore


class RetrainRunning(RuntimeError):
    """The model is being retrained by another attempt."""

    def __init__(self, model_id: str, job_id: str):
        super().__init__(f"model {model_id!r} is being retrained by job {job_id}; wait until it ends "
                         f"(GET /api/v1/models/retrain/{job_id})")
        self.model_id, self.job_id = model_id, job_id

    def __reduce__(self):  # survives pickling across Ray workers
        return (RetrainRunning, (self.model_id, self.job_id))


class RetrainLocks:
    """One lock file per model in the records' folder, holding the id of the attempt that retrains it."""

    def __init__(self, records: RecordStore):
        self.records = records

    def acquire(self, model_id: str, job_id: str) -> None:
        """Raises RetrainRunning naming the running attempt (a lock left by a finished one is taken over)."""
        for _ in range(2):
            try:
                descriptor = os.open(self._path(model_id), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.holder(model_id)
                if holder is not None and self._unfinished(holder):
                    raise RetrainRunning(model_id, holder) from None
                self._path(model_id).unlink(missing_ok=True)  # stale: its attempt ended without releasing it
                continue
            with os.fdopen(descriptor, "w") as file:
                file.write(job_id)
            return
        raise RetrainRunning(model_id, self.holder(model_id) or "?")

    def release(self, model_id: str, job_id: str) -> None:
        """Free the model if `job_id` holds it."""
        if self.holder(model_id) == job_id:
            self._path(model_id).unlink(missing_ok=True)

    def holder(self, model_id: str) -> str | None:
        """The id of the attempt holding the model's lock, if any."""
        try:
            return self._path(model_id).read_text().strip() or None
        except OSError:
            return None

    def _unfinished(self, job_id: str) -> bool:
        try:
            return self.records.get(job_id)["status"] in UNFINISHED
        except RecordNotFound:
            return False

    def _path(self, model_id: str) -> Path:
        return self.records.folder / f"{model_id}.lock"
