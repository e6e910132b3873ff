"""Summaries of a backtest suite: per case mean +- spread over seeds, targets, the aggregate, a table.

Spread is the sample standard deviation over the seeds (0 for one seed). A case's ratio is the mean
MAE of a method over the mean MAE of the best baseline (the baseline with the lowest mean MAE).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.durations import format_duration
from training.backtest import FORECASTERS, OWN

SUMMARY_KEYS = ("mae", "rmse", "mape", "coverage", "mean_interval_width", "mean_confidence", "hit_rate")
SERVED_TARGET = 0.9  # served MAE <= this x the best baseline's
COVERAGE_BAND = (0.75, 0.85)  # of the nominal 80 % interval
CONFIDENCE_GAP = 0.05  # |mean confidence - hit rate|


def mean_spread(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=float)
    spread = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return {"mean": round(float(array.mean()), 4), "spread": round(spread, 4),
            "min": round(float(array.min()), 4), "max": round(float(array.max()), 4)}


def summarize_case(name: str, source: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One case at one horizon over its seeds; `runs` are the single-trace reports, kept whole."""
    methods = [m for m in runs[0]["metrics"] if all(m in run["metrics"] for run in runs)]
    summary = {method: {key: mean_spread([run["metrics"][method][key] for run in runs])
                        for key in SUMMARY_KEYS if key in runs[0]["metrics"][method]} for method in methods}
    baselines = {m: summary[m]["mae"]["mean"] for m in methods if m not in OWN}
    best = min(baselines, key=baselines.__getitem__)
    ratios = {m: round(summary[m]["mae"]["mean"] / baselines[best], 4) for m in FORECASTERS}
    served = summary["served"]
    targets = {
        "served_mae_le_0.9x_best_baseline": ratios["served"] <= SERVED_TARGET,
        "lstm_mae_le_best_baseline": ratios["lstm"] <= 1.0,
        "served_coverage_in_75_85": COVERAGE_BAND[0] <= served["coverage"]["mean"] <= COVERAGE_BAND[1],
        "served_confidence_within_0.05": abs(served["mean_confidence"]["mean"] - served["hit_rate"]["mean"])
        <= CONFIDENCE_GAP,
    }
    return {
        "case": name,
        "source": source,
        "step_seconds": runs[0]["step_seconds"],
        "horizon_seconds": runs[0]["step_seconds"] * runs[0]["horizon_steps"],
        "seeds": [run["model"].get("seed") for run in runs],
        "summary": summary,
        "best_baseline": best,
        "mae_ratio_to_best_baseline": ratios,
        "served_methods": [run["served"]["method"] for run in runs],
        "targets": targets,
        "runs": runs,
    }


def aggregate(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method: median and worst (highest) ratio to the best baseline over all cases, and where the worst is."""
    result: dict[str, Any] = {}
    for method in FORECASTERS:
        ratios = [case["mae_ratio_to_best_baseline"][method] for case in cases]
        worst = int(np.argmax(ratios))
        result[method] = {"median_ratio": round(float(np.median(ratios)), 4), "worst_ratio": ratios[worst],
                          "worst_case": _label(cases[worst])}
    result["targets_met"] = {key: sum(case["targets"][key] for case in cases) for key in cases[0]["targets"]}
    result["cases"] = len(cases)
    return result


def _label(case: dict[str, Any]) -> str:
    return f"{case['case']} @ {format_duration(case['horizon_seconds'])}"


def _pm(stats: dict[str, float], digits: int = 2) -> str:
    return f"{stats['mean']:.{digits}f} ± {stats['spread']:.{digits}f}"


def table(cases: list[dict[str, Any]], totals: dict[str, Any]) -> str:
    """A Markdown table: one row per case and horizon, then the aggregate."""
    lines = [
        "| case | step | horizon | served MAE (W) | served as | LSTM MAE (W) | best baseline MAE (W) "
        "| served / best | LSTM / best | served coverage | confidence vs hit rate | targets met |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        summary, ratios = case["summary"], case["mae_ratio_to_best_baseline"]
        best = case["best_baseline"]
        served = summary["served"]
        methods = sorted(set(case["served_methods"]))
        met = sum(case["targets"].values())
        lines.append(
            f"| {case['case']} | {format_duration(case['step_seconds'])} | {format_duration(case['horizon_seconds'])} "
            f"| {_pm(served['mae'])} | {'/'.join(methods)} | {_pm(summary['lstm']['mae'])} "
            f"| {best} {_pm(summary[best]['mae'])} | {ratios['served']:.2f} | {ratios['lstm']:.2f} "
            f"| {served['coverage']['mean']:.1%} | {served['mean_confidence']['mean']:.3f} vs "
            f"{served['hit_rate']['mean']:.3f} | {met}/{len(case['targets'])} |")
    lines.append("")
    for method in FORECASTERS:
        row = totals[method]
        lines.append(f"{method}: MAE / best baseline median {row['median_ratio']:.2f}, worst {row['worst_ratio']:.2f} "
                     f"({row['worst_case']})")
    met = ", ".join(f"{key} {count}/{totals['cases']}" for key, count in totals["targets_met"].items())
    lines.append(f"targets met: {met}")
    return "\n".join(lines)
