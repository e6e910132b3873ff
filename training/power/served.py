"""Give a trained forecaster its served forecast: fit the LightGBM partner, choose and calibrate the blend.

Everything is fitted on the training part: the GBM on the FIT windows (early-stopped on CALIB), the
choice and the calibration on the CALIB windows (training.power.blend). The test part is never seen. A training
part too short to fit and judge a GBM on leaves the LSTM served alone (`serve_best`).
"""

from __future__ import annotations

from training.power.blend import choose_served, time_halves
from training.power.dataset import PreparedData
from training.power.forecaster import PowerForecaster
from training.power.gbm import DirectLightGBM
from training.power.windows import Role, Windows

MIN_GBM_WINDOWS = 30
"""The fewest FIT and CALIB windows each on which a LightGBM partner is fitted and the blend chosen."""


def fit_gbm(prepared: PreparedData, seed: int) -> DirectLightGBM:
    """The direct LightGBM on the FIT windows, early-stopped on the CALIB windows."""
    return _fit_gbm(prepared, prepared.windows(Role.FIT), prepared.windows(Role.CALIB), seed)


def serve_best(forecaster: PowerForecaster, prepared: PreparedData, *, coverage: float, tolerance: float,
               seed: int) -> DirectLightGBM | None:
    """Fit the LightGBM partner, choose the served forecast on the CALIB windows and set it (and the GBM when the
    choice uses it) on `forecaster`; returns the fitted partner. With fewer than `MIN_GBM_WINDOWS` FIT or CALIB
    windows nothing is fitted (None) and the LSTM is served alone. Each role's windows are built once (on a large
    training part they are the memory peak)."""
    fit, calib = prepared.windows(Role.FIT), prepared.windows(Role.CALIB)
    if min(len(fit), len(calib)) < MIN_GBM_WINDOWS:
        return None
    gbm = _fit_gbm(prepared, fit, calib, seed)
    lstm = forecaster.raw_quantiles(calib.inputs, calib.last_power)
    blend = choose_served(lstm, gbm.predict(calib), calib.targets, calib.mask,
                          time_halves(calib.segment_index, calib.origin_index), coverage=coverage,
                          tolerance=tolerance)
    forecaster.served = blend
    forecaster.gbm = gbm if blend.needs_gbm else None
    return gbm


def _fit_gbm(prepared: PreparedData, fit: Windows, calib: Windows, seed: int) -> DirectLightGBM:
    return DirectLightGBM(seed=seed).fit(fit, calib, prepared.pipeline.power_std, prepared.pipeline)
