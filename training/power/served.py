"""Give a trained forecaster its served forecast: fit the LightGBM partner, choose and calibrate the blend.

Everything is fitted on the training part: the GBM on the FIT windows (early-stopped on CALIB, its recency
weighting chosen there: training.power.recency), the choice and the calibration on the CALIB windows
(training.power.blend), all on forecasts of data neither the GBM nor the LSTM trained on. Both models are then
trained again on FIT and CALIB together, so that the newest part of the training data is in what serves: the GBM
here (`DirectLightGBM.refit`, with the weighting chosen; it is also the backtest's baseline), the LSTM by Ray Train
(`fit.refine`), whose weights `serve_best` puts in service last. The test part is never seen. A training part too
short to fit and judge a GBM on leaves the LSTM served alone (`serve_best`).
"""

from __future__ import annotations

import torch

from training.metrics import point_metrics
from training.power.blend import choose_served, time_halves
from training.power.dataset import PreparedData
from training.power.forecaster import PowerForecaster
from training.power.gbm import DirectLightGBM
from training.power.recency import candidate_half_lives, window_ages
from training.power.windows import Role, Windows

MIN_GBM_WINDOWS = 30
"""The fewest FIT and CALIB windows each on which a LightGBM partner is fitted and the blend chosen."""


def fit_gbm(prepared: PreparedData, seed: int) -> DirectLightGBM:
    """The direct LightGBM early-stopped on the CALIB windows, then refitted on the whole training part."""
    gbm = _fit_gbm(prepared, prepared.windows(Role.FIT), prepared.windows(Role.CALIB), seed)
    return _refit(gbm, prepared)


def serve_best(forecaster: PowerForecaster, prepared: PreparedData, *, coverage: float, tolerance: float,
               seed: int, refitted: dict[str, torch.Tensor] | None = None) -> DirectLightGBM | None:
    """Fit the LightGBM partner, choose the served forecast on the CALIB windows and set it (and the GBM, refitted
    on the whole training part, when the choice uses it) on `forecaster`, then the LSTM's `refitted` weights
    (`TrainedWeights.refit_state_dict`) when given; returns the refitted partner."""
    gbm = _choose(forecaster, prepared, coverage=coverage, tolerance=tolerance, seed=seed)
    if refitted is not None:
        forecaster.use_weights(refitted)
    return gbm


def _choose(forecaster: PowerForecaster, prepared: PreparedData, *, coverage: float, tolerance: float,
            seed: int) -> DirectLightGBM | None:
    """With fewer than `MIN_GBM_WINDOWS` FIT or CALIB windows nothing is fitted (None) and the LSTM is served
    alone. Each role's windows are built once and let go before the refit builds its own (on a large training part
    they are the memory peak)."""
    fit, calib = prepared.windows(Role.FIT), prepared.windows(Role.CALIB)
    if min(len(fit), len(calib)) < MIN_GBM_WINDOWS:
        return None
    gbm = _fit_gbm(prepared, fit, calib, seed)
    del fit
    lstm = forecaster.raw_quantiles(calib.inputs, calib.last_power)
    forecaster.served = choose_served(lstm, gbm.predict(calib), calib.targets, calib.mask,
                                      time_halves(calib.segment_index, calib.origin_index), coverage=coverage,
                                      tolerance=tolerance)
    del calib, lstm
    gbm = _refit(gbm, prepared)
    forecaster.gbm = gbm if forecaster.served.needs_gbm else None
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
