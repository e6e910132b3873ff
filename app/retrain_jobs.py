"""Retraining jobs started by the API: what they may train on, and one running attempt per model.

The power forecaster trains on a telemetry CSV or the telemetry store (`"source": "store"`, like
`train_lstm --from-store`); the cost model on a CSV of past jobs or, for demos, jobs generated from the price
catalog (`"source": "catalog"`, the default when no jobs file is configured, like `train_gbm` without --data).
A request's `data` names a file inside the configured data directory (`args.retrain.data_dir`), never
elsewhere on the cluster. Jobs are recorded beside the scheduler's attempts and the training command lines' runs
and share their per-model lock (training/retrain_lock.py): a second attempt on a model that is being retrained is a
409.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from app.schemas import RetrainRequest
from app.settings import RetrainDefaults
from core.durations import parse_duration
from core.records import UNFINISHED, RecordStore
from core.registry import ModelRegistry
from core.settings import ConfigError
from training.cli_attempt import CLI_STOPPED, CLI_TRIGGER
from training.cost.retrain import CostRetrainSpec
from training.power.retrain_spec import ModelOverrides, RetrainRefused, RetrainSpec, retrained_shape
from training.power.scheduler import INTERRUPTED, SCHEDULED
from training.retrain_attempt import forget_old_attempts
from training.retrain_data import DEFAULT_STORE_SPAN, JobRecordsData, TrainingData, training_span_s
from training.retrain_lock import SILENT_AFTER_S, RetrainLocks, RetrainRunning, silent
from training.settings import Resolution, TrainingConfig, load_training_config

logger = logging.getLogger("ray.serve")
_POWER_ONLY = ("since", "prediction_horizon", "epochs")
_STOPPED = {"api": f"stopped: its task gave no sign of life for {SILENT_AFTER_S // 60} min (the app restarted or its "
                   "worker died); submit again",
            CLI_TRIGGER: CLI_STOPPED, **dict.fromkeys(SCHEDULED, INTERRUPTED)}
"""The verdict on an attempt gone silent, by who started it (a scheduled one too: its scheduler may be gone for good,
scheduling turned off, and no longer recover it)."""


@dataclass(frozen=True)
class ServedModels:
    """The model ids a retrain may name: the power models served (the default first) and the cost model."""

    power: tuple[str, ...]
    cost: str

    def resolve(self, model_id: str | None) -> str:
        """`model_id`, or the default power model when None. Raises RetrainRefused for an id not served here."""
        if model_id is None:
            return self.power[0]
        if model_id == self.cost or model_id in self.power:
            return model_id
        raise RetrainRefused("model_id", f"{model_id!r} is not served here: power models {', '.join(self.power)}; "
                                         f"cost model {self.cost}")


class DataNotAllowed(ValueError):
    """A request's `data` that is not a CSV file inside the configured data directory."""


def data_file(requested: str, data_dir: str | None) -> tuple[str, str]:
    """The absolute path of `requested` inside `data_dir`, and the name to show for it.

    Raises:
        DataNotAllowed: no data directory configured; `..` in the path; the path (symlinks resolved) lies
            outside the directory; it is no file; or it is not named .csv.
    """
    if data_dir is None:
        raise DataNotAllowed("naming a file is disabled: the server has no args.retrain.data_dir; leave `data` "
                             'out (the configured default) or use "source": "store"')
    if "\x00" in requested or ".." in Path(requested).parts:
        raise DataNotAllowed("must name a file inside args.retrain.data_dir, without '..'")
    root = Path(data_dir).resolve()
    try:
        path = (root / requested).resolve()  # an absolute `requested` replaces root; symlinks are followed
        inside = path.is_relative_to(root)
        label = str(path.relative_to(root)) if inside else ""
        is_file = inside and path.is_file()
    except OSError as exc:  # a name too long for the file system: no file it can name
        raise DataNotAllowed(f"names no readable file in args.retrain.data_dir ({exc.strerror or 'invalid'})") from None
    except RuntimeError:  # Python 3.11-3.12 raise this for a symlink loop
        raise DataNotAllowed("names no readable file in args.retrain.data_dir (a symlink loop)") from None
    if not inside:
        raise DataNotAllowed("must name a file inside args.retrain.data_dir")
    if not is_file:
        raise DataNotAllowed(f"no file {label!r} in args.retrain.data_dir")
    if path.suffix.lower() != ".csv":
        raise DataNotAllowed(f"{label!r} is not a CSV file (.csv): training reads the canonical telemetry CSV, "
                             "or job records for the cost model")
    return str(path), label


class LaunchFailed(RuntimeError):
    """The retraining task could not be started (the cluster refused it); the attempt is recorded as failed."""


def _launch(*args: Any) -> None:
    """Start the attempt as a Ray task on this replica's node, which holds `state_path` (a volume on the head in the
    KubeRay manifests): elsewhere the task could not write its record."""
    import ray  # imported here so this module stays free of Ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from app.tasks import run_retrain

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    run_retrain.options(scheduling_strategy=here).remote(*args)


class RetrainJobs:
    """Start, list and clean up the API's retraining jobs (records under `state_path/retrain`)."""

    def __init__(self, state_path: str, model_path: str, config_path: str | None, defaults: RetrainDefaults,
                 models: ServedModels, launch: Callable[..., None] = _launch):
        self.records = RecordStore(state_path, "retrain", retention_s=defaults.retention)
        self.locks = RetrainLocks(self.records)
        self.state_path, self.model_path, self.config_path = state_path, model_path, config_path
        self.defaults, self.models, self.launch = defaults, models, launch

    def training_data(self, request: RetrainRequest, resolution: Resolution | None = None) -> TrainingData:
        """What a power `request` trains on (from the store without `since`: the span the model's `resolution` needs,
        at least the default). Raises DataNotAllowed (about `data`)."""
        if request.source == "store":
            if request.data is not None:
                raise DataNotAllowed('give either `data` or "source": "store", not both')
            if request.since is not None:
                return TrainingData(source="store", since_s=parse_duration(request.since))
            return TrainingData(source="store",
                                since_s=training_span_s(resolution, parse_duration(DEFAULT_STORE_SPAN)))
        if request.source == "catalog":
            raise RetrainRefused("source", 'the power forecaster trains on telemetry: "csv" or "store"')
        if request.since is not None:
            raise RetrainRefused("since", 'only with "source": "store" (a CSV is read whole)')
        if request.data is not None:
            path, label = data_file(request.data, self.defaults.data_dir)
            return TrainingData(source="csv", path=path, label=label)
        if self.defaults.data is None:
            raise DataNotAllowed('no training data given and none configured (args.retrain.data); name a file '
                                 'in args.retrain.data_dir or use "source": "store"')
        return TrainingData(source="csv", path=self.defaults.data, label=Path(self.defaults.data).name)

    def job_records(self, request: RetrainRequest) -> JobRecordsData:
        """What a cost `request` trains on. Raises DataNotAllowed (about `data`), RetrainRefused (a power-only
        field, or the store as source)."""
        given = [name for name in _POWER_ONLY if getattr(request, name) is not None]
        if given:
            raise RetrainRefused(given[0], "applies to the power forecaster only")
        if request.source == "store":
            raise RetrainRefused("source", 'the cost model trains on past jobs: "csv" (a jobs file) or "catalog"')
        asked_csv = request.source == "csv" and "source" in request.model_fields_set
        if request.source == "catalog" or (request.data is None and self.defaults.cost_data is None and not asked_csv):
            if request.data is not None:
                raise DataNotAllowed('give either `data` or "source": "catalog", not both')
            return JobRecordsData(source="catalog", seed=secrets.randbelow(2**31))
        if request.data is None and self.defaults.cost_data is None:
            raise DataNotAllowed('"source": "csv" without `data`, and no jobs file configured (args.retrain.'
                                 'cost_data); name a file in args.retrain.data_dir or use "source": "catalog"')
        if request.data is not None:
            path, label = data_file(request.data, self.defaults.data_dir)
            return JobRecordsData(source="csv", path=path, label=label)
        return JobRecordsData(source="csv", path=self.defaults.cost_data, label=Path(self.defaults.cost_data).name)

    def submit(self, request: RetrainRequest) -> dict[str, Any]:
        """Record a pending job and start it. Raises DataNotAllowed, RetrainRefused (naming the field),
        RetrainRunning, LaunchFailed (the job is then recorded as failed and the model left free)."""
        model_id = self.models.resolve(request.model_id)
        try:
            config = load_training_config(self.config_path)
        except ConfigError as exc:  # edited since the start: what and where go to the log, not to the client
            logger.warning("retrain job for %s not started: the service's config is invalid: %s", model_id, exc)
            raise LaunchFailed("the service's config file no longer validates (details in the service log); fix it, "
                               "then try again") from None
        data: TrainingData | JobRecordsData
        spec: RetrainSpec | CostRetrainSpec
        if model_id == self.models.cost:
            data = self.job_records(request)
            spec = CostRetrainSpec(config=config, model_id=model_id, seed=data.seed, synthetic=data.synthetic,
                                   data=data.describe())
        else:
            data = self.training_data(request, config.predictor.resolution(model_id))
            spec = self._power_spec(model_id, request, config)
        try:
            forget_old_attempts(self.records)
        except OSError as exc:  # the next attempt deletes them; this one starts all the same
            logger.warning("retrain jobs: old records not deleted: %s", exc)
        try:
            record = self.records.create({"status": "pending", "model_id": model_id, "source": data.source,
                                          "trigger": "api", "data": data.describe()})
        except OSError as exc:
            logger.warning("retrain job for %s not started: its record cannot be written: %s", model_id, exc)
            raise LaunchFailed("the job could not be recorded (a storage error on the state volume); try again") \
                from None
        try:
            self.locks.acquire(model_id, record["id"])
        except RetrainRunning:
            self.records.delete(record["id"])
            raise
        except OSError as exc:
            self.records.delete(record["id"])
            logger.warning("retrain job for %s not started: its lock cannot be read: %s", model_id, exc)
            raise LaunchFailed("the model's retrain lock could not be read; try again") from None
        try:
            self.launch(self.state_path, record["id"], self.model_path, data, spec, self.defaults.keep_versions)
        except Exception as exc:  # noqa: BLE001 - the attempt fails and the model is free again, never locked
            logger.warning("retrain job %s could not be started", record["id"], exc_info=True)
            message = f"the retraining task could not be started ({type(exc).__name__}); try again"
            try:
                self.records.update(record["id"], status="failed", message=message)
            except OSError as cleanup:  # a pending record without a task is failed once silent
                logger.warning("retrain job %s: not recorded as failed: %s", record["id"], cleanup)
            try:
                self.locks.release(model_id, record["id"])
            except OSError as cleanup:  # taken over once its record is silent
                logger.warning("retrain job %s: its lock on %s not released: %s", record["id"], model_id, cleanup)
            raise LaunchFailed(message) from None
        return record

    def _power_spec(self, model_id: str, request: RetrainRequest, config: TrainingConfig) -> RetrainSpec:
        """The run for a power model: the request's overrides, the rest of the shape kept from the version serving
        now, else from the model's resolution in the config."""
        defaults = self.defaults
        shape = retrained_shape(ModelRegistry(self.model_path), config, model_id)
        overrides = ModelOverrides(horizon=request.prediction_horizon, epochs=request.epochs)
        try:  # the shape kept alone: a refusal here is the config's, whatever the request says
            ModelOverrides().keeping_shape(shape).apply(config, source=None)
        except ConfigError as exc:
            raise RetrainRefused("model_id", f"the service config cannot retrain {model_id} at the shape it keeps "
                                             f"(the served version's step, horizon and window): {exc}") from None
        spec = RetrainSpec(config=config, model_id=model_id, overrides=overrides.keeping_shape(shape),
                           scaling=defaults.train_scaling(), skip_short=request.source == "store",
                           split="time" if request.source == "store" else "series", verbose=False)
        try:
            spec.overrides.apply(config, source=None)  # refuse now what the job would refuse later
            spec.effective_config()
        except RetrainRefused:
            raise
        except ConfigError as exc:  # the shape alone passed: the request's horizon is what the config refuses
            raise RetrainRefused("prediction_horizon", str(exc).partition(": ")[2]) from None
        return spec

    def newest(self, model_id: str | None, limit: int) -> list[dict[str, Any]]:
        """At most `limit` attempts (the API's and the scheduler's), newest first, of `model_id` or of every model;
        from one read of the records, in which every attempt that stopped is failed first (`fail_stopped`)."""
        now = self.records.clock()
        records = [self._failed_if_stopped(record, now) for record in self.records.newest(None)]
        return [record for record in records if model_id is None or record.get("model_id") == model_id][:limit]

    def get(self, job_id: str) -> dict[str, Any]:
        """One attempt (failed first if it is an API job whose task stopped); RecordNotFound when there is none."""
        return self._failed_if_stopped(self.records.get(job_id), self.records.clock())

    def _failed_if_stopped(self, record: dict[str, Any], now: datetime) -> dict[str, Any]:
        """The record, failed first where `_fail_if_stopped` fails it."""
        if record.get("status") not in UNFINISHED:
            return record
        try:
            return self._fail_if_stopped(record, now) or record
        except OSError as exc:  # the verdict cannot be written just now: the record as it is
            logger.warning("retrain jobs: %s not failed as stopped yet: %s", record.get("id"), exc)
            return record

    def fail_stopped(self) -> None:
        """Fail the API jobs whose task stopped (silent for `SILENT_AFTER_S`: the replica that started it or its
        worker died), the command-line runs and scheduled attempts whose process died, and free their models. A job
        of another replica that is alive keeps running."""
        now = self.records.clock()
        for record in self.records.unfinished():  # one unreadable or unwritable just now: the others go on
            self._failed_if_stopped(record, now)

    def _fail_if_stopped(self, record: dict[str, Any], now: datetime) -> dict[str, Any] | None:
        """The record failed, when it is an unfinished API job or command-line run gone silent; else None."""
        trigger = record.get("trigger", "api")
        message = _STOPPED.get(trigger) if isinstance(trigger, str) else None  # another tool's: not ours to fail
        if record.get("status") not in UNFINISHED or message is None or not silent(record, now):
            return None
        if not isinstance(record.get("model_id"), str):  # another version's or tool's: no model of ours to free
            logger.warning("retrain jobs: %s names no model; not failed as stopped", record["id"])
            return None
        return self.locks.fail(record["model_id"], record["id"], message, lambda fresh: silent(fresh, now))
