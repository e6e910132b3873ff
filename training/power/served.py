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
from training.power.windows import Role

MIN_GBM_WINDOWS = 30
"""The fewest FIT and CALIB windows each on which a LightGBM partner is fitted and the blend chosen."""


def fit_gbm(prepared: PreparedData, seed: int) -> DirectLightGBM:
    """The direct LightGBM on the FIT windows, early-stopped on the CALIB windows."""
    return DirectLightGBM(seed=seed).fit(prepared.windows(Role.FIT), prepared.windows(Role.CALIB),
                                         prepared.pipeline.power_std, prepared.pipeline)


def attach_served(forecaster: PowerForecaster, prepared: PreparedData, *, coverage: float, tolerance: float,
                  gbm: DirectLightGBM) -> PowerForecaster:
    """Choose the served forecast on the CALIB windows and set it (and the GBM when it is used) on `forecaster`."""
    calib = prepared.windows(Role.CALIB)
    lstm = forecaster.raw_quantiles(calib.inputs, calib.last_power)
    blend = choose_served(lstm, gbm.predict(calib), calib.targets, calib.mask,
                          time_halves(calib.segment_index, calib.origin_index), coverage=coverage,
                          tolerance=tolerance)
    forecaster.served = blend
    forecaster.gbm = gbm if blend.needs_gbm else None
    return forecaster


def serve_best(forecaster: PowerForecaster, prepared: PreparedData, *, coverage: float, tolerance: float,
               seed: int) -> PowerForecaster:
    """`attach_served` with a GBM fitted here; the LSTM alone when the training part has too few windows."""
    if min(len(prepared.windows(Role.FIT)), len(prepared.windows(Role.CALIB))) < MIN_GBM_WINDOWS:
        return forecaster
    return attach_served(forecaster, prepared, coverage=coverage, tolerance=tolerance, gbm=fit_gbm(prepared, seed))
