"""Train the forecaster that serves: the LightGBM partner, the LSTM, and the choice and calibration of the blend.

Everything is fitted on the training part. The GBM first, on the FIT windows (early-stopped on CALIB), where its
recency weighting is chosen (training.power.recency). The LSTM then trains on FIT, early-stopped on CALIB, and where
the GBM chose a half-life once more with it in the same Ray Train run, the run with the lower CALIB MAE kept. The
choice and the calibration of the served forecast use the CALIB windows (training.power.blend), forecasts of data
neither model trained on. Both models are then trained again on FIT and CALIB together, so that the newest part of
the training data is in what serves: the GBM here (`DirectLightGBM.refit`, with the weighting chosen; it is also the
backtest's baseline), the LSTM by Ray Train (`fit.refine`), whose weights `train_served` puts in service last. The
test part is never seen. A training part too short to fit and judge a GBM on leaves the LSTM served alone,
unweighted.
"""

from __future__ import annotations

import math
from typing import Any

from training.metrics import point_metrics
from training.power.blend import choose_served, time_halves
from training.power.dataset import PreparedData, train_forecaster
from training.power.forecaster import PowerForecaster
from training.power.gbm import DirectLightGBM
from training.power.ray_trainer import TrainedWeights
from training.power.recency import candidate_half_lives, window_ages
from training.power.windows import Role, Windows
from training.settings import PowerPredictorConfig


class TrainingDiverged(ValueError):
    """The trained forecaster's error is not a number (weights that diverged): it is not served nor registered."""


DIVERGED = ("its training diverged (try a lower models.power_predictor.learning_rate); nothing was "
            "registered")


MIN_GBM_WINDOWS = 30
"""The fewest FIT and CALIB windows each on which a LightGBM partner is fitted and the blend chosen."""


def fit_gbm(prepared: PreparedData, seed: int) -> DirectLightGBM:
    """The direct LightGBM early-stopped on the CALIB windows, then refitted on the whole training part."""
    gbm = _fit_gbm(prepared, prepared.windows(Role.FIT), prepared.windows(Role.CALIB), seed)
    return _refit(gbm, prepared)


def fit_partner(prepared: PreparedData, seed: int) -> DirectLightGBM | None:
    """The LightGBM partner fitted on FIT and early-stopped on CALIB, its recency half-life chosen there (not yet
    refitted); None with fewer than `MIN_GBM_WINDOWS` FIT or CALIB windows, where the LSTM is served alone."""
    fit, calib = prepared.windows(Role.FIT), prepared.windows(Role.CALIB)
    if min(len(fit), len(calib)) < MIN_GBM_WINDOWS:
        return None
    return _fit_gbm(prepared, fit, calib, seed)


def train_served(prepared: PreparedData, model_config: PowerPredictorConfig, **run_options: Any,
                 ) -> tuple[PowerForecaster, TrainedWeights, DirectLightGBM | None]:
    """Fit the LightGBM partner, train the LSTM (Ray Train: `dataset.train_forecaster`, `run_options` are its),
    choose and calibrate the served forecast on the CALIB windows, and put the LSTM's refitted weights in service.

    Where the partner chose a recency half-life, the LSTM's Ray Train run trains a second time with each epoch's
    sample drawn by it, which serves only with a lower CALIB MAE (`TrainedWeights.half_life_steps` says which did).
    Returns the forecaster, the run's weights and the partner refitted on the whole training part (None where the
    training part is too short for one).

    Raises:
        TrainingDiverged: the LSTM's best CALIB error is not a number.
    """
    partner = fit_partner(prepared, model_config.seed)
    half_life = partner.spec.half_life_steps if partner is not None else None
    forecaster, weights = train_forecaster(prepared, model_config, half_life=half_life, **run_options)
    if not math.isfinite(weights.best_val_mae_watts):
        raise TrainingDiverged(f"the LSTM's validation error is not a number: {DIVERGED}")
    gbm = None
    if partner is not None:
        gbm = _choose(forecaster, prepared, partner, coverage=model_config.interval_coverage,
                      tolerance=model_config.confidence_tolerance)
    if weights.refit_state_dict is not None:
        forecaster.use_weights(weights.refit_state_dict)
    return forecaster, weights, gbm


def _choose(forecaster: PowerForecaster, prepared: PreparedData, partner: DirectLightGBM, *, coverage: float,
            tolerance: float) -> DirectLightGBM:
    """Set the served forecast chosen on the CALIB windows and the partner, refitted on the whole training part, on
    `forecaster` (the online blend follows both, whichever serves first); returns the refitted partner. The CALIB
    windows are let go before the refit builds its own (on a large training part they are the memory peak)."""
    calib = prepared.windows(Role.CALIB)
    lstm = forecaster.raw_quantiles(calib.inputs, calib.last_power)
    forecaster.served = choose_served(lstm, partner.predict(calib), calib.targets, calib.mask,
                                      time_halves(calib.segment_index, calib.origin_index), coverage=coverage,
                                      tolerance=tolerance)
    del calib, lstm
    gbm = _refit(partner, prepared)
    forecaster.gbm = gbm  # kept even where the LSTM serves alone: the online blend follows both
    return gbm


def _fit_gbm(prepared: PreparedData, fit: Windows, calib: Windows, seed: int) -> DirectLightGBM:
    """The GBM, of one fitted per candidate half-life (training.power.recency), with the lowest CALIB MAE; the
    unweighted one, tried first, wins a tie (and is the only one without CALIB points to judge on). Only the best
    so far is kept, so at most two boosters are held at a time."""
    ages = window_ages(prepared, fit)

    def fitted(half_life: float | None) -> DirectLightGBM:
        return DirectLightGBM(seed=seed).fit(fit, calib, prepared.pipeline.power_std, prepared.pipeline, ages=ages,
                                             half_life=half_life)

    def calib_mae(gbm: DirectLightGBM) -> float:
        return point_metrics(gbm.predict(calib), calib.targets, calib.mask)["mae"]

    unweighted, *weighted = candidate_half_lives(prepared) if calib.points else [None]
    best = fitted(unweighted)
    best_mae = calib_mae(best) if weighted else 0.0
    for half_life in weighted:
        challenger = fitted(half_life)
        challenger_mae = calib_mae(challenger)
        if challenger_mae < best_mae:
            best, best_mae = challenger, challenger_mae
    return best


def _refit(gbm: DirectLightGBM, prepared: PreparedData) -> DirectLightGBM:
    windows = prepared.training_windows()
    return gbm.refit(windows, window_ages(prepared, windows))
