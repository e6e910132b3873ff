"""A stand-in for the Ray Train step of the power forecaster: an untrained PowerLSTM, no Ray.

`untrained(units)` returns a `train_power_lstm` replacement whose model's median is off by `units` power-scale
units: 0 gives (nearly) the last-value forecast, a large shift a clearly worse one; a recency-weighted challenger is
never kept. Patch it over
`training.power.dataset.train_power_lstm`; windows, calibration, scoring and the registry stay real.
`serve_lstm_alone(monkeypatch)` keeps retrain_power from blending in the LightGBM, so a version's quality is its
shift's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from training.power.fit import SupervisedArrays, build_model
from training.power.ray_trainer import TrainedWeights
from training.settings import PowerPredictorConfig


def untrained(units: float, refit_units: float | None = None) -> Callable[..., TrainedWeights]:
    """`refit_units`: the shift of the refit's weights, when the caller asks for a refit (else the same as `units`)."""
    def train(train_arrays: SupervisedArrays, val_arrays: SupervisedArrays, model_config: PowerPredictorConfig,
              power_std: float, **options: Any) -> TrainedWeights:
        def shifted(by: float) -> dict[str, torch.Tensor]:
            torch.manual_seed(model_config.seed)
            model = build_model(train_arrays.inputs.shape[2], train_arrays.targets.shape[1], model_config.hidden_size,
                                model_config.num_layers, model_config.dropout, options.get("target_calendar", ()),
                                model_config.relative_power)
            with torch.no_grad():
                model.head[-1].bias.view(-1, 3)[:, 1] += by
            return model.state_dict()

        refit = bool(options.get("refit"))
        refit_state = shifted(units if refit_units is None else refit_units) if refit else None
        scaling = options["scaling"]
        return TrainedWeights(state_dict=shifted(units), best_epoch=1, epochs_run=1, best_val_mae_watts=0.0,
                              duration_s=0.0, num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
                              relative_power=model_config.relative_power,
                              refit_state_dict=refit_state, refit_epochs=1 if refit else 0)

    return train


def serve_lstm_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retrained versions serve their LSTM alone (no LightGBM partner fitted, no blend chosen)."""
    monkeypatch.setattr("training.power.served.fit_partner", lambda *_args, **_kwargs: None)
