"""Summaries of a backtest suite: per case mean +- spread over seeds, targets, the aggregate, a table.

Spread is the sample standard deviation over the seeds (0 for one seed). A case's ratio is the mean
MAE of a method over the mean MAE of the best baseline (the baseline with the lowest mean MAE); None where that
MAE is 0. The coverage target is the nominal coverage +- 5 points.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.durations import format_duration
from training.backtest import FORECASTERS, OWN
from training.metrics import COVERAGE_TOLERANCE
from training.power.windows import describe_splits

SUMMARY_KEYS = ("mae", "rmse", "mape", "coverage", "mean_interval_width", "mean_confidence", "hit_rate")
SERVED_TARGET = 0.9  # served MAE <= this x the best baseline's
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
    mae = {m: summary[m]["mae"]["mean"] for m in FORECASTERS}
    ratios = {m: round(mae[m] / baselines[best], 4) if baselines[best] > 0 else None for m in FORECASTERS}
    served = summary["served"]
    nominal = runs[0]["metrics"]["served"].get("nominal_coverage", 0.8)
    band = (round(nominal - COVERAGE_TOLERANCE, 4), round(nominal + COVERAGE_TOLERANCE, 4))
    targets = {  # the keys name the default 80 % interval's band; `coverage_band` is the one applied
        "served_mae_le_0.9x_best_baseline": mae["served"] <= SERVED_TARGET * baselines[best],
        "lstm_mae_le_best_baseline": mae["lstm"] <= baselines[best],
        "served_coverage_in_75_85": band[0] <= served["coverage"]["mean"] <= band[1],
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
        "mae_ratio_to_best_baseline": ratios,  # None where the best baseline's MAE is 0 (a flat trace)
        "coverage_band": band,
        "served_methods": [run["served"]["method"] for run in runs],
        "targets": targets,
        "runs": runs,
    }


def aggregate(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method: median and worst (highest) ratio to the best baseline over every case, and where the worst is. A
    case whose best baseline's MAE is 0 (a flat trace; `zero_baseline` counts them) ranks as 1 where the method's MAE
    is 0 too, else as unbounded, as the simulation aggregate ranks a ratio over a run that scored 0: a median or worst
    that is unbounded is null, with `median_unbounded` / `worst_unbounded` true."""
    result: dict[str, Any] = {}
    for method in FORECASTERS:
        values = [_ranked_ratio(case, method) for case in cases]
        worst = int(np.argmax(values))
        median = float(np.median(values))
        result[method] = {"median_ratio": round(median, 4) if np.isfinite(median) else None,
                          "median_unbounded": not np.isfinite(median),
                          "worst_ratio": values[worst] if np.isfinite(values[worst]) else None,
                          "worst_unbounded": not np.isfinite(values[worst]), "worst_case": _label(cases[worst]),
                          "zero_baseline": sum(case["mae_ratio_to_best_baseline"][method] is None for case in cases)}
    result["targets_met"] = {key: sum(case["targets"][key] for case in cases) for key in cases[0]["targets"]}
    result["cases"] = len(cases)
    return result


def _ranked_ratio(case: dict[str, Any], method: str) -> float:
    ratio = case["mae_ratio_to_best_baseline"][method]
    if ratio is not None:
        return ratio
    return 1.0 if case["summary"][method]["mae"]["mean"] == 0 else np.inf  # over a best baseline MAE of 0


def _label(case: dict[str, Any]) -> str:
    return f"{case['case']} @ {format_duration(case['horizon_seconds'])}"


def _bound(row: dict[str, Any], which: str) -> str:
    return "unbounded (above a baseline MAE of 0)" if row[f"{which}_unbounded"] else _ratio(row[f"{which}_ratio"])


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


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
            f"| {best} {_pm(summary[best]['mae'])} | {_ratio(ratios['served'])} | {_ratio(ratios['lstm'])} "
            f"| {served['coverage']['mean']:.1%} | {served['mean_confidence']['mean']:.3f} vs "
            f"{served['hit_rate']['mean']:.3f} | {met}/{len(case['targets'])} |")
    lines.append("")
    for method in FORECASTERS:
        row = totals[method]
        lines.append(f"{method}: MAE / best baseline median {_bound(row, 'median')}, worst {_bound(row, 'worst')} "
                     f"({row['worst_case']})" + (f"; {row['zero_baseline']} case(s) with a best baseline MAE of 0 "
                                                 "(ranked 1 where the method's is 0 too, else unbounded)"
                                                 if row["zero_baseline"] else ""))
    met = ", ".join(f"{key} {count}/{totals['cases']}" for key, count in totals["targets_met"].items())
    lines.append(f"targets met: {met}")
    lines.append(describe_splits((case["case"], case["runs"][0]["data"]["split"]) for case in cases))
    return "\n".join(lines)
