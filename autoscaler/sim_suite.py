"""Run a simulation suite: every case of a suite file under each of its demand transforms and actuation delays.

    python -m autoscaler.simulate --suite configs/suite.simulate.yaml --data-root DIR --output suite.json

Per case and seed one forecaster is trained on the first part of every series (autoscaler.sim_forecast), for
the longest risk window the case's delays need; every transform and delay then replays the test part three
ways (autoscaler.sim_report), with the suite's policy planning for that delay. The result keeps every replay's
full single-trace report (its `steps` included), with its case, transform and ratios, and an aggregate over
them (autoscaler.sim_suite_report).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from autoscaler.schema import ScalingPolicy
from autoscaler.sim_forecast import ReplayData, prepare_replay, train_for_replay
from autoscaler.sim_report import planned, replay, settings, window_steps
from autoscaler.sim_suite_config import SimCase, SimSuite
from autoscaler.sim_suite_report import aggregate, summarize
from autoscaler.trace_replay import DemandModel, with_known_idle, with_margin
from core.settings import ConfigError, format_errors
from training.backtest import TrainOptions
from training.power.windows import NotEnoughData
from training.settings import PowerPredictorConfig, TrainingConfig
from training.suite import case_frame, check_trace


def case_model(base: TrainingConfig, suite: SimSuite, case: SimCase, seed: int) -> PowerPredictorConfig:
    """The service's power model settings with the suite's, then the case's overrides, and the seed."""
    data = base.models.power_predictor.model_dump()
    data.update(seed=seed, **suite.knobs())
    data.update(case.knobs())
    try:
        return PowerPredictorConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(f"suite case {case.name}", exc)) from exc


def _policies(policy: ScalingPolicy, case: SimCase, delays: tuple[int, ...], margin: float) -> dict[int, ScalingPolicy]:
    """The policy as it plans for each delay; ConfigError when the margin leaves no scale-out threshold."""
    try:
        with_margin(policy, margin)
    except ValueError as exc:
        raise ConfigError(f"suite margin ({case.name}): {exc}") from None
    return {delay: planned(policy, delay, case.step) for delay in delays}


def run_sim_suite(suite: SimSuite, suite_file: Path, *, policy: ScalingPolicy, base: TrainingConfig,
                  data_root: str | None, options: TrainOptions, log: Callable[[str], None],
                  progress: Callable[[dict[str, Any]], None] | None = None,
                  train: Callable[..., ReplayData] = train_for_replay) -> dict[str, Any]:
    """Every case, seed, transform and delay under `policy` (the suite's); returns the suite result (cases,
    aggregate, complete).

    `progress` gets the result so far (`complete` false) after every case and seed, so a long run that is
    stopped keeps what it measured. `train` has `train_for_replay`'s signature (tests pass a stand-in).
    """
    policy_file = suite.policy_file(suite_file)
    root = suite.trace_root(suite_file, data_root)
    results: list[dict[str, Any]] = []
    for case in suite.cases:  # every case's file and settings, before hours of training
        check_trace(case, root)
        case_model(base, suite, case, suite.seeds[0])
        _policies(policy, case, case.delays(suite.actuation_delays), suite.margin)
    for case in suite.cases:  # and its data
        try:
            prepare_replay(case_frame(case, root)[0], case_model(base, suite, case, suite.seeds[0]),
                           **_replay_shape(base, suite, policy, case))
        except NotEnoughData as exc:
            raise ConfigError(f"suite case {case.name} (its step, sequence_length and train_fraction): {exc}") from exc
    for case in suite.cases:
        frame, source = case_frame(case, root)
        policies = _policies(policy, case, case.delays(suite.actuation_delays), suite.margin)
        shape = _replay_shape(base, suite, policy, case)
        train_fraction, split = shape["train_fraction"], shape["split"]
        for seed in suite.seeds:
            log(f"simulate suite: {case.name} seed {seed}: training for {shape['horizon']} steps ahead")
            started = time.monotonic()
            model_config = case_model(base, suite, case, seed)
            try:
                data = train(frame, model_config, **shape, options=options)
            except NotEnoughData as exc:
                raise ConfigError(f"suite case {case.name} (seed {seed}; its step, sequence_length and "
                                  f"train_fraction): {exc}") from exc
            trained_s = time.monotonic() - started  # each replay's elapsed time: this training and its own run
            for transform in case.transforms:
                demand = DemandModel(transform.idle_watts, transform.demand_scale, transform.demand_offset)
                for delay, delayed_policy in policies.items():
                    planned_policy = with_known_idle(delayed_policy, demand, suite.margin)
                    replay_started = time.monotonic()
                    report = replay(data, planned_policy, demand, step_s=case.step, actuation_delay_s=delay,
                                    margin=suite.margin)
                    steps = report.pop("steps")
                    report["settings"] = settings(
                        data, planned_policy, demand, trace=source, policy_file=str(policy_file), step_s=case.step,
                        actuation_delay_s=delay, train_fraction=train_fraction, split=split, margin=suite.margin,
                        sequence_length=model_config.sequence_length, epochs=model_config.epochs)
                    report["steps"] = steps
                    report["elapsed_seconds"] = round(trained_s + time.monotonic() - replay_started, 1)
                    results.append(summarize(case.name, transform.name, seed, report))
            if progress is not None:
                progress(_result(suite, suite_file, results, complete=False))
    return _result(suite, suite_file, results, complete=True)


def _replay_shape(base: TrainingConfig, suite: SimSuite, policy: ScalingPolicy, case: SimCase) -> dict[str, Any]:
    """How a case's series are prepared for its replays: `prepare_replay`'s and `train_for_replay`'s keywords."""
    policies = _policies(policy, case, case.delays(suite.actuation_delays), suite.margin)
    return {"step_s": case.step,
            "max_gap_s": case.max_gap if case.max_gap is not None else base.predictor.max_gap_at(case.step),
            "features": base.features,
            "horizon": max(window_steps(p, case.step, delay) for delay, p in policies.items()),
            "train_fraction": case.train_fraction or suite.train_fraction, "split": case.split or suite.split}


def _result(suite: SimSuite, suite_file: Path, cases: list[dict[str, Any]], *, complete: bool) -> dict[str, Any]:
    return {"suite": str(suite_file), "seeds": list(suite.seeds), "complete": complete, "cases": cases,
            "aggregate": aggregate(cases)}
