"""A node's idle draw measured from its telemetry: the `power_based.idle_power_watts` to give a scaling policy.

    python -m autoscaler.idle_draw --data FILE.csv [--node ID ...] [--json]
    python -m autoscaler.idle_draw --from-store [--since 14d] [--step 1min] [--node ID ...] [--json]

A node's idle readings are those at which nothing ran on it: its accelerators' utilization (the larger of GPU and
NPU) at most `--max-utilization` percent where it reports one, else its CPU utilization at most
`--max-cpu-utilization`. Its idle draw is their median power. A node that reports no utilization, or has fewer than
`--min-readings` idle ones, has none: its power alone does not say which part of it is idle.

The suggestion for a policy over the nodes measured is the lowest of their idle draws. A scale-out counts one idle
draw for every node; a value above a node's own makes its scale-outs larger than it needs (more replica-hours), one
below makes them a little short (more changes), and the lowest errs that way (docs/results.md, "A wrong idle draw").
"""

from __future__ import annotations

import argparse
import sys
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel

from core.durations import parse_duration
from core.telemetry_csv import load_telemetry_csv
from training.cli import count_in, duration_arg, number_in, read_store, run_cli, store_span
from training.retrain_data import DEFAULT_STORE_SPAN

ACCELERATORS = ("gpu_utilization", "npu_utilization")
Basis = Literal["accelerator", "cpu", "none"]


class NodeIdleDraw(BaseModel):
    """One node's idle draw, or why it has none (`idle_watts` None)."""

    node_id: str
    basis: Basis  # the utilization that told idle readings apart
    readings: int
    idle_readings: int
    idle_watts: float | None
    p10_watts: float | None
    p90_watts: float | None
    median_watts: float  # over all its readings, for comparison


class IdleDrawReport(BaseModel):
    nodes: list[NodeIdleDraw]
    suggested_idle_power_watts: float | None  # the lowest idle draw measured; None when no node has one
    max_utilization: float
    max_cpu_utilization: float
    min_readings: int


def measure(frame: pd.DataFrame, *, max_utilization: float = 1.0, max_cpu_utilization: float = 5.0,
            min_readings: int = 10) -> IdleDrawReport:
    """Every node's idle draw in a canonical telemetry frame (core.telemetry_csv)."""
    nodes = [node_idle_draw(str(node_id), rows, max_utilization, max_cpu_utilization, min_readings)
             for node_id, rows in frame.groupby("node_id", sort=True)]
    measured = [node.idle_watts for node in nodes if node.idle_watts is not None]
    return IdleDrawReport(nodes=nodes, suggested_idle_power_watts=min(measured) if measured else None,
                          max_utilization=max_utilization, max_cpu_utilization=max_cpu_utilization,
                          min_readings=min_readings)


def node_idle_draw(node_id: str, rows: pd.DataFrame, max_utilization: float = 1.0, max_cpu_utilization: float = 5.0,
                   min_readings: int = 10) -> NodeIdleDraw:
    """One node's idle draw from its canonical telemetry rows (see the module docstring)."""
    power = rows["power_watts"].to_numpy(float)
    accelerators = rows[[c for c in ACCELERATORS if c in rows]].to_numpy(float)
    cpu = rows["cpu_utilization"].to_numpy(float) if "cpu_utilization" in rows else np.full(len(rows), np.nan)
    if accelerators.size and not np.isnan(accelerators).all():
        basis: Basis = "accelerator"
        busy = np.nanmax(np.where(np.isnan(accelerators), -np.inf, accelerators), axis=1)
        idle = (busy >= 0) & (busy <= max_utilization)  # a reading without any accelerator value is not idle
    elif not np.isnan(cpu).all():
        basis, idle = "cpu", cpu <= max_cpu_utilization  # NaN compares False
    else:
        basis, idle = "none", np.zeros(len(rows), bool)
    idle_power = power[idle & ~np.isnan(power)]
    enough = len(idle_power) >= min_readings
    return NodeIdleDraw(
        node_id=str(node_id), basis=basis, readings=len(rows), idle_readings=len(idle_power),
        idle_watts=round(float(np.median(idle_power)), 1) if enough else None,
        p10_watts=round(float(np.quantile(idle_power, 0.1)), 1) if enough else None,
        p90_watts=round(float(np.quantile(idle_power, 0.9)), 1) if enough else None,
        median_watts=round(float(np.nanmedian(power)), 1))


def table(report: IdleDrawReport) -> str:
    """The report as text: a row per node, then the suggestion."""
    lines = ["| node | utilization read | readings | idle readings | idle draw (W) | idle p10-p90 (W) | "
             "median of all (W) |", "|---|---|---|---|---|---|---|"]
    for node in report.nodes:
        idle = (f"{node.idle_watts:,.1f}" if node.idle_watts is not None
                else "none: no utilization reported" if node.basis == "none"
                else f"none: fewer than {report.min_readings} idle readings")
        spread = f"{node.p10_watts:,.1f}-{node.p90_watts:,.1f}" if node.idle_watts is not None else "-"
        lines.append(f"| {node.node_id} | {node.basis} | {node.readings:,} | {node.idle_readings:,} | {idle} | "
                     f"{spread} | {node.median_watts:,.1f} |")
    if report.suggested_idle_power_watts is not None:
        lines.append(f"\nsuggested power_based.idle_power_watts: {report.suggested_idle_power_watts:g} "
                     "(the lowest idle draw measured)")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m autoscaler.idle_draw",
                                     description="Measure nodes' idle draw (power with nothing running) "
                                                 "from telemetry.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="canonical telemetry CSV")
    source.add_argument("--from-store", action="store_true", help="read the telemetry store the environment names")
    parser.add_argument("--since", type=duration_arg, help="with --from-store: how much history to read (default 14d)")
    parser.add_argument("--step", type=duration_arg, help="with --from-store: the bin readings are averaged over "
                                                          "(default 1min)")
    parser.add_argument("--node", action="append", help="measure only this node (repeat for more)")
    parser.add_argument("--max-utilization", type=number_in(0.0, 100.0), default=1.0,
                        help="accelerator utilization (%%) at or under which a reading is idle (default 1)")
    parser.add_argument("--max-cpu-utilization", type=number_in(0.0, 100.0), default=5.0,
                        help="CPU utilization (%%) at or under which a reading of a node without accelerators is "
                             "idle (default 5)")
    parser.add_argument("--min-readings", type=count_in(1, 1_000_000), default=10,
                        help="idle readings a node needs for an idle draw (default 10)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    args = parser.parse_args(argv)
    store_span(parser, args)
    if args.step is not None and not args.from_store:
        parser.error("argument --step: applies to --from-store only (a CSV's readings are taken as they are)")
    return args


def _frame(args: argparse.Namespace) -> pd.DataFrame:
    if not args.from_store:
        return load_telemetry_csv(args.data)
    since_s = parse_duration(DEFAULT_STORE_SPAN) if args.since is None else args.since
    return read_store(since_s, args.step or 60, verbose=False, only=args.node)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        frame = _frame(args)
        if args.node:
            if missing := sorted(set(args.node) - set(frame["node_id"].astype(str))):
                raise ValueError(f"--node: no readings of {', '.join(map(repr, missing))} in the telemetry read")
            frame = frame[frame["node_id"].astype(str).isin(args.node)]
        report = measure(frame, max_utilization=args.max_utilization,
                         max_cpu_utilization=args.max_cpu_utilization, min_readings=args.min_readings)
        sys.stdout.write((report.model_dump_json(indent=1) if args.json else table(report)) + "\n")
        if report.suggested_idle_power_watts is None:
            sys.stderr.write("idle_draw: no node has an idle draw: none reports its utilization, or none was idle "
                             f"for {args.min_readings} readings; leave idle_power_watts out (every watt counts as "
                             "load)\n")
            return 2
        return 0

    return run_cli("idle_draw", body)


if __name__ == "__main__":
    raise SystemExit(main())
