"""Replay telemetry as one workload's demand and compare the predictive policy with the reactive one.

    python -m autoscaler.simulate --trace FILE.csv --policy POLICY.yaml [--step 10min] [--idle-watts W]
        [--demand-scale K] [--demand-offset W0] [--actuation-delay STEP] [--train-fraction 0.8]
        [--margin 10] --output report.json [--plot P.png]
    python -m autoscaler.simulate --suite SUITE.yaml [--data-root DIR] --output suite.json

The forecaster trains on the first `--train-fraction` of every series exactly as the backtest does (the served
forecast, horizon = the policy's risk window rounded up to whole steps); the rest of every series is replayed
step by step through the controller's own `decide()`: with the policy as given ("predictive"), with predictive
scaling off ("reactive"), and reactive with both thresholds lowered by `--margin` percentage points
("reactive_margin", the fixed safety margin a forecast has to beat). Series are simulated separately and
their metrics summed (autoscaler.trace_replay). A policy that sets no `actuation_delay` plans with
`--actuation-delay` (a whole number of steps, since a replayed change lands on a step; default one step). The
second form runs every case of a suite file (autoscaler.sim_suite), prints a table and writes per-case reports with
an aggregate.
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

from autoscaler.schema import ScalingPolicy, policy_context
from autoscaler.sim_forecast import train_for_replay
from autoscaler.sim_report import RUNS, planned, replay, settings, window_steps
from autoscaler.sim_suite import run_sim_suite
from autoscaler.sim_suite_config import load_sim_suite
from autoscaler.sim_suite_report import table
from autoscaler.trace_replay import DemandModel, delay_problem, with_known_idle, with_margin
from core.atomic_files import atomic_write_with
from core.settings import ConfigError, format_errors, read_yaml_mapping
from core.telemetry_csv import load_telemetry_csv
from training.backtest import TrainOptions
from training.cli import (
    add_model_flags,
    duration_arg,
    fraction_arg,
    given,
    load_with_overrides,
    output_path,
    plot_path,
    refuse_overwriting_inputs,
    run_cli,
)
from training.power.windows import SPLITS

SINGLE_DEFAULTS = {"idle_watts": 100.0, "demand_scale": 1.0, "demand_offset": 0.0, "train_fraction": 0.8,
                   "split": "series", "margin": 10.0, "step": 600}  # and --actuation-delay: one step


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
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--trace", help="canonical telemetry CSV replayed as demand")
    source.add_argument("--suite", help="suite YAML: many traces, demands and delays (see autoscaler.sim_suite)")
    parser.add_argument("--data-root", help="with --suite: folder the cases' trace paths are relative to")
    parser.add_argument("--policy", help="scaling policy YAML (see configs/policy.example.yaml); with --trace")
    parser.add_argument("--idle-watts", type=_watts, help="idle draw of each replica's node (W, default 100)")
    parser.add_argument("--demand-scale", type=lambda t: _watts(t, positive=True),
                        help="K: dynamic power = K * max(trace power - W0, 0) (default 1)")
    parser.add_argument("--demand-offset", type=_watts, help="W0 subtracted from the trace (W, default 0)")
    parser.add_argument("--actuation-delay", type=duration_arg,
                        help="time before a replica change takes effect, a multiple of --step (default one step)")
    parser.add_argument("--train-fraction", type=fraction_arg,
                        help="share of every series (--split time: of all steps) that trains (default 0.8)")
    parser.add_argument("--split", choices=SPLITS,
                        help="series (default): the last share of every series is replayed; time: one cut in time "
                             "for all series, so no series recorded later trains the forecaster of an earlier one")
    parser.add_argument("--margin", type=_watts,
                        help="percentage points taken off both thresholds for the reactive_margin run (default 10)")
    parser.add_argument("--output", required=True, type=output_path, help="report JSON path")
    parser.add_argument("--plot", type=plot_path,
                        help="PNG of demand, replicas and per-node power against the budget")
    add_model_flags(parser)
    args = parser.parse_args(argv)
    refuse_overwriting_inputs(parser, args)
    single_only = ["policy", "plot", "actuation_delay", "seed", *SINGLE_DEFAULTS]  # a suite sets these itself
    if args.suite:
        clashing = given(args, [f"--{name.replace('_', '-')}" for name in single_only])
        if clashing:
            parser.error(f"{', '.join(clashing)}: not with --suite (the suite file sets them per case)")
        return args
    if args.data_root:
        parser.error("--data-root: only with --suite")
    if args.policy is None:
        parser.error("--policy: required with --trace")
    for name, value in SINGLE_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.actuation_delay is None:
        args.actuation_delay = args.step
    if problem := delay_problem(args.step, args.actuation_delay):
        parser.error(f"--actuation-delay: {problem} (--step {args.step} s)")
    return args


def load_policy(path: str | Path, label: str = "--policy") -> ScalingPolicy:
    """A ScalingPolicy from YAML; errors name the file and the field."""
    data = read_yaml_mapping(Path(path), label=f"{label} {path}", what="policy file")
    try:
        return ScalingPolicy.model_validate(data, context=policy_context(new=True))
    except ValidationError as exc:
        raise ConfigError(" ".join(format_errors(f"{label} {path}", exc).splitlines())) from None


def run_simulation(args: argparse.Namespace) -> dict[str, Any]:
    """Train the forecaster, replay the three runs; returns the report (its "steps" list every replayed step)."""
    started = time.monotonic()
    policy = planned(load_policy(args.policy), args.actuation_delay, args.step)
    try:
        with_margin(policy, args.margin)
    except ValueError as exc:
        raise ConfigError(f"--margin: {exc}") from None
    model = DemandModel(args.idle_watts, args.demand_scale, args.demand_offset)
    policy = with_known_idle(policy, model, args.margin)
    # Step and horizon go straight to training: the config's own (max_gap >= step) must not veto --step.
    config = load_with_overrides(argparse.Namespace(**{**vars(args), "step": None}))
    model_config = config.models.power_predictor
    data = train_for_replay(load_telemetry_csv(args.trace), model_config, step_s=args.step,
                            max_gap_s=config.predictor.max_gap_at(args.step), features=config.features,
                            horizon=window_steps(policy, args.step, args.actuation_delay),
                            train_fraction=args.train_fraction,
                            options=TrainOptions.from_flags(args), split=args.split)
    report = replay(data, policy, model, step_s=args.step, actuation_delay_s=args.actuation_delay, margin=args.margin)
    steps = report.pop("steps")
    report["settings"] = settings(data, policy, model, trace=str(args.trace), policy_file=str(args.policy),
                                  step_s=args.step, actuation_delay_s=args.actuation_delay,
                                  train_fraction=args.train_fraction, margin=args.margin,
                                  sequence_length=model_config.sequence_length, epochs=model_config.epochs,
                                  split=args.split)
    report["steps"] = steps
    report["elapsed_seconds"] = round(time.monotonic() - started, 1)
    return report


def _single(args: argparse.Namespace) -> int:
    from autoscaler.sim_plot import plot_simulation

    report = run_simulation(args)
    text = json.dumps(report, indent=1)
    if args.plot:
        policy = report["settings"]["policy"]
        atomic_write_with(Path(args.plot), lambda tmp: plot_simulation(tmp, report["steps"], policy, args.step))
    atomic_write_with(Path(args.output), lambda tmp: tmp.write_text(text))
    summary = "; ".join(f"{name}: {report[name]['budget_violation_seconds']:.0f} s over budget, "
                        f"{report[name]['replica_hours']:.1f} replica-h, {report[name]['scale_events']} "
                        f"scale events" for name in RUNS)
    sys.stderr.write(f"simulate: {summary}; report in {args.output}\n")
    return 0


def _suite(args: argparse.Namespace) -> int:
    suite_file = Path(args.suite)
    suite = load_sim_suite(suite_file)
    policy = load_policy(suite.policy_file(suite_file), label=f"{suite_file}: policy")
    base = load_with_overrides(argparse.Namespace(**{**vars(args), "step": None}))

    def write(result: dict[str, Any]) -> None:
        text = json.dumps(result, indent=1)
        atomic_write_with(Path(args.output), lambda tmp: tmp.write_text(text))

    result = run_sim_suite(suite, suite_file, policy=policy, base=base, data_root=args.data_root,
                           options=TrainOptions.from_flags(args), log=lambda line: sys.stderr.write(line + "\n"),
                           progress=write)
    write(result)
    sys.stdout.write(table(result["cases"], result["aggregate"]) + "\n")
    sys.stderr.write(f"simulate: {len(result['cases'])} suite runs; results in {args.output}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_cli("simulate", lambda: _suite(args) if args.suite else _single(args))


if __name__ == "__main__":
    raise SystemExit(main())
