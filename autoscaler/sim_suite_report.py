"""Summaries of a simulation suite: per replay the ratios of predictive to reactive and to reactive + margin and the
targets (issue 11), the aggregate over the replays where reactive scaling violates the budget, and a table.

A ratio is predictive / other for one metric; None when the other run's value is 0 (and 1.0 when both are). In the
aggregate such a replay (predictive above a run that scored 0) counts as an unbounded ratio: it is the worst, and it
moves the median, rather than being left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.durations import format_duration
from training.power.windows import describe_splits

METRICS = ("budget_violation_seconds", "replica_hours", "scale_events")
SHORT = {"budget_violation_seconds": "violation", "replica_hours": "replica-h", "scale_events": "events"}
VIOLATION_TARGET = 0.5  # predictive <= this x reactive violation time
REPLICA_HOURS_TARGET = 1.1
EVENTS_TARGET = 0.5


def ratio(value: float, other: float) -> float | None:
    if other == 0:
        return 1.0 if value == 0 else None
    return value / other


def _rounded(ratios: dict[str, float | None]) -> dict[str, float | None]:
    """For the report; the targets are checked on the ratios before rounding (1.10004 is above 1.1)."""
    return {metric: None if value is None else round(value, 4) for metric, value in ratios.items()}


def _within(value: float, reference: float, limit: float) -> bool:
    """Whether `value` <= `limit` x `reference` (0 <= 0.5 x 0 holds: a ratio of two zeros reads 1.0, never within
    0.5); the ratio is compared rounded (1.1099 / 1.009 is 1.1000000000000003: within)."""
    if reference == 0:
        return value == 0
    return round(value / reference, 9) <= limit


def summarize(case: str, transform: str, seed: int, report: dict[str, Any]) -> dict[str, Any]:
    """One replay: its identity, ratios, targets (None where reactive does not violate) and the full report."""
    predictive, reactive, margin = report["predictive"], report["reactive"], report["reactive_margin"]
    exact = {"vs_reactive": {m: ratio(predictive[m], reactive[m]) for m in METRICS},
             "vs_reactive_margin": {m: ratio(predictive[m], margin[m]) for m in METRICS}}
    violates = reactive["budget_violation_seconds"] > 0
    targets = None
    if violates:
        def within(metric: str, limit: float) -> bool:
            return _within(predictive[metric], reactive[metric], limit)

        targets = {
            "violation_le_0.5x_reactive": within("budget_violation_seconds", VIOLATION_TARGET),
            "replica_hours_le_1.1x_reactive": within("replica_hours", REPLICA_HOURS_TARGET),
            "scale_events_le_0.5x_reactive": within("scale_events", EVENTS_TARGET),
            "beats_reactive_margin": predictive["budget_violation_seconds"] <= margin["budget_violation_seconds"]
            and (predictive["replica_hours"] < margin["replica_hours"]
                 or predictive["scale_events"] < margin["scale_events"]),
        }
    settings = report["settings"]
    return {"case": case, "transform": transform, "seed": seed, "step_seconds": settings["step_seconds"],
            "actuation_delay_seconds": settings["actuation_delay_seconds"], "reactive_violates": violates,
            "predictive_violates": predictive["budget_violation_seconds"] > 0,
            "ratios": {versus: _rounded(values) for versus, values in exact.items()}, "targets": targets,
            "report": report}


def label(entry: dict[str, Any]) -> str:
    return (f"{entry['case']}/{entry['transform']} delay {format_duration(entry['actuation_delay_seconds'])} "
            f"seed {entry['seed']}")


def aggregate(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Over the replays where reactive violates: per comparison and metric the median and worst (highest) ratio and
    where the worst is, and how many replays meet each target. A ratio over a run that scored 0 (`undefined`) is
    unbounded: a median or worst that is one is null, with `median_unbounded` / `worst_unbounded` true."""
    scored = [e for e in entries if e["reactive_violates"]]
    only_predictive = [label(e) for e in entries if e["predictive_violates"] and not e["reactive_violates"]]
    result: dict[str, Any] = {"replays": len(entries), "replays_where_reactive_violates": len(scored),
                              "replays_where_only_predictive_violates": len(only_predictive),
                              "only_predictive_violates": only_predictive}
    for versus in ("vs_reactive", "vs_reactive_margin"):
        result[versus] = {}
        for metric in METRICS:
            pairs = [(e["ratios"][versus][metric], e) for e in scored]
            if not pairs:
                result[versus][metric] = None
                continue
            values = [np.inf if r is None else r for r, _ in pairs]
            worst = int(np.argmax(values))
            median = float(np.median(values))
            result[versus][metric] = {
                "median_ratio": round(median, 4) if np.isfinite(median) else None,
                "median_unbounded": not np.isfinite(median),
                "worst_ratio": pairs[worst][0], "worst_unbounded": pairs[worst][0] is None,
                "worst_case": label(pairs[worst][1]),
                "undefined": sum(r is None for r, _ in pairs)}
    keys = scored[0]["targets"] if scored else {}
    result["targets_met"] = {key: sum(bool(e["targets"][key]) for e in scored) for key in keys}
    return result


def _run(run: dict[str, Any]) -> str:
    return f"{run['budget_violation_seconds']:,.0f} s / {run['replica_hours']:.1f} / {run['scale_events']}"


def _bound(row: dict[str, Any], which: str) -> str:
    return "unbounded (above 0)" if row[f"{which}_unbounded"] else f"{row[f'{which}_ratio']:.2f}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def table(entries: list[dict[str, Any]], totals: dict[str, Any]) -> str:
    """A Markdown table: one row per replay (violation / replica-hours / events per run, ratios, targets), then the
    aggregate."""
    lines = [
        "| case | demand | step | delay | reactive | reactive + margin | predictive | P/R violation | P/R replica-h "
        "| P/R events | targets met |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in entries:
        report, vs = entry["report"], entry["ratios"]["vs_reactive"]
        met = "—" if entry["targets"] is None else f"{sum(entry['targets'].values())}/{len(entry['targets'])}"
        lines.append(
            f"| {entry['case']} | {entry['transform']} | {format_duration(entry['step_seconds'])} "
            f"| {format_duration(entry['actuation_delay_seconds'])} | {_run(report['reactive'])} "
            f"| {_run(report['reactive_margin'])} | {_run(report['predictive'])} "
            f"| {_ratio(vs['budget_violation_seconds'])} | {_ratio(vs['replica_hours'])} "
            f"| {_ratio(vs['scale_events'])} | {met} |")
    lines.append("")
    lines.append(f"runs: violation s / replica-hours / scale events. Aggregate over the "
                 f"{totals['replays_where_reactive_violates']} of {totals['replays']} replays where reactive violates:")
    for versus, name in (("vs_reactive", "reactive"), ("vs_reactive_margin", "reactive + margin")):
        for metric in METRICS:
            row = totals[versus][metric]
            if row is not None:
                lines.append(f"- predictive / {name} {SHORT[metric]}: median {_bound(row, 'median')}, worst "
                             f"{_bound(row, 'worst')} ({row['worst_case']})"
                             + (f", above a run of 0 on {row['undefined']}" if row["undefined"] else ""))
    met = ", ".join(f"{key} {count}/{totals['replays_where_reactive_violates']}"
                    for key, count in totals["targets_met"].items())
    lines.append(f"targets met: {met}")
    lines.append(describe_splits((entry["case"], entry["report"]["settings"]["split"]) for entry in entries))
    if totals["only_predictive_violates"]:
        lines.append("over the budget in predictive only (left out of the ratios above): "
                     + ", ".join(totals["only_predictive_violates"]))
    return "\n".join(lines)
