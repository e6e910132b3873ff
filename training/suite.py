"""Run a backtest suite: every case of a suite file, at each of its horizons, once per seed.

    python -m training.evaluate --suite configs/suite.backtest.yaml --data-root DIR --output suite.json

Each run is the single-trace backtest (training.backtest) with the case's step, horizon and overrides
applied to the service config; the result keeps every run's full report, adds per case the mean +-
spread over the seeds and the targets, and an aggregate over the cases (training.suite_report).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from core.durations import format_duration
from core.settings import ConfigError, format_errors
from core.telemetry_csv import TelemetryDataError, load_telemetry_csv, validate_telemetry
from training.backtest import TrainOptions, backtest, prepare_training
from training.power.windows import NotEnoughData
from training.settings import TrainingConfig
from training.suite_config import Suite, SuiteCase, TraceCase
from training.suite_report import aggregate, summarize_case
from training.synthetic_patterns import generate_pattern


def case_config(base: TrainingConfig, suite: Suite, case: SuiteCase, horizon_s: int, seed: int) -> TrainingConfig:
    """The service config with a case's step, horizon, the suite's and then the case's overrides, and the seed;
    ConfigError if they do not fit."""
    data = base.model_dump()
    predictor, model = data["predictor"], data["models"]["power_predictor"]
    predictor.update(step=case.step, prediction_horizon=horizon_s,
                     max_gap=case.max_gap if case.max_gap is not None else base.predictor.max_gap_at(case.step))
    model.update(seed=seed, **suite.knobs())
    model.update(case.knobs())
    try:
        return TrainingConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(f"suite case {case.name}", exc)) from exc


def check_trace(case: TraceCase, root: Path) -> None:
    """ConfigError when a case's CSV is not there or not valid telemetry (checked for every case before the first
    one trains: a bad line in the fifth case's file stopped the run after hours of training)."""
    if case.trace is None:
        return
    if not case.trace_file(root).is_file():
        raise ConfigError(f"suite case {case.name}: trace {case.trace!r} not found under the data root ({root}); "
                          f"check --data-root")
    try:
        load_telemetry_csv(case.trace_file(root))
    except TelemetryDataError as exc:
        raise ConfigError(f"suite case {case.name}: {exc}") from exc


def case_frame(case: TraceCase, root: Path) -> tuple[pd.DataFrame, str]:
    """A case's validated telemetry, and where it came from (`root`: SuiteFile.trace_root)."""
    if case.synthetic is not None:
        frame = generate_pattern(case.synthetic, days=case.days, step_s=case.step, seed=case.data_seed)
        return validate_telemetry(frame), f"synthetic:{case.synthetic} ({case.days} d, seed {case.data_seed})"
    path = case.trace_file(root)
    return load_telemetry_csv(path), str(path)


def run_suite(suite: Suite, suite_file: Path, *, base: TrainingConfig, data_root: str | None,
              options: TrainOptions, log: Callable[[str], None],
              progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Every case, horizon and seed; returns the suite result (cases, aggregate, complete). ConfigError, before
    anything trains, when a case's trace is missing, or its settings or its data do not fit.

    `progress` gets the result so far (`complete` false) after every case and horizon, so a long run
    that is stopped keeps what it measured.
    """
    cases: list[dict[str, Any]] = []
    root = suite.trace_root(suite_file, data_root)
    for case in suite.cases:  # every case's file, settings and data, before hours of training
        check_trace(case, root)
        for horizon in case.horizons:
            case_config(base, suite, case, horizon, suite.seeds[0])
    for case in suite.cases:
        frame, _ = case_frame(case, root)
        for horizon in case.horizons:
            try:
                prepare_training(frame, case_config(base, suite, case, horizon, suite.seeds[0]),
                                 train_fraction=case.train_fraction or suite.train_fraction,
                                 split=case.split or suite.split)
            except NotEnoughData as exc:
                raise ConfigError(f"suite case {case.name} (horizon {format_duration(horizon)}; its step, "
                                  f"sequence_length and train_fraction): {exc}") from exc
    for case in suite.cases:
        frame, source = case_frame(case, root)
        train_fraction, split = case.train_fraction or suite.train_fraction, case.split or suite.split
        for horizon in case.horizons:
            runs = []
            for seed in suite.seeds:
                log(f"suite: {case.name} step {format_duration(case.step)} horizon {format_duration(horizon)} "
                    f"seed {seed}")
                try:
                    report = backtest(frame, case_config(base, suite, case, horizon, seed),
                                      train_fraction=train_fraction, split=split, options=options)
                except NotEnoughData as exc:
                    raise ConfigError(f"suite case {case.name} (horizon {format_duration(horizon)}, seed {seed}; "
                                      f"its step, sequence_length and train_fraction): {exc}") from exc
                report["data"]["file"] = source
                runs.append(report)
            cases.append(summarize_case(case.name, source, runs))
            if progress is not None:
                progress(_result(suite, suite_file, cases, complete=False))
    return _result(suite, suite_file, cases, complete=True)


def _result(suite: Suite, suite_file: Path, cases: list[dict[str, Any]], *, complete: bool) -> dict[str, Any]:
    return {"suite": str(suite_file), "seeds": list(suite.seeds), "complete": complete, "cases": cases,
            "aggregate": aggregate(cases)}
