"""Replay a telemetry trace as one workload's demand and compare the predictive policy with the reactive one.

    python -m autoscaler.simulate --trace FILE.csv --policy POLICY.yaml [--step 10min] [--idle-watts W]
        [--demand-scale K] [--demand-offset W0] [--actuation-delay 5min] [--train-fraction 0.8]
        [--margin 10] --output report.json [--plot P.png]

The forecaster trains on the first `--train-fraction` of every series exactly as the backtest does
(horizon = the policy's look-ahead rounded up to whole steps); the rest of every series is replayed step
by step through the controller's own `decide()`: with the policy as given ("predictive"), with predictive
scaling off ("reactive"), and reactive with both thresholds lowered by `--margin` percentage points
("reactive_margin", the fixed safety margin a forecast has to beat). Series are simulated separately and
their metrics summed (autoscaler.trace_replay).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from autoscaler.schema import ScalingPolicy
from autoscaler.trace_replay import (
    DemandModel,
    RunMetrics,
    horizon_steps,
    reactive,
    simulate_series,
    with_margin,
)
from core.plotting import pyplot
from core.settings import ConfigError, format_errors, read_yaml_mapping
from core.telemetry_csv import load_telemetry_csv
from training.cli import add_model_flags, duration_arg, fraction_arg, load_with_overrides, run_cli, write_atomically
from training.power.dataset import prepare, train_forecaster
from training.power.windows import Role

RUNS = ("predictive", "reactive", "reactive_margin")


def _watts(text: str, *, positive: bool = False) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number {'>' if positive else '>='} 0")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m autoscaler.simulate", description=__doc__.split("\n")[0])
    parser.add_argument("--trace", required=True, help="canonical telemetry CSV replayed as demand")
    parser.add_argument("--policy", required=True, help="scaling policy YAML (see configs/policy.example.yaml)")
    parser.add_argument("--idle-watts", type=_watts, default=100.0, help="idle draw of each replica's node (W)")
    parser.add_argument("--demand-scale", type=lambda t: _watts(t, positive=True), default=1.0,
                        help="K: dynamic power = K * max(trace power - W0, 0)")
    parser.add_argument("--demand-offset", type=_watts, default=0.0, help="W0 subtracted from the trace (W)")
    parser.add_argument("--actuation-delay", type=duration_arg, default=300,
                        help="time before a replica change takes effect (default 5min)")
    parser.add_argument("--train-fraction", type=fraction_arg, default=0.8, help="share of every series that trains")
    parser.add_argument("--margin", type=_watts, default=10.0,
                        help="percentage points taken off both thresholds for the reactive_margin run (default 10)")
    parser.add_argument("--output", required=True, help="report JSON path")
    parser.add_argument("--plot", help="PNG of demand, replicas and per-node power against the budget")
    add_model_flags(parser)
    parser.set_defaults(step=600)
    return parser.parse_args(argv)


def load_policy(path: str) -> ScalingPolicy:
    """A ScalingPolicy from YAML; errors name the file and the field."""
    data = read_yaml_mapping(Path(path), label=f"--policy {path}", what="policy file")
    try:
        return ScalingPolicy.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(" ".join(format_errors(f"--policy {path}", exc).splitlines())) from None


def run_simulation(args: argparse.Namespace) -> dict[str, Any]:
    """Train the forecaster, replay both runs; returns the report (its "steps" list every replayed step)."""
    started = time.monotonic()
    policy = load_policy(args.policy)
    try:
        margined = with_margin(policy, args.margin)
    except ValueError as exc:
        raise ConfigError(f"--margin: {exc}") from None
    model = DemandModel(args.idle_watts, args.demand_scale, args.demand_offset)
    step_s = args.step
    horizon = horizon_steps(policy.predictive_scaling.lookahead_minutes, step_s)
    # Step and horizon go straight to prepare(): the config's own (max_gap >= step) must not veto --step.
    config = load_with_overrides(argparse.Namespace(**{**vars(args), "step": None}))
    model_config = config.models.power_predictor
    frame = load_telemetry_csv(args.trace)
    prepared = prepare(frame, step_s=step_s, max_gap_s=max(config.predictor.max_gap, step_s), features=config.features,
                       sequence_length=model_config.sequence_length, horizon=horizon,
                       train_fraction=args.train_fraction)
    test = prepared.windows(Role.TEST)
    if len(test) == 0:
        raise ValueError("--train-fraction: no test part left to replay (series too short for the sequence length)")
    forecaster, weights = train_forecaster(prepared, model_config, num_workers=args.num_workers,
                                           use_gpu=args.use_gpu, cpus_per_worker=args.cpus_per_worker,
                                           verbose=not args.quiet)
    calibrated = forecaster.forecast(test.inputs, test.last_power)
    row_of = {(int(s), int(o)): n for n, (s, o) in enumerate(zip(test.segment_index, test.origin_index,
                                                                      strict=True))}
    totals = {name: RunMetrics() for name in RUNS}
    replayed: list[dict[str, Any]] = []
    for index, (segment, roles) in enumerate(zip(prepared.segments, prepared.roles, strict=True)):
        positions = [int(p) for p in (roles == Role.TEST).nonzero()[0]]
        if not positions:
            continue
        first = positions[0]
        times = [t.to_pydatetime() for t in segment.times[first:]]
        watts = [float(w) for w in segment.power[first:]]

        def forecast(i: int, index: int = index, first: int = first):
            row = row_of.get((index, first + i))
            return None if row is None else (calibrated.point[row], calibrated.upper[row])

        runs = {"predictive": simulate_series(policy, model, times, watts, step_s=step_s,
                                              actuation_delay_s=args.actuation_delay, forecast=forecast,
                                              coverage=forecaster.calibration.coverage),
                "reactive": simulate_series(reactive(policy), model, times, watts, step_s=step_s,
                                            actuation_delay_s=args.actuation_delay),
                "reactive_margin": simulate_series(margined, model, times, watts, step_s=step_s,
                                                   actuation_delay_s=args.actuation_delay)}
        for name, run in runs.items():
            totals[name] = totals[name].add(run.metrics)
        for i, (when, w) in enumerate(zip(times, watts, strict=True)):
            replayed.append({"series": segment.node_id, "time": when.isoformat(), "trace_watts": round(w, 3),
                             "demand_watts": round(model.dynamic(w), 3),
                             **{name: vars(runs[name].steps[i]) for name in RUNS}})
    report: dict[str, Any] = {name: totals[name].report() for name in RUNS}
    report["settings"] = {
        "trace": str(args.trace), "policy_file": str(args.policy), "policy": policy.model_dump(mode="json"),
        "step_seconds": step_s, "idle_watts": args.idle_watts, "demand_scale": args.demand_scale,
        "demand_offset": args.demand_offset, "actuation_delay_seconds": args.actuation_delay,
        "train_fraction": args.train_fraction, "horizon_steps": horizon, "margin_points": args.margin,
        "sequence_length": model_config.sequence_length, "epochs": model_config.epochs,
        "interval_coverage": forecaster.calibration.coverage,
        "model": {"best_epoch": weights.best_epoch, "epochs_run": weights.epochs_run,
                  "train_seconds": round(weights.duration_s, 1), "seed": model_config.seed},
    }
    report["steps"] = replayed
    report["elapsed_seconds"] = round(time.monotonic() - started, 1)
    return report


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
        for i in range(1, len(replayed)):
            if replayed[i]["series"] != replayed[i - 1]["series"]:
                axes.axvline(hours[i], color="lightgrey", linewidth=0.8)
    replicas.set_ylabel("replicas")
    power.set_ylabel("per-node power (W)")
    power.set_xlabel("replayed hours (test parts of all series, one after another)")
    replicas.legend(loc="upper left", fontsize=8)
    power.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        report = run_simulation(args)
        text = json.dumps(report, indent=1)
        if args.plot:
            policy = report["settings"]["policy"]
            write_atomically(Path(args.plot), lambda tmp: plot_simulation(tmp, report["steps"], policy, args.step))
        write_atomically(Path(args.output), lambda tmp: tmp.write_text(text))
        summary = "; ".join(f"{name}: {report[name]['budget_violation_seconds']:.0f} s over budget, "
                            f"{report[name]['replica_hours']:.1f} replica-h, {report[name]['scale_events']} "
                            f"scale events" for name in RUNS)
        sys.stderr.write(f"simulate: {summary}; report in {args.output}\n")
        return 0

    return run_cli("simulate", body)


if __name__ == "__main__":
    raise SystemExit(main())
