"""Retrain the power forecaster: train, score on the holdout, publish, and promote it unless the active model does
better.

The one sequence behind `python -m training.train_lstm` and `POST /api/v1/models/retrain`. The last
`holdout_fraction` of every series (from a telemetry store: of all nodes' steps, from one time on, `split` "time")
is never trained on; the new version's metrics are measured there, and so is the active version's (where it never
trained), so the two are compared on the same points (at the active version's step over its
leads when the new one has a finer step or a longer horizon). A new version that answers less than the active one
(a coarser step, a shorter horizon) or cannot be compared fairly is registered but not activated unless
activation is forced.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pandas as pd

from core.registry import ActivationFailed, ModelRegistry
from training.power.dataset import PreparedData, prepare
from training.power.forecaster import PowerForecaster
from training.power.holdout import Challenger, HoldoutMetrics, Incomparable, Incumbent, holdout_metrics, score_incumbent
from training.power.retrain_result import Decision, RetrainResult, TrainingFacts, activation_failed, promote
from training.power.retrain_spec import Activation, FrameSource, RetrainSpec
from training.power.served import DIVERGED, TrainingDiverged, train_served
from training.power.windows import HOLDOUT_TOO_SHORT, TRAINING_PART_TOO_SHORT, NotEnoughData, Role
from training.settings import TrainingConfig

SYNTHETIC_PREFIX = "syn-"  # node ids of training.synthetic traces


def retrain_power(source: FrameSource, spec: RetrainSpec, *, registry: ModelRegistry) -> RetrainResult:
    """Train a forecaster on `source` as `spec` says, register it in `registry`, activate it if it wins.

    Raises:
        ConfigError: the overrides make an invalid config.
        RetrainRefused: too few epochs, or a horizon too short for a model that may be served.
        NotEnoughData: a series, the training part or the holdout is too short for one window.
        TrainingDiverged: the LSTM's validation error or the new forecaster's held-out MAE is not a number.
        TelemetryDataError, ValueError, OSError: from `source`.
    """
    config = spec.effective_config()
    predictor, model_config = config.predictor, config.models.power_predictor
    frame = source if isinstance(source, pd.DataFrame) else source(predictor.step)
    synthetic = bool(frame["node_id"].astype(str).str.startswith(SYNTHETIC_PREFIX).all())
    prepared = prepare(frame, step_s=predictor.step, max_gap_s=predictor.max_gap, features=config.features,
                       sequence_length=model_config.sequence_length, horizon=predictor.horizon_steps,
                       train_fraction=1.0 - spec.holdout_fraction, skip_short=spec.skip_short, split=spec.split)
    if len(prepared.windows(Role.TEST)) == 0:  # found now, not after the whole training run
        raise NotEnoughData(HOLDOUT_TOO_SHORT)
    prepared.require_training_windows(1.0 - spec.holdout_fraction, model_config.interval_coverage,
                                      remedy=TRAINING_PART_TOO_SHORT)
    forecaster, weights, _ = train_served(prepared, model_config, scaling=spec.scaling, verbose=spec.verbose,
                                          storage_path=config.storage_path)
    coverage, tolerance = model_config.interval_coverage, model_config.confidence_tolerance
    metrics = holdout_metrics(forecaster, prepared, coverage, tolerance)
    if not math.isfinite(metrics.mae):
        raise TrainingDiverged(f"the new forecaster's held-out MAE is not a number: {DIVERGED}")
    challenger = Challenger(forecaster, metrics, prepared, frame, predictor.max_gap, synthetic=synthetic)
    incumbent = score_incumbent(registry, spec.model_id, challenger)
    decision = decide(spec.activation, incumbent)
    facts = TrainingFacts(seed=model_config.seed, best_epoch=weights.best_epoch, epochs_run=weights.epochs_run,
                          refit_epochs=weights.refit_epochs,
                          duration_s=round(weights.duration_s, 1), num_workers=weights.num_workers,
                          use_gpu=weights.use_gpu, holdout_fraction=spec.holdout_fraction,
                          worker_nodes=weights.worker_nodes, served=forecaster.served_method,
                          gbm_half_life_steps=forecaster.gbm.spec.half_life_steps if forecaster.gbm else None,
                          lstm_half_life_steps=weights.half_life_steps, lstm_relative_power=weights.relative_power)
    try:
        version = _publish(registry, spec.model_id, forecaster, prepared, config, metrics, facts,
                           synthetic=synthetic, activate=decision == "forced",
                           may_activate=decision != "not_requested")
    except ActivationFailed as failed:  # registered all the same: the retraining has not failed
        version, decision = activation_failed(failed)
    decision = promote(registry, spec.model_id, version, decision, None if incumbent is None else incumbent.version)
    compared = incumbent if isinstance(incumbent, Incumbent) else None
    return RetrainResult(model_id=spec.model_id, version=version, decision=decision, metrics=metrics,
                         incumbent=compared, incomparable=incumbent if compared is None else None,
                         synthetic=synthetic, training=facts)


def decide(activation: Activation, incumbent: Incumbent | Incomparable | None) -> Decision:
    """Whether the new version goes into service: as asked, else if none is active or it is no worse than the
    active one on the same points; never when the two could not be compared."""
    if activation == "never":
        return "not_requested"
    if activation == "force":
        return "forced"
    if incumbent is None:
        return "no_incumbent"
    if isinstance(incumbent, Incomparable):
        return "not_comparable"
    beats = incumbent.challenger_mae <= incumbent.mae or not math.isfinite(incumbent.mae)  # one that diverged
    return "beat_incumbent" if beats else "did_not_beat"


def _publish(registry: ModelRegistry, model_id: str, forecaster: PowerForecaster, prepared: PreparedData,
             config: TrainingConfig, metrics: HoldoutMetrics, facts: TrainingFacts, *, synthetic: bool,
             activate: bool, may_activate: bool) -> int:
    """Register the forecaster with what it was trained on and how it scored; returns its version (`may_activate`:
    whether the promotion that follows may activate it; ModelRegistry.publish)."""
    predictor, model_config = config.predictor, config.models.power_predictor
    # the version is published from this folder: a leftover copy must not fail the published retraining
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as folder:
        forecaster.save(Path(folder))
        metadata = registry.publish(
            model_id, Path(folder), model_type="lstm", activate=activate, may_activate=may_activate,
            data_span=prepared.data_span(synthetic=synthetic),
            feature_spec={"names": prepared.pipeline.feature_names, "features": list(config.features),
                          "step_s": predictor.step, "sequence_length": model_config.sequence_length,
                          "horizon_steps": predictor.horizon_steps},
            feature_spec_hash=prepared.pipeline.spec_hash,
            config=config.model_dump(mode="json"),
            metrics=metrics.model_dump(),
            training={**facts.model_dump(), "synthetic_data": synthetic},
        )
    return metadata.version
