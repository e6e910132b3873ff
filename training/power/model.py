"""PowerLSTM: a multi-feature LSTM that forecasts every lead time at once (direct multi-step).

It predicts the *change* from the last observed power, in units of the training power scale, as three
quantiles per lead (lower, median, upper). Predicting the change makes "no change" (the last-value
forecast, a strong baseline for power) the model's starting point; the final layer starts near zero.
The lower and upper quantiles are the median minus/plus a softplus, so they never cross. Pure torch.
"""

from __future__ import annotations

import torch
from torch import nn


class PowerLSTM(nn.Module):
    """LSTM encoder over the input window, MLP head to [horizon, 3] quantile changes.

    Args:
        n_features: input features per step (FeaturePipeline.feature_names).
        hidden_size: LSTM hidden units.
        num_layers: stacked LSTM layers.
        horizon: lead times predicted (steps).
        dropout: dropout between LSTM layers and in the head.
    """

    def __init__(self, n_features: int, hidden_size: int, num_layers: int, horizon: int, dropout: float = 0.0):
        super().__init__()
        self.horizon = horizon
        self.encoder = nn.LSTM(
            input_size=n_features,
            hidden_size=hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.head = nn.Sequential(
            nn.Linear(hidden_size + n_features, hidden_size),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, horizon * 3),
        )
        nn.init.normal_(self.head[-1].weight, std=1e-3)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs [B, T, F] -> quantile changes [B, H, 3] ordered (lower, median, upper)."""
        encoded, _ = self.encoder(inputs)  # [B, T, hidden]
        summary = torch.cat([encoded[:, -1, :], inputs[:, -1, :]], dim=1)  # [B, hidden + F]
        raw = self.head(summary).view(-1, self.horizon, 3)  # [B, H, 3]
        median = raw[..., 1]
        lower = median - nn.functional.softplus(raw[..., 0])
        upper = median + nn.functional.softplus(raw[..., 2])
        return torch.stack([lower, median, upper], dim=-1)


def quantile_loss(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                  quantiles: tuple[float, float, float]) -> torch.Tensor:
    """Mean pinball loss over scored (window, lead) pairs.

    predicted [B, H, 3]; target [B, H] (any value where unscored); mask [B, H] bool.
    """
    levels = torch.tensor(quantiles, dtype=predicted.dtype, device=predicted.device)
    error = torch.nan_to_num(target).unsqueeze(-1) - predicted  # [B, H, 3]
    pinball = torch.maximum(levels * error, (levels - 1.0) * error).sum(dim=-1)  # [B, H]
    weights = mask.to(predicted.dtype)
    return (pinball * weights).sum() / weights.sum().clamp(min=1.0)
