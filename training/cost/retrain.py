"""Retrain the job cost model: train, score on held-out jobs, publish, and promote if it beats the active model.

The cost model's counterpart of `training.power.retrain.retrain_power`. A share of the job records
(`holdout_fraction`) is set aside before training, chosen by a hash of each record's values (`held_out`): the same
job is held out in every run, whatever the seed, the file's order or the jobs added since. The new version (the
challenger) is scored there, and so is the active version (the champion), on the held-out jobs it never trained on
either: those below both runs' fractions, for a champion that was held out the same way. A champion from before
(a seeded shuffle) may have trained on some of them, which can only favour keeping it; its reason says so. The
challenger goes into service only when its MAE is no worse; otherwise it stays registered, inactive, with the reason.
"""

from __future__ import annotations

import decimal
import hashlib
import logging
import math
import numbers
from collections.abc import Callable
from functools import partial

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from core.registry import ActivationFailed, ModelRegistry
from core.registry_metadata import ModelId, ModelMetadata, ModelUnreadable
from training.cost.catalog import RECORD_COLUMNS, PriceCatalog, default_catalog
from training.cost.jobs import NONE
from training.cost.model import CostModel, CostModelError
from training.cost.publish import publish_cost_model
from training.power.retrain_result import (
    ACTIVATING,
    ACTIVATION_FAILED,
    CHAMPION_CHANGED,
    Decision,
    activation_failed,
    describe_decision,
    promote,
)
from training.power.retrain_spec import Activation
from training.served_stand_in import load_served
from training.settings import TrainingConfig

logger = logging.getLogger(__name__)

RecordSource = pd.DataFrame | Callable[[], pd.DataFrame]
MIN_HOLDOUT_RECORDS = 20
HASHED_HOLDOUT = "record_hash/v1"  # `training.holdout` of a version held out by `record_shares`
_REASONS: dict[Decision, str] = {"no_incumbent": "no active model", "forced": "activation forced",
                                 "not_requested": "activation not requested", "champion_changed": CHAMPION_CHANGED,
                                 "activation_failed": ACTIVATION_FAILED}


class CostRetrainSpec(BaseModel):
    """What one retraining of the cost model is asked to do."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    config: TrainingConfig = Field(description="the service config (models.cost_predictor)")
    model_id: ModelId = "cost_gbm"
    catalog: PriceCatalog | None = Field(None, description="price catalog of the list-price offsets (default: "
                                                           "configs/prices.yaml)")
    seed: int = Field(0, ge=0, description="seed of the trees, their calibration split and generated jobs (the holdout "
                                           "is chosen by a hash of each record)")
    holdout_fraction: float = Field(0.15, gt=0.0, lt=0.5, description="share of the records never trained on")
    activation: Activation = "if_better"
    synthetic: bool = Field(False, description="the records were generated from the price catalog")
    data: str | None = Field(None, description="what the records are, as recorded in the registry")


class CostIncumbent(BaseModel):
    """The active version's MAE on the challenger's held-out records, and the challenger's on the same ones."""

    model_config = ConfigDict(frozen=True)

    version: int
    mae: float
    challenger_mae: float
    jobs: int | None = None  # held-out jobs both were scored on (None: saved before it was recorded)
    left_out: int = 0  # held-out jobs whose GPU type the active version's catalog does not have
    unseen: bool = True  # whether the active version never trained on them (False: held out by a seeded shuffle)
    scored_version: int | None = None  # scored in place of `version`, which cannot be loaded: what replicas serve


class CostIncomparable(BaseModel):
    """The active version, when it could not be scored (e.g. unreadable), and why."""

    model_config = ConfigDict(frozen=True)

    version: int
    why: str


class CostRetrainResult(BaseModel):
    """The registered version and the activation decision, with the scores it rests on."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model_id: str
    version: int
    decision: Decision
    metrics: dict[str, int | float]  # the challenger's scores on the held-out records (currency units, percent)
    incumbent: CostIncumbent | None = None
    incomparable: CostIncomparable | None = None
    records: int  # job records read, holdout included
    synthetic: bool
    currency: str

    @computed_field
    @property
    def activated(self) -> bool:
        return self.decision in ACTIVATING

    @computed_field
    @property
    def reason(self) -> str:
        """The activation decision in words."""
        incumbent = self.incumbent
        comparison = "" if incumbent is None else (f" on the same held-out jobs: MAE {incumbent.challenger_mae:.2f} "
                                                   f"vs {incumbent.mae:.2f} {self.currency}")
        if incumbent is not None and incumbent.left_out:
            comparison += (f" ({incumbent.left_out} held-out jobs left out: GPU types the active version's catalog "
                           f"does not have)")
        if incumbent is not None and incumbent.scored_version is not None:
            comparison += (f" (it cannot be loaded: version {incumbent.scored_version}, served in its place, was "
                           "scored)")
        if incumbent is not None and not incumbent.unseen:
            comparison += (" (the active version was held out by a seeded shuffle and may have trained on some of "
                           "them, which favours keeping it)")
        return describe_decision(self.decision, _REASONS, incumbent and incumbent.version, comparison,
                                 self.incomparable and (self.incomparable.version, self.incomparable.why))

    @model_validator(mode="after")
    def _decision_has_its_grounds(self) -> CostRetrainResult:
        if self.incumbent is None and self.decision in ("beat_incumbent", "did_not_beat"):
            raise ValueError(f"decision {self.decision!r} needs the incumbent it was compared with")
        if self.incomparable is None and self.decision == "not_comparable":
            raise ValueError("decision 'not_comparable' needs the active version and why")
        return self

    def summary_lines(self) -> list[str]:
        """The outcome as `train_gbm` would report it, one line per fact."""
        m, label = self.metrics, " (trained on SYNTHETIC jobs: for demos only)" if self.synthetic else ""
        state = "activated" if self.activated else "NOT activated"
        groups = ", ".join(f"{name} {m[key]:.1%}" for name, key in (("spot jobs", "coverage_spot"),
                                                                     ("on demand", "coverage_on_demand")) if key in m)
        return [f"registered {self.model_id} version {self.version}{label}; holdout MAE {m['mae']:.2f} "
                f"{self.currency}, MAPE {m['mape']:.1f}% (list price {m['list_price_mape']:.1f}%), "
                f"{m['nominal_coverage']:.0%} interval covers {m['coverage']:.1%}"
                + (f" ({groups})" if groups else "") + f", mean confidence "
                f"{m['mean_confidence']:.3f} vs hit rate {m['hit_rate']:.3f}", f"{state}: {self.reason}"]


def retrain_cost(source: RecordSource, spec: CostRetrainSpec, *, registry: ModelRegistry) -> CostRetrainResult:
    """Train a cost model on the job records of `source`, register it in `registry`, activate it if it wins.

    Raises:
        ValueError: too few records, or records the model refuses (naming the column).
    """
    records = (source() if callable(source) else source).reset_index(drop=True)
    catalog = spec.catalog or default_catalog()
    fraction = spec.holdout_fraction
    shares = record_shares(records)
    held = shares < fraction
    if held.sum() < MIN_HOLDOUT_RECORDS:
        needed = math.ceil(2 * MIN_HOLDOUT_RECORDS / fraction)
        raise ValueError(f"{len(records)} job records leave {int(held.sum())} for the holdout (the records whose hash "
                         f"falls in its {fraction:.0%}); need at least {MIN_HOLDOUT_RECORDS}: give more records "
                         f"({needed} or more hold that many out all but always)")
    holdout, train = records[held], records[~held]
    model = CostModel(catalog)
    fitted = model.fit(train, spec.config.models.cost_predictor, seed=spec.seed)
    metrics = {**model.evaluate(holdout), "n_train": fitted["n_train"], "n_calibration": fitted["n_calibration"],
               "n_holdout": len(holdout), "conformal_margin": fitted["conformal_margin"]}
    champion = _score_champion(registry, spec.model_id, holdout, shares[held], fraction, model, spec.synthetic)
    decision = _decide(spec.activation, champion)
    try:
        version = publish_cost_model(
            registry, spec.model_id, model, spec.config, metrics, activate=decision == "forced",
            may_activate=decision != "not_requested",
            training={"seed": spec.seed, "records": len(records), "synthetic_data": spec.synthetic, "data": spec.data,
                      "currency": catalog.currency, "holdout_fraction": spec.holdout_fraction,
                      "holdout": HASHED_HOLDOUT})
    except ActivationFailed as failed:  # registered all the same: the retraining has not failed
        version, decision = activation_failed(failed)
    decision = promote(registry, spec.model_id, version, decision, None if champion is None else champion.version)
    return CostRetrainResult(
        model_id=spec.model_id, version=version, decision=decision, metrics=metrics, synthetic=spec.synthetic,
        incumbent=champion if isinstance(champion, CostIncumbent) else None,
        incomparable=champion if isinstance(champion, CostIncomparable) else None, records=len(records),
        currency=catalog.currency)


def record_shares(records: pd.DataFrame) -> np.ndarray:
    """Per record, a share in [0, 1) from a hash (BLAKE2b) of its RECORD_COLUMNS values written one way (`_canonical`),
    in a fixed order: what holds a job out of training (`< holdout_fraction`) the same way in every run, whatever
    the seed, the order, or the library versions (HASHED_HOLDOUT names the scheme)."""
    rows = records[list(RECORD_COLUMNS)].itertuples(index=False, name=None)
    digests = (hashlib.blake2b("\x1f".join(map(_canonical, row)).encode(), digest_size=8).digest() for row in rows)
    return np.fromiter((int.from_bytes(digest, "big") / 2**64 for digest in digests), dtype=float,
                       count=len(records))


def _canonical(value: object) -> str:
    """A record value as text, one way whatever its type: missing "", a boolean "1"/"0", a number as a float."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, bool | np.bool_):
        return "1" if value else "0"
    if isinstance(value, numbers.Real | decimal.Decimal):  # numpy's too
        return repr(float(value) + 0.0)  # + 0.0: -0.0 is 0.0
    return str(value)


def _score_champion(registry: ModelRegistry, model_id: str, holdout: pd.DataFrame, shares: np.ndarray,
                    fraction: float, challenger: CostModel,
                    synthetic: bool) -> CostIncumbent | CostIncomparable | None:
    """The served version (the active one, else the latest) scored on the held-out jobs it never trained on (for
    one held out by the same hash: those below its fraction too) and can price (a GPU type added to the catalog
    since it was trained is left out, or its retraining could never be compared), and the challenger on the very
    same jobs. An active version that cannot be loaded is replaced, as replicas replace it, by the newest version
    served before it that loads (`CostIncumbent.scored_version`). A challenger trained on generated jobs
    (`synthetic`) is not compared with a version trained on real ones: scored on generated jobs, it would replace the
    model of the jobs that matter."""
    version = registry.served_version(model_id)
    if version is None:
        return None
    try:
        scored, (metadata, champion) = load_served(registry, model_id, version, partial(_load, registry, model_id),
                                                   _UNLOADABLE, _passing)
        training = metadata.training or {}
        if synthetic and (training.get("synthetic_data") is False  # the scored version's, or a stand-in's active
                          or scored != version and _synthetic_data(registry, model_id, version) is False):
            return CostIncomparable(version=version, why="it was trained on real job records, and this challenger "
                                                         "on jobs generated from the price catalog")
        unseen = training.get("holdout") == HASHED_HOLDOUT
        if unseen:
            holdout = holdout[shares < min(fraction, float(training.get("holdout_fraction", fraction)))]
            if len(holdout) < MIN_HOLDOUT_RECORDS:
                return CostIncomparable(version=version, why=f"only {len(holdout)} held-out jobs lie outside its own "
                                                             "training part (a smaller holdout fraction)")
        common = holdout[_priceable(holdout, champion.catalog)]
        if len(common) < MIN_HOLDOUT_RECORDS:
            return CostIncomparable(version=version, why=f"only {len(common)} of the {len(holdout)} held-out jobs use "
                                                         "GPU types its catalog has")
        mae = champion.evaluate(common)["mae"]
    except (CostModelError, LookupError, OSError, ValueError) as exc:
        logger.warning("active %s version %d cannot be scored: %s", model_id, version, exc)
        return CostIncomparable(version=version, why=f"it cannot be loaded ({type(exc).__name__}; details in the log)")
    return CostIncumbent(version=version, mae=mae, challenger_mae=challenger.evaluate(common)["mae"],
                         jobs=len(common), left_out=len(holdout) - len(common), unseen=unseen,
                         scored_version=None if scored == version else scored)


_UNLOADABLE = (CostModelError, LookupError, OSError, ValueError)


def _load(registry: ModelRegistry, model_id: str, version: int) -> tuple[ModelMetadata, CostModel]:
    folder, metadata = registry.get(model_id, version)
    return metadata, CostModel.load(folder)


def _synthetic_data(registry: ModelRegistry, model_id: str, version: int) -> bool | None:
    """Whether `version` trained on generated jobs, where its metadata says (None where it cannot be read)."""
    try:
        return (registry.get(model_id, version)[1].training or {}).get("synthetic_data")
    except _UNLOADABLE:
        return None


def _passing(exc: Exception) -> bool:
    """A storage error that may pass (a version's metadata or model file that cannot be read just now), not a version
    missing or damaged."""
    cause = exc.__cause__ if isinstance(exc, CostModelError) else exc
    return isinstance(exc, ModelUnreadable) or (isinstance(cause, OSError) and not isinstance(cause, FileNotFoundError))


def _priceable(records: pd.DataFrame, catalog: PriceCatalog) -> np.ndarray:
    """Per record: whether `catalog` can price its GPU type (no GPU, the default type, or a type it has)."""
    counts = pd.to_numeric(records["gpu_count"], errors="coerce").fillna(0).to_numpy()
    names = records["gpu_type"].to_numpy() if "gpu_type" in records else [None] * len(records)
    kinds = (catalog.job_gpu_type(count, name) for count, name in zip(counts, names, strict=True))
    return np.array([kind == NONE or catalog.gpu_type_name(kind) is not None for kind in kinds], dtype=bool)


def _decide(activation: Activation, champion: CostIncumbent | CostIncomparable | None) -> Decision:
    if activation == "never":
        return "not_requested"
    if activation == "force":
        return "forced"
    if champion is None:
        return "no_incumbent"
    if isinstance(champion, CostIncomparable):
        return "not_comparable"
    beats = champion.challenger_mae <= champion.mae or not math.isfinite(champion.mae)  # a champion gone bad
    return "beat_incumbent" if beats else "did_not_beat"
