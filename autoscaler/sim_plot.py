"""The simulator's plot: demand, replicas and per-node power against the budget for the three runs."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from autoscaler.sim_report import RUNS
from core.plotting import pyplot


def series_starts(replayed: list[dict[str, Any]], step_s: int) -> list[int]:
    """The steps where a replayed series starts after the first: another node's, or the same node's after a gap (its
    test part is replayed segment by segment, each right after the one before on the plot's axis)."""
    times = [datetime.fromisoformat(step["time"]) for step in replayed]
    return [i for i in range(1, len(replayed)) if replayed[i]["series"] != replayed[i - 1]["series"]
            or (times[i] - times[i - 1]).total_seconds() != step_s]


def plot_simulation(path: Path, replayed: list[dict[str, Any]], policy: dict[str, Any], step_s: int) -> None:
    """Demand, replicas and per-node power against the budget for both runs, series one after another."""
    plt = pyplot()
    hours = [i * step_s / 3600 for i in range(len(replayed))]
    budget = policy["power_based"]["max_power_budget"]
    threshold = budget * policy["power_based"]["scale_out_threshold"] / 100
    figure, (demand, replicas, power) = plt.subplots(3, 1, figsize=(12, 8), sharex=True)
    demand.plot(hours, [s["demand_watts"] for s in replayed], color="black", linewidth=1)
    demand.set_ylabel("demand (W)")
    for name, color in zip(RUNS, ("tab:blue", "tab:orange", "tab:green"), strict=True):
        replicas.step(hours, [s[name]["replicas"] for s in replayed], where="post", color=color, label=name)
        power.plot(hours, [s[name]["per_node_watts"] for s in replayed], color=color, linewidth=1, label=name)
    power.axhline(budget, color="red", linestyle="--", label="budget")
    power.axhline(threshold, color="grey", linestyle=":", label="scale-out threshold")
    for axes in (demand, replicas, power):
        for i in series_starts(replayed, step_s):
            axes.axvline(hours[i], color="lightgrey", linewidth=0.8)
    replicas.set_ylabel("replicas")
    power.set_ylabel("per-node power (W)")
    power.set_xlabel("replayed hours (test parts of all series, one after another)")
    replicas.legend(loc="upper left", fontsize=8)
    power.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    plt.close(figure)
