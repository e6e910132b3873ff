"""Retraining jobs started by the API: what they may train on, and one running job per model.

`data` names a CSV inside the configured data directory (`args.retrain.data_dir`), never elsewhere on the
cluster; `"source": "store"` trains on the telemetry store instead (like `train_lstm --from-store`). A lock
file per model (created atomically) makes a second job for a model that is being retrained a 409.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict

from app.records import UNFINISHED, RecordNotFound, RecordStore
from app.schemas import RetrainRequest
from app.settings import RetrainDefaults
from core.durations import parse_duration
from core.settings import ConfigError
from core.stores.frame import open_store, stored_frame
from core.telemetry_csv import load_telemetry_csv
from training.power.retrain_spec import ModelOverrides, RetrainRefused, RetrainSpec
from training.settings import load_training_config

DEFAULT_STORE_SPAN = "14d"


class RetrainRunning(RuntimeError):
    """The model is being retrained by another job."""

    def __init__(self, model_id: str, job_id: str):
        super().__init__(f"model {model_id!r} is being retrained by job {job_id}; wait until it ends "
                         f"(GET /api/v1/models/retrain/{job_id})")
        self.job_id = job_id


class DataNotAllowed(ValueError):
    """A request's `data` that is not a CSV file inside the configured data directory."""


class TrainingData(BaseModel):
    """What one job trains on: a CSV file (`path`, shown to users as `label`, default its name) or the store's
    last `since_s` seconds."""

    model_config = ConfigDict(frozen=True)

    source: Literal["csv", "store"]
    path: str | None = None
    label: str | None = None
    since_s: int = parse_duration(DEFAULT_STORE_SPAN)

    def frames(self) -> Callable[[int], pd.DataFrame]:
        """The frame source `retrain_power` reads (called with the model's step)."""
        if self.source == "csv":
            return lambda _step_s: load_telemetry_csv(self.path)

        def read(step_s: int) -> pd.DataFrame:
            store = open_store()
            try:
                return stored_frame(store, self.since_s, step_s)
            finally:
                store.close()

        return read

    def public(self, message: str) -> str:
        """`message` with the file's absolute path replaced by the name the request used."""
        return message.replace(self.path, self.label or Path(self.path).name) if self.path else message


def data_file(requested: str, data_dir: str | None) -> tuple[str, str]:
    """The absolute path of `requested` inside `data_dir`, and the name to show for it.

    Raises:
        DataNotAllowed: no data directory configured; `..` in the path; the path (symlinks resolved) lies
            outside the directory; or it is no file.
    """
    if data_dir is None:
        raise DataNotAllowed("naming a file is disabled: the server has no args.retrain.data_dir; leave `data` "
                             'out (the configured default) or use "source": "store"')
    if "\x00" in requested or ".." in Path(requested).parts:
        raise DataNotAllowed("must name a file inside args.retrain.data_dir, without '..'")
    root = Path(data_dir).resolve()
    path = (root / requested).resolve()  # an absolute `requested` replaces root; symlinks are followed
    if not path.is_relative_to(root):
        raise DataNotAllowed("must name a file inside args.retrain.data_dir")
    label = str(path.relative_to(root))
    if not path.is_file():
        raise DataNotAllowed(f"no file {label!r} in args.retrain.data_dir")
    return str(path), label


class RetrainLocks:
    """One lock file per model under the jobs' folder, holding the id of the job that retrains it."""

    def __init__(self, jobs: RecordStore):
        self.jobs = jobs

    def acquire(self, model_id: str, job_id: str) -> None:
        """Raises RetrainRunning naming the running job (a lock left by a finished job is taken over)."""
        for _ in range(2):
            try:
                descriptor = os.open(self._path(model_id), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder(model_id)
                if holder is not None and self._unfinished(holder):
                    raise RetrainRunning(model_id, holder) from None
                self._path(model_id).unlink(missing_ok=True)  # stale: its job ended without releasing it
                continue
            with os.fdopen(descriptor, "w") as file:
                file.write(job_id)
            return
        raise RetrainRunning(model_id, self._holder(model_id) or "?")

    def release(self, model_id: str, job_id: str) -> None:
        if self._holder(model_id) == job_id:
            self._path(model_id).unlink(missing_ok=True)

    def _holder(self, model_id: str) -> str | None:
        try:
            return self._path(model_id).read_text().strip() or None
        except OSError:
            return None

    def _unfinished(self, job_id: str) -> bool:
        try:
            return self.jobs.get(job_id)["status"] in UNFINISHED
        except RecordNotFound:
            return False

    def _path(self, model_id: str) -> Path:
        return self.jobs.folder / f"{model_id}.lock"


def _launch(*args: Any) -> None:
    from app.tasks import run_retrain  # Ray task; imported here so this module stays free of Ray

    run_retrain.remote(*args)


class RetrainJobs:
    """Start, find and clean up the API's retraining jobs (records under `state_path/retrain`)."""

    def __init__(self, state_path: str, model_path: str, config_path: str | None, defaults: RetrainDefaults,
                 launch: Callable[..., None] = _launch):
        self.records = RecordStore(state_path, "retrain")
        self.locks = RetrainLocks(self.records)
        self.state_path, self.model_path, self.config_path = state_path, model_path, config_path
        self.defaults, self.launch = defaults, launch

    def training_data(self, request: RetrainRequest) -> TrainingData:
        """What `request` trains on. Raises DataNotAllowed (about `data`)."""
        if request.source == "store":
            if request.data is not None:
                raise DataNotAllowed('give either `data` or "source": "store", not both')
            return TrainingData(source="store", since_s=parse_duration(request.since or DEFAULT_STORE_SPAN))
        if request.data is not None:
            path, label = data_file(request.data, self.defaults.data_dir)
            return TrainingData(source="csv", path=path, label=label)
        if self.defaults.data is None:
            raise DataNotAllowed('no training data given and none configured (args.retrain.data); name a file '
                                 'in args.retrain.data_dir or use "source": "store"')
        return TrainingData(source="csv", path=self.defaults.data, label=Path(self.defaults.data).name)

    def submit(self, request: RetrainRequest) -> dict[str, Any]:
        """Record a pending job and start it. Raises DataNotAllowed, RetrainRefused (naming the field),
        RetrainRunning."""
        data = self.training_data(request)
        defaults = self.defaults
        spec = RetrainSpec(config=load_training_config(self.config_path), model_id=request.model_id,
                           overrides=ModelOverrides(horizon=request.prediction_horizon, epochs=request.epochs),
                           num_workers=defaults.num_workers, use_gpu=defaults.use_gpu,
                           cpus_per_worker=defaults.cpus_per_worker, skip_short=data.source == "store",
                           verbose=False)
        try:
            spec.effective_config()  # refuse now what the job would refuse later
        except RetrainRefused:
            raise
        except ConfigError as exc:  # of the request's overrides, the config can refuse only the horizon
            raise RetrainRefused("prediction_horizon", str(exc).rpartition(": ")[2]) from None
        record = self.records.create({"status": "pending", "model_id": request.model_id, "source": data.source})
        try:
            self.locks.acquire(request.model_id, record["id"])
        except RetrainRunning:
            self.records.delete(record["id"])
            raise
        self.launch(self.state_path, record["id"], self.model_path, data, spec)
        return record

    def fail_interrupted(self) -> None:
        """Jobs an app restart interrupted (their Ray tasks ended with the replica that started them)."""
        for record in self.records.unfinished():
            self.records.update(record["id"], status="failed", message="interrupted by an app restart; submit again")
            self.locks.release(record["model_id"], record["id"])
