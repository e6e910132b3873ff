"""Backtest picture: actual power vs the forecast made one horizon earlier, with its interval."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.durations import format_duration
from core.plotting import pyplot
from training.power.calibration import CalibratedForecast
from training.power.dataset import PreparedData
from training.power.windows import Windows


def plot_backtest(path: Path, prepared: PreparedData, test: Windows, served: CalibratedForecast,
                  forecasts: dict[str, np.ndarray], mask: np.ndarray, method: str = "lstm") -> None:
    """Draw the series with the most test points, at the longest lead, into a PNG at `path`: the served
    forecast (`method` says what it is) with its interval, the LSTM alone, last value and LightGBM."""
    lead = test.targets.shape[1] - 1
    counts = {node: int(mask[test.node_ids == node, lead].sum()) for node in set(test.node_ids)}
    node = max(counts, key=counts.__getitem__)
    rows = np.flatnonzero((test.node_ids == node) & mask[:, lead])
    segment_of = test.segment_index[rows]
    times = [prepared.segments[s].times[o + lead + 1] for s, o in zip(segment_of, test.origin_index[rows], strict=True)]
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(11, 4.5))
    axes.fill_between(times, served.lower[rows, lead], served.upper[rows, lead], color="tab:blue", alpha=0.2,
                      label=f"served interval ({format_duration(prepared.pipeline.step_s * (lead + 1))} ahead)")
    axes.plot(times, test.targets[rows, lead], color="black", linewidth=1.2, label="actual")
    axes.plot(times, served.point[rows, lead], color="tab:blue", label=f"served ({method})")
    for name, style in (("lstm", "-."), ("last_value", ":"), ("lightgbm", "--")):
        axes.plot(times, forecasts[name][rows, lead], linestyle=style, linewidth=1, label=name)
    axes.set_title(f"{node}: test part, forecast made {lead + 1} steps earlier")
    axes.set_ylabel("power (W)")
    axes.legend(loc="best", fontsize=8)
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=110)
    plt.close(figure)
