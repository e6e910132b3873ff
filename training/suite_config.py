"""The backtest suite file: which traces, at which step and horizons, over which seeds.

    data_root: ../data            # optional; relative to this file; `--data-root` overrides it
    seeds: [0, 1, 2]              # training seeds of every case (results are mean +- spread over them)
    train_fraction: 0.8
    learning_rate: 0.01           # optional model overrides for every case (a case's own win): sequence_length,
                                  # epochs, hidden_size, learning_rate, relative_power,
                                  # power_input_challenger
    cases:
      - name: upm_workloads
        trace: upm_servers_workloads_1s/canonical.csv   # relative to the data root
        step: 1min
        horizons: [30min, 1h]
        sequence_length: 60       # optional overrides: the model's (as above) and max_gap
      - name: spikes
        synthetic: recurring_spikes                     # training.synthetic_patterns
        days: 42
        step: 10min
        horizons: [1h]

A relative `trace` with no data root is read relative to the suite file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, model_validator

from core.settings import ConfigError, Duration, format_errors, read_yaml_mapping
from training.synthetic_patterns import Pattern

SuiteModel = TypeVar("SuiteModel", bound=BaseModel)


class ModelKnobs(BaseModel):
    """Power forecaster settings that replace the service config's (None keeps it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sequence_length: PositiveInt | None = None
    epochs: PositiveInt | None = None
    hidden_size: PositiveInt | None = None
    learning_rate: PositiveFloat | None = None
    relative_power: bool | None = None
    power_input_challenger: bool | None = None

    def knobs(self) -> dict[str, int | float | bool]:
        return self.model_dump(include=set(ModelKnobs.model_fields), exclude_none=True)


class SuiteCase(ModelKnobs):
    """One trace (a CSV or a synthetic pattern) at one step, backtested at every listed horizon."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    trace: str | None = None
    synthetic: Pattern | None = None
    days: PositiveInt = 42  # synthetic only
    data_seed: int = Field(0, ge=0)  # synthetic only: the trace's own seed (the training seeds vary apart)
    step: Duration
    horizons: tuple[Duration, ...] = Field(min_length=1)
    max_gap: Duration | None = None  # default: the config's, at least one step
    train_fraction: float | None = Field(None, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _one_source(self) -> SuiteCase:
        if (self.trace is None) == (self.synthetic is None):
            raise ValueError("give exactly one of trace (a CSV) or synthetic (a pattern)")
        for horizon in self.horizons:
            if horizon % self.step or horizon < self.step:
                raise ValueError(f"horizon {horizon}s is not a whole multiple of step {self.step}s")
        return self


class Suite(ModelKnobs):
    """The suite file: where the traces are, the seeds, defaults for every case, and the cases."""

    data_root: str | None = None
    seeds: tuple[int, ...] = Field((0, 1, 2), min_length=1)
    train_fraction: float = Field(0.8, gt=0.0, lt=1.0)
    cases: tuple[SuiteCase, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Suite:
        check_unique_names(case.name for case in self.cases)
        return self


def check_unique_names(names: Iterable[str]) -> None:
    """A suite's case names, each once (ValueError naming the repeated ones)."""
    names = list(names)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"case names must be unique; repeated: {repeated}")


def load_suite_file(path: str | Path, model: type[SuiteModel], what: str = "suite file") -> SuiteModel:
    """Read and validate a suite file as `model`; ConfigError names the file, the key and the reason."""
    path = Path(path)
    data = read_yaml_mapping(path, what=what)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(str(path), exc)) from exc


def load_suite(path: str | Path) -> Suite:
    """Read and validate a backtest suite file."""
    return load_suite_file(path, Suite)


def trace_path(case: SuiteCase, suite_file: Path, suite: Suite, data_root: str | None) -> Path:
    """Where a case's CSV is: under `--data-root`, else the suite's `data_root` (relative to the suite file),
    else relative to the suite file."""
    if case.trace is None:
        raise ValueError(f"case {case.name} is synthetic: it has no trace file")
    if data_root is not None:
        root = Path(data_root)
    elif suite.data_root is not None:
        root = suite_file.parent / suite.data_root
    else:
        root = suite_file.parent
    return root / case.trace
