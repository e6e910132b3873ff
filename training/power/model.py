"""PowerLSTM: a multi-feature LSTM that forecasts every lead time at once (direct multi-step).

It predicts the *change* from the last observed power, in units of the training power scale, as three
quantiles per lead (lower, median, upper). Predicting the change makes "no change" (the last-value
forecast, a strong baseline for power) the model's starting point; the final layer starts near zero.
The lower and upper quantiles are the median minus/plus a softplus, so they never cross.

Where the inputs carry calendar cycles (`target_calendar`), a second, per-lead head also reads the calendar
position of each lead's *target* time (the origin's, rotated by the lead), so a spike that recurs at a time of
day is anticipated by every lead from the same weights instead of each lead learning the rotation on its own.
Models saved before it have no `target_calendar` and keep their layout.

With `relative_power` the power input (feature column 0, FeaturePipeline's "power") is read relative to the window's
last value, so the forecast does not depend on the absolute level: a server whose level moves (a new week, a new
regime) looks like one the model has seen. It is opt-in (`models.power_predictor.relative_power`); docs/results.md
has where it helps and where it hurts. Pure torch.
"""

from __future__ import annotations

import torch
from torch import nn

TargetCalendar = tuple[tuple[int, int, float], ...]
"""Per calendar cycle: the (sin, cos) input columns of the origin's position and the cycle's radians per step."""


class PowerLSTM(nn.Module):
    """LSTM encoder over the input window, MLP head to [horizon, 3] quantile changes.

    Args:
        n_features: input features per step (FeaturePipeline.feature_names).
        hidden_size: LSTM hidden units.
        num_layers: stacked LSTM layers.
        horizon: lead times predicted (steps).
        dropout: dropout between LSTM layers and in the head.
        target_calendar: the calendar inputs the per-lead head rotates to each target time; () for none.
        relative_power: read the power input (column 0) relative to the window's last value.
    """

    def __init__(self, n_features: int, hidden_size: int, num_layers: int, horizon: int, dropout: float = 0.0,
                 target_calendar: TargetCalendar = (), relative_power: bool = False):
        super().__init__()
        self.horizon = horizon
        self.relative_power = relative_power
        self.target_calendar = tuple(target_calendar)
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
        if self.target_calendar:
            self._add_lead_head(n_features, hidden_size)

    def _add_lead_head(self, n_features: int, hidden_size: int) -> None:
        leads = torch.arange(1, self.horizon + 1, dtype=torch.float32)
        angles = torch.stack([leads * radians for _, _, radians in self.target_calendar], dim=1)  # [H, C]
        self.register_buffer("lead_angles", angles)
        self.register_buffer("lead_onehot", torch.eye(self.horizon))
        self.lead_context = nn.Linear(hidden_size + n_features, hidden_size)
        width = hidden_size + 2 * len(self.target_calendar) + self.horizon
        self.lead_head = nn.Sequential(nn.Linear(width, hidden_size // 2), nn.GELU(), nn.Linear(hidden_size // 2, 3))
        nn.init.normal_(self.lead_head[-1].weight, std=1e-3)
        nn.init.zeros_(self.lead_head[-1].bias)

    def target_positions(self, last: torch.Tensor) -> torch.Tensor:
        """[B, H, 2C]: each lead's target time as (sin, cos) per calendar cycle, from the origin's inputs [B, F]."""
        positions = []
        for cycle, (sin_at, cos_at, _) in enumerate(self.target_calendar):
            sin, cos = last[:, sin_at:sin_at + 1], last[:, cos_at:cos_at + 1]  # [B, 1]
            angle = self.lead_angles[:, cycle][None, :]  # [1, H]
            positions += [sin * torch.cos(angle) + cos * torch.sin(angle),  # the target time: a rotation
                          cos * torch.cos(angle) - sin * torch.sin(angle)]
        return torch.stack(positions, dim=-1)

    def _per_lead(self, summary: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """[B, H, 3] from the summary, each lead's target-time calendar and the lead itself."""
        context = torch.relu(self.lead_context(summary))[:, None, :].expand(-1, self.horizon, -1)
        leads = self.lead_onehot.expand(summary.shape[0], -1, -1)
        return self.lead_head(torch.cat([context, self.target_positions(last), leads], dim=-1))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs [B, T, F] -> quantile changes [B, H, 3] ordered (lower, median, upper)."""
        if self.relative_power:
            inputs = torch.cat([inputs[:, :, :1] - inputs[:, -1:, :1], inputs[:, :, 1:]], dim=2)
        encoded, _ = self.encoder(inputs)  # [B, T, hidden]
        summary = torch.cat([encoded[:, -1, :], inputs[:, -1, :]], dim=1)  # [B, hidden + F]
        raw = self.head(summary).view(-1, self.horizon, 3)  # [B, H, 3]
        if self.target_calendar:
            raw = raw + self._per_lead(summary, inputs[:, -1, :])
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
